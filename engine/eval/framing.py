"""Framing robustness: the validation faces re-cropped the way other collections frame faces.

A model trained on CelebA's aligned 178x218 frame sees every face at one scale and
position. Photos from elsewhere come as tight face chips, loose head-and-shoulders frames,
off-centre or tilted. Each `Framing` moves the training crop window: `scale` > 1 zooms in
(a tighter chip), < 1 zooms out (a looser frame; outside the stored image the edge pixels
repeat, as in training's augmentation), `shift_x`/`shift_y` move it by a fraction of its
width/height, `rotation_deg` turns it about its centre. The warped window is then resized
exactly as evaluation resizes the plain crop, so "clean" reproduces evaluation bit for bit.

The pipeline is pure TensorFlow (no Python callback) and reads every example once, in the
evaluation order, padded and masked like `engine.data.pipeline`'s eval batches.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

from engine.config import InputConfig
from engine.data import decode, schema
from engine.data.pipeline import eval_records, pad_and_mask
from engine.tasks import Task


@dataclasses.dataclass(frozen=True)
class Framing:
  name: str
  scale: float = 1.0
  shift_x: float = 0.0
  shift_y: float = 0.0
  rotation_deg: float = 0.0


# The curve `launch.evaluate --framing=standard` reports: tighter chips and looser frames
# (roughly what face detectors and other datasets produce), shifts of 8% and tilts of 10
# degrees (the training augmentation's own range, at its edge).
STANDARD_FRAMINGS = (
    Framing("clean"),
    Framing("tight_1.15", scale=1.15), Framing("tight_1.3", scale=1.3),
    Framing("loose_0.85", scale=0.85), Framing("loose_0.7", scale=0.7),
    Framing("shift_left", shift_x=-0.08), Framing("shift_right", shift_x=0.08),
    Framing("shift_up", shift_y=-0.08), Framing("shift_down", shift_y=0.08),
    Framing("rotate_-10", rotation_deg=-10.0), Framing("rotate_10", rotation_deg=10.0),
)
FRAMINGS = {f.name: f for f in STANDARD_FRAMINGS}


def parse_framings(names: tuple[str, ...] | list[str]) -> tuple[Framing, ...]:
  """Names -> framings; "standard" expands to the whole curve.

  Raises:
    ValueError: an unknown name (the message lists the known ones).
  """
  framings = []
  for name in names:
    if name == "standard":
      framings.extend(STANDARD_FRAMINGS)
    elif name in FRAMINGS:
      framings.append(FRAMINGS[name])
    else:
      raise ValueError(f"unknown framing {name!r}; known: standard, {', '.join(FRAMINGS)}")
  return tuple(dict.fromkeys(framings))


def window_transform(window, framing: Framing) -> tf.Tensor:
  """The ImageProjectiveTransform row mapping a window-sized output pixel (x, y) to the
  stored image: the crop `window` [top, left, height, width], moved by `framing`."""
  top, left, height, width = (tf.cast(v, tf.float32) for v in tf.unstack(window))
  theta = math.radians(framing.rotation_deg)
  cos, sin = math.cos(theta) / framing.scale, math.sin(theta) / framing.scale
  out_cx, out_cy = (width - 1) / 2, (height - 1) / 2
  in_cx = left + out_cx + framing.shift_x * width
  in_cy = top + out_cy + framing.shift_y * height
  return tf.stack([cos, -sin, in_cx - cos * out_cx + sin * out_cy,
                   sin, cos, in_cy - sin * out_cx - cos * out_cy, 0.0, 0.0])


def framed_window(encoded, crop_box, framing: Framing) -> tf.Tensor:
  """Encoded JPEG -> the training crop window moved by `framing`, at the stored image's
  resolution (uint8): the face as another collection would have photographed it."""
  image = tf.io.decode_jpeg(encoded, channels=3)
  window = decode.crop_window(tf.shape(image), crop_box or (0.0, 0.0, 1.0, 1.0))
  transform = window_transform(window, framing)
  return tf.raw_ops.ImageProjectiveTransformV3(
      images=image[tf.newaxis], transforms=transform[tf.newaxis], output_shape=window[2:],
      fill_value=0.0, interpolation="BILINEAR", fill_mode="NEAREST")[0]


def framed_image(encoded, config: InputConfig, framing: Framing) -> tf.Tensor:
  """Encoded JPEG -> the framed crop at config.image_size, float32 in [0, 255]."""
  warped = framed_window(encoded, config.crop_box, framing)
  resized = tf.image.resize(warped, config.image_size, method="bilinear")
  resized.set_shape([*config.image_size, 3])
  return resized


def framed_dataset(config: InputConfig, manifest: dict, task: Task,
                   framing: Framing) -> tf.data.Dataset:
  """Eval batches (images, labels, mask) of `config.split`, each face framed by `framing`."""
  spec = {schema.IMAGE: tf.io.FixedLenFeature([], tf.string),
          **task.label_features(manifest, config.label_attribute)}
  label_fn = task.label_fn(manifest, config.label_attribute)
  dtype = tf.as_dtype(config.output_dtype)

  def example(serialized):
    features = tf.io.parse_single_example(serialized, spec)
    image = framed_image(features[schema.IMAGE], config, framing)
    return decode.to_output_dtype(image, dtype), label_fn(features)

  ds = eval_records(config, manifest).map(example, num_parallel_calls=tf.data.AUTOTUNE)
  return pad_and_mask(ds, config.global_batch_size).prefetch(tf.data.AUTOTUNE)


def framing_row(framing: Framing, task: Task, labels: np.ndarray, probs: np.ndarray,
                clean_accuracy: float | None) -> dict:
  """One point of the curve: accuracy under `framing` and its drop in points from
  `clean_accuracy` (the clean point's own, when `framing` is the clean one)."""
  known = task.known(labels)
  accuracy = float(task.correct(labels, probs)[known].mean())
  if framing.name == "clean":
    clean_accuracy = accuracy
  return {**dataclasses.asdict(framing), "accuracy": accuracy, "examples": int(known.sum()),
          "drop_points": None if clean_accuracy is None else 100 * (clean_accuracy - accuracy)}
