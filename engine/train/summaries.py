"""TensorBoard output of a run: scalars, images, hparams, profiler traces."""

from __future__ import annotations

import logging
import os

import cv2
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api


class RunSummaries:
  """train/ and eval/ event files under model_dir; a no-op on non-chief workers."""

  def __init__(self, model_dir: str, enabled: bool = True):
    self.enabled = enabled
    self.model_dir = model_dir
    if enabled:
      self.train = tf.summary.create_file_writer(os.path.join(model_dir, "train"))
      self.eval = tf.summary.create_file_writer(os.path.join(model_dir, "eval"))
    self._profiling = False

  def scalars(self, writer_name: str, step: int, values: dict) -> None:
    if not self.enabled:
      return
    with getattr(self, writer_name).as_default(step=step):
      for name, value in values.items():
        if value is not None:
          tf.summary.scalar(name, float(value))

  def image(self, step: int, name: str, images: np.ndarray, max_outputs: int = 8) -> None:
    if not self.enabled or images is None or not len(images):
      return
    with self.eval.as_default(step=step):
      tf.summary.image(name, np.asarray(images, np.uint8), max_outputs=max_outputs)

  def hparams(self, values: dict) -> None:
    """One hparams-plugin entry per run, so runs compare in TensorBoard's HParams tab."""
    if not self.enabled:
      return
    flat = {k: (v if isinstance(v, (bool, int, float, str)) else str(v)) for k, v in values.items()}
    with self.train.as_default():
      hparams_api.hparams(flat)

  def flush(self) -> None:
    if self.enabled:
      self.train.flush()
      self.eval.flush()

  def start_profile(self) -> None:
    if self.enabled and not self._profiling:
      tf.profiler.experimental.start(os.path.join(self.model_dir, "profile"))
      self._profiling = True
      logging.info("profiler: tracing into %s", os.path.join(self.model_dir, "profile"))

  def stop_profile(self) -> None:
    if self._profiling:
      tf.profiler.experimental.stop()
      self._profiling = False


def annotate(images: np.ndarray, captions: list[str], scale: int = 2) -> np.ndarray:
  """Draws each caption under its image (uint8 [N, H, W, 3] -> [N, sH + 14, sW, 3])."""
  out = []
  for image, caption in zip(images, captions):
    image = np.clip(image, 0, 255).astype(np.uint8)
    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    band = np.zeros((14, image.shape[1], 3), np.uint8)
    cv2.putText(band, caption, (2, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1,
                cv2.LINE_AA)
    out.append(np.concatenate([image, band], axis=0))
  return np.stack(out) if out else np.zeros((0, 1, 1, 3), np.uint8)
