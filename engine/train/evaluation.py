"""Validation during training: every example once, metrics, TensorBoard images, best export."""

from __future__ import annotations

import dataclasses
import logging
import os

import keras
import numpy as np
import tensorflow as tf

from engine.atomic_write import atomic_write_json
from engine.config import ExperimentConfig
from engine.data import integrity, pipeline
from engine.data.manifest import read_manifest
from engine.eval.inference import make_predict_fn, predict_padded
from engine.eval.metrics import confusion_matrix_image
from engine.tasks import TASKS
from engine.train.summaries import RunSummaries, annotate
from engine.train.task import WeightAverage

EVAL_BATCH = 64


class Evaluator:
  """Runs the validation split through the model (EMA weights when kept)."""

  def __init__(self, config: ExperimentConfig, model: keras.Model,
               ema: WeightAverage | None = None, manifest: dict | None = None):
    self.config, self.model, self.ema = config, model, ema
    self.task = TASKS.get(config.input.task)
    # The trainer passes the manifest it already read; other callers let it be read here.
    self.manifest = manifest or read_manifest(config.input.data_dir)
    self.names = self.task.class_names(self.manifest, config.input.label_attribute)
    self.input = dataclasses.replace(
        config.input, split=config.eval_split, training=False,
        global_batch_size=min(EVAL_BATCH, max(config.input.global_batch_size, 1)))
    self._predict = make_predict_fn(model, config.train.eval_flip)
    # Built once: every evaluation replays its cache (decoded images for small splits).
    self._dataset = pipeline.make_dataset(self.input)

  def predict_split(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(logits, labels, sample images, their logits) over the split, padding dropped."""
    try:
      result = predict_padded(self._predict, self._dataset, self.config.train.summary_images)
    except tf.errors.DataLossError as e:
      raise integrity.corrupt_record_error(self.input.data_dir, self.manifest, self.input.split,
                                           e) from e
    samples = result.first_images
    return result.logits, result.labels, samples, result.logits[:len(samples)]

  def run(self, step: int, summaries: RunSummaries) -> dict:
    if self.ema is not None:
      self.ema.swap()
    try:
      logits, labels, samples, sample_logits = self.predict_split()
    finally:
      if self.ema is not None:
        self.ema.swap()
    known = self.task.known(labels)  # identities never seen in training have no class
    if not known.any():
      raise ValueError(f"{self.config.eval_split}: none of its identities occur in the training "
                       "split (CelebA's official splits are identity-disjoint); evaluate "
                       "identity on a split that shares identities with train")
    if not known.all():
      logging.info("eval: %d of %d examples have identities unseen in training; skipped",
                   int((~known).sum()), len(labels))
    logits, labels = logits[known], labels[known]
    probs = self.task.probabilities(logits.astype(np.float64)).numpy()
    report, metrics = self.task.evaluate(labels, probs, self.names)
    if report.get("confusion_matrix") is not None:  # None for multi-label and many classes
      summaries.image(step, "confusion_matrix",
                      confusion_matrix_image(report["confusion_matrix"], self.names)[None], 1)
    metrics["val_examples"] = len(labels)
    summaries.scalars("eval", step, {k.removeprefix("val_"): v for k, v in metrics.items()
                                     if isinstance(v, (int, float))})
    summaries.image(step, "samples", annotate(samples, self._captions(sample_logits)))
    logging.info("eval step %d: %s", step, " ".join(
        f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    return metrics

  def _captions(self, logits: np.ndarray) -> list[str]:
    probs = self.task.probabilities(logits).numpy()
    return ["{} {:.2f}".format(*self.task.describe(p, self.names)) for p in probs]

  def export_best(self, step: int, metrics: dict) -> None:
    """Writes best/model.weights.h5 (+ metrics.json) atomically: tmp name, then rename."""
    best_dir = os.path.join(self.config.train.model_dir, "best")
    os.makedirs(best_dir, exist_ok=True)
    tmp = os.path.join(best_dir, "model.tmp.weights.h5")
    if self.ema is not None:
      self.ema.swap()
    try:
      self.model.save_weights(tmp)
    finally:
      if self.ema is not None:
        self.ema.swap()
    os.replace(tmp, os.path.join(best_dir, "model.weights.h5"))
    payload = {"step": step, "monitor": self.config.train.monitor,
               **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
    atomic_write_json(os.path.join(best_dir, "metrics.json"), payload)
    logging.info("new best %s=%.4f at step %d -> %s", self.config.train.monitor,
                 metrics[self.config.train.monitor], step, best_dir)

