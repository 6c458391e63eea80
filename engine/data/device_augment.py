"""Augmentation on the device: the host path's ops, inside the compiled train step.

The pipeline then only decodes, crops and batches (no Python in it, so a tf.data service
worker in another process can run it), and ships each batch as `(pixels, params)`: uint8
pixels at the decoded size and the per-image values `augment.augment_params` draws from
the batch's stateless seed, the seed the host path would have used for that batch. The
values are drawn in the trainer's own input pipeline, after the service, not in the
step: XLA's stateless random kernels give other numbers than TensorFlow's for the same
seed. The step calls `augment_on_device` first, which applies them as the host path
does with one difference: the bilinear warp is a gather-based sampler in TensorFlow ops
(XLA compiles it; TensorFlow's ImageProjectiveTransformV3 has no XLA kernel) instead of
OpenCV. Same draws, same magnitudes, same edge fill (the nearest edge pixel repeats),
and a resumed `--deterministic` run stays bit-identical.
"""

from __future__ import annotations

import dataclasses
import logging

import tensorflow as tf

from engine.config import InputConfig
from engine.data import decode
from engine.data.augment import apply_augment

# What `auto` picks without a GPU or a tf.data service, and why. Measured on the 2-core CPU
# (python -m benchmarks.augment_placement, celeba-dev recipe): the two paths train at the
# same speed (device/host 1.009, inside the rounds' spread), the device augmentation being
# 1.8% of a step. A tie keeps the path that leaves the step as it was and compiles nothing
# more at start (XLA compiles the device augmentation once per run).
CPU_SINGLE_PROCESS_CHOICE = "host"
CPU_SINGLE_PROCESS_REASON = (
    "CPU only, one process: host and device measured the same speed here (python -m "
    "benchmarks.augment_placement: device/host 1.009); the host path adds no XLA compile")


def bilinear_warp(images, matrices, output_size):
  """Bilinear warp of `[B, H, W, C]` by output->source pixel maps `[B, 2, 3]`, in float32.

  Source coordinates are clamped into the image before sampling: a pixel mapped outside
  takes the nearest edge pixel, exactly OpenCV's BORDER_REPLICATE (both bilinear
  neighbours clamp to the same edge pixel). Four gathers from the flattened batch; uint8
  pixels are gathered before the cast, so the batch is read as bytes.
  """
  out_h, out_w = output_size
  n, h, w, c = images.shape
  if None in (h, w, c):
    raise ValueError(f"bilinear_warp needs static image sizes, got {images.shape}")
  n = tf.shape(images)[0] if n is None else n
  ys, xs = tf.meshgrid(tf.range(out_h, dtype=tf.float32), tf.range(out_w, dtype=tf.float32),
                       indexing="ij")
  grid = tf.stack([xs, ys, tf.ones_like(xs)], axis=-1)                     # [oh, ow, 3]
  source = tf.einsum("bij,hwj->bhwi", tf.cast(matrices, tf.float32), grid)  # [B, oh, ow, 2]
  x = tf.clip_by_value(source[..., 0], 0.0, float(w - 1))
  y = tf.clip_by_value(source[..., 1], 0.0, float(h - 1))
  x0, y0 = tf.floor(x), tf.floor(y)
  wx, wy = (x - x0)[..., None], (y - y0)[..., None]
  x0, y0 = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
  x1, y1 = tf.minimum(x0 + 1, w - 1), tf.minimum(y0 + 1, h - 1)
  flat = tf.reshape(images, [-1, c])
  base = (tf.range(n) * (h * w))[:, None, None]

  def at(yy, xx):
    return tf.cast(tf.gather(flat, base + yy * w + xx), tf.float32)

  top = at(y0, x0) + wx * (at(y0, x1) - at(y0, x0))
  bottom = at(y1, x0) + wx * (at(y1, x1) - at(y1, x0))
  return top + wy * (bottom - top)


def augment_on_device(inputs, config: InputConfig):
  """(uint8 pixels `[B, h, w, 3]`, their augment_params) -> the model's input `[B, H, W, 3]`.

  The host path's `apply_augment` with the gather warp, then the pipeline's output dtype.
  """
  pixels, params = inputs
  images = apply_augment(pixels, params, config.image_size, warp_fn=bilinear_warp)
  return decode.to_output_dtype(images, tf.as_dtype(config.output_dtype))


def make_device_augment(config: InputConfig):
  """The step's first call when augmentation runs on the device, else None.

  Compiled by XLA on its own, also when the step is not (the CPU default): a gather
  warp fused by XLA costs a third of TensorFlow's op-by-op graph on this CPU.
  """
  if config.augment_on != "device":
    return None
  return tf.function(lambda inputs: augment_on_device(inputs, config), jit_compile=True)


def resolve_augment_on(config: InputConfig) -> InputConfig:
  """`augment_on=auto` made host or device (logged with the reason); others are checked.

  auto: device on a GPU (the step absorbs it) and whenever a tf.data service serves the
  input (a service worker cannot run the host path's Python); otherwise the path that
  measured faster here (CPU_SINGLE_PROCESS_CHOICE).
  """
  choice, why = config.augment_on, "requested"
  if choice == "auto":
    if config.tf_data_service:
      choice, why = "device", "tf.data service: its workers cannot run the host path's Python"
    elif tf.config.list_physical_devices("GPU"):
      choice, why = "device", "GPU: the warp runs inside the compiled step"
    else:
      choice, why = CPU_SINGLE_PROCESS_CHOICE, CPU_SINGLE_PROCESS_REASON
  logging.info("augmentation on the %s (%s)", choice, why)
  return dataclasses.replace(config, augment_on=choice).validate()
