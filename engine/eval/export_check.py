"""Checking an exported artifact against the checkpoint it came from, on real images.

Before an artifact is moved into place, every precision its runtime offers runs the
reference images and its logits are compared with the checkpoint model's (float32,
TensorFlow). The images are real: the run's validation split read by the evaluation
pipeline (the crop, resize and dtype the model was validated with), or image files the
caller names, prepared as `launch.predict` prepares them.

A precision passes when max |logit - reference| <= tolerance * max(1, max |reference|):
relative to the logits' scale, so one rule serves a 2-logit attribute model and a
10,000-way identity model. The tolerances (TOLERANCES) have headroom over what was
measured on the dev run (ResNet18, 112 px, 64 validation faces; see the README):
float32 paths differ from TensorFlow only in summation order; bfloat16 keeps 8 bits of
mantissa in every activation, so its logits move by a few percent of their range.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import tensorflow as tf

from engine.config import ExperimentConfig
from engine.data.decode import crop_and_resize_fn
from engine.data.manifest import read_split_manifest
from engine.data.pipeline import make_dataset
from engine.eval.artifact import PRECISIONS, load_runner
from engine.eval.image_files import expand_inputs, load_image

TOLERANCES = {"float32": 1e-3, "bfloat16": 3e-2}
_BATCH_SIZE = 16


class ExportMismatchError(ValueError):
  """An artifact's logits differ from the checkpoint's by more than the tolerance."""


def reference_images(config: ExperimentConfig, image_files: tuple[str, ...] | None,
                     max_examples: int) -> tuple[np.ndarray, str]:
  """(float32 pixels [N, H, W, 3], where they came from) for the check.

  Args:
    config: the run's configuration (image size, crop, dtype, data_dir).
    image_files: image files or folders; None: the run's validation split.
    max_examples: at most this many images.

  Raises:
    ValueError: no readable image (the message says what to pass instead).
  """
  if image_files:
    return _from_files(config, image_files, max_examples)
  try:
    return _from_validation_split(config, max_examples)
  except (OSError, ValueError) as error:
    raise ValueError(f"cannot read the run's validation split to check the export ({error}); "
                     "give real images to check it on (check_images / --check_images)") from None


def _from_files(config: ExperimentConfig, image_files, max_examples):
  resize = crop_and_resize_fn(tuple(config.input.image_size), config.input.output_dtype,
                      config.input.crop_box)
  images = []
  for path, error in expand_inputs(tuple(image_files)):
    try:
      if error is not None:
        raise ValueError(error)
      images.append(resize(tf.constant(load_image(path))).numpy().astype(np.float32))
    except (OSError, ValueError) as e:  # as predict does: the others still count
      logging.warning("export check: skipping %s", e)
    if len(images) == max_examples:
      break
  if not images:
    raise ValueError(f"no readable image among {', '.join(image_files)}")
  return np.stack(images), f"{len(images)} image files"


def _from_validation_split(config: ExperimentConfig, max_examples):
  split = config.eval_split
  input_config = dataclasses.replace(
      config.input, split=split, global_batch_size=_BATCH_SIZE, training=False, cache="none",
      balance="none", tf_data_service=None)
  read_split_manifest(input_config.data_dir, split)
  images = []
  for batch, _, mask in make_dataset(input_config):
    images.extend(batch.numpy()[mask.numpy() > 0].astype(np.float32))
    if len(images) >= max_examples:
      break
  if not images:
    raise ValueError(f"{input_config.data_dir}/{split} yielded no image")
  return (np.stack(images[:max_examples]),
          f"{min(len(images), max_examples)} images of {input_config.data_dir} ({split})")


def batched_logits(run, pixels: np.ndarray, batch_size: int = _BATCH_SIZE) -> np.ndarray:
  """`run` (pixels -> logits) over `pixels` in batches."""
  return np.concatenate([np.asarray(run(pixels[i:i + batch_size]), np.float32)
                         for i in range(0, len(pixels), batch_size)])


def check_artifact(path: str, format: str, pixels: np.ndarray,  # noqa: A002
                   reference: np.ndarray, tolerances: dict[str, float] | None = None) -> dict:
  """Runs the artifact in each precision its runtime offers; returns what was measured.

  Returns:
    {precision: {"max_abs_logit_difference", "tolerance", "label_agreement"}}.

  Raises:
    ExportMismatchError: a precision is outside its tolerance (names it and by how much).
  """
  tolerances = tolerances or TOLERANCES
  scale = max(1.0, float(np.max(np.abs(reference))))
  results = {}
  for precision in PRECISIONS[format]:
    logits = batched_logits(load_runner(path, format, precision), pixels)
    if logits.shape != reference.shape:
      raise ExportMismatchError(f"{format} ({precision}) returns logits of shape "
                                f"{logits.shape}, the checkpoint {reference.shape}")
    difference = float(np.max(np.abs(logits - reference)))
    allowed = tolerances[precision] * scale
    results[precision] = {"max_abs_logit_difference": float(f"{difference:.3g}"),
                          "tolerance": float(f"{allowed:.3g}"),
                          "label_agreement": _label_agreement(logits, reference)}
    logging.info("export check %s %s: max |logit difference| %.2e (allowed %.2e)", format,
                 precision, difference, allowed)
    if not difference <= allowed:  # NaN fails too
      raise ExportMismatchError(
          f"the {format} export in {precision} differs from the checkpoint by {difference:.3g} "
          f"in the logits on {len(pixels)} images; allowed {allowed:.3g} "
          f"({tolerances[precision]} x the logit scale {scale:.3g}); nothing was written")
  return results


def _label_agreement(logits: np.ndarray, reference: np.ndarray) -> float:
  """The share of images whose top output (sign, for one logit) agrees with the reference."""
  if logits.shape[-1] == 1:
    same = (logits[:, 0] > 0) == (reference[:, 0] > 0)
  else:
    same = np.argmax(logits, -1) == np.argmax(reference, -1)
  return round(float(np.mean(same)), 4)
