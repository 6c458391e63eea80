"""Validation during training: every example once, metrics, TensorBoard images, best export."""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import keras
import numpy as np
import tensorflow as tf

from engine.data import integrity, pipeline
from engine.eval.metrics import classification_metrics, confusion_matrix_image, multilabel_metrics
from engine.train.config import ExperimentConfig
from engine.train.summaries import RunSummaries, annotate
from engine.train.task import TaskSpec, WeightAverage

EVAL_BATCH = 64


def class_names(config: pipeline.InputConfig, manifest: dict) -> list[str]:
  """Readable class names for the task (female/male for CelebA's Male attribute)."""
  if manifest["source"] == "folder":
    return list(manifest["class_names"])
  if config.task == "attribute":
    attribute = config.label_attribute
    return ["female", "male"] if attribute == "Male" else [f"not_{attribute}", attribute]
  if config.task == "identity":
    return [str(i) for i in manifest["identities"]]
  return list(manifest["attribute_names"])


def probabilities(task: str, logits: np.ndarray) -> np.ndarray:
  """Logits -> per-class probabilities ([1 - p, p] for a binary attribute)."""
  logits = logits.astype(np.float64)
  if task == "identity":
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
  p = 0.5 * (1.0 + np.tanh(0.5 * logits))  # the sigmoid without exp overflow at large |logits|
  return np.concatenate([1.0 - p, p], axis=1) if task == "attribute" else p


@dataclasses.dataclass(frozen=True)
class Predictions:
  logits: np.ndarray         # float32 [N, ...], file order, padding dropped
  labels: np.ndarray         # [N, ...]
  first_images: np.ndarray   # the first few real images, for TensorBoard


def make_predict_fn(model: keras.Model, flip_tta: bool):
  """A compiled images -> float32 logits; `flip_tta` averages each image's logits with its
  mirror image's (one vector per example; probabilities agree closely with averaging
  probabilities). Build it once: every new tf.function traces the model again."""

  @tf.function
  def predict(images):
    logits = tf.cast(model(images, training=False), tf.float32)
    if flip_tta:
      logits = 0.5 * (logits + tf.cast(model(tf.reverse(images, axis=[2]), training=False),
                                       tf.float32))
    return logits

  return predict


def predict_padded(predict, dataset: tf.data.Dataset, keep_images: int = 0) -> Predictions:
  """Runs `predict` (make_predict_fn) over eval batches `(images, labels, mask)`.

  Used by validation during training and by `launch.evaluate`, so both count the same
  examples the same way: padding dropped, file order kept.

  Raises:
    RuntimeError: padding between real examples (the eval pipeline pads only at the end).
  """
  logits, labels, masks, first = [], [], [], None
  for images, batch_labels, mask in dataset:
    logits.append(predict(images).numpy())
    labels.append(batch_labels.numpy())
    masks.append(mask.numpy())
    if first is None:
      first = images.numpy()[mask.numpy() > 0][:keep_images]
  if not masks:
    raise RuntimeError("the evaluation split yielded no example (every record was skipped "
                       "as unreadable, or the split is empty)")
  real = np.concatenate(masks) > 0
  if not real[:real.sum()].all():
    raise RuntimeError("eval padding is interleaved with real examples; the pipeline broke "
                       "its contract (padding only at the end)")
  return Predictions(np.concatenate(logits)[real], np.concatenate(labels)[real], first)


class Evaluator:
  """Runs the validation split through the model (EMA weights when kept)."""

  def __init__(self, config: ExperimentConfig, model: keras.Model, spec: TaskSpec,
               ema: WeightAverage | None = None):
    self.config, self.model, self.spec, self.ema = config, model, spec, ema
    manifest = pipeline.read_manifest(config.input.data_dir)
    self.manifest = manifest
    self.names = class_names(config.input, manifest)
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
    task = self.config.input.task
    if task == "identity":  # identities never seen in training have no class (label -1)
      known = labels >= 0
      if not known.any():
        raise ValueError(f"{self.config.eval_split}: none of its identities occur in the training "
                         "split (CelebA's official splits are identity-disjoint); evaluate "
                         "identity on a split that shares identities with train")
      if not known.all():
        logging.info("eval: %d of %d examples have identities unseen in training; skipped",
                     int((~known).sum()), len(labels))
      logits, labels = logits[known], labels[known]
    probs = probabilities(task, logits)
    if task == "attributes":
      report = multilabel_metrics(labels, probs, self.names)
      metrics = {"val_accuracy": report["mean_accuracy"], "val_loss": report["loss"]}
    else:
      report = classification_metrics(labels, probs, self.names)
      metrics = {"val_accuracy": report["accuracy"], "val_loss": report["loss"],
                 "val_f1_macro": report["f1_macro"], "val_auc": report.get("roc_auc")}
      if report.get("top5_accuracy") is not None:
        metrics["val_top5_accuracy"] = report["top5_accuracy"]
      if report.get("confusion_matrix") is not None:  # None for very many classes
        summaries.image(step, "confusion_matrix",
                        confusion_matrix_image(report["confusion_matrix"], self.names)[None], 1)
    metrics["val_examples"] = len(labels)
    summaries.scalars("eval", step, {k.removeprefix("val_"): v for k, v in metrics.items()
                                     if isinstance(v, (int, float))})
    summaries.image(step, "samples", annotate(samples, self._captions(sample_logits)))
    logging.info("eval step %d: %s", step, " ".join(
        f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
    self.last_report = report
    return metrics

  def _captions(self, logits: np.ndarray) -> list[str]:
    probs = probabilities(self.config.input.task, logits)
    if self.config.input.task == "attributes":
      return [f"{int((p > 0.5).sum())} attrs" for p in probs]
    return [f"{self.names[int(p.argmax())]} {p.max():.2f}" for p in probs]

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
    with open(os.path.join(best_dir, "metrics.json.tmp"), "w") as f:
      json.dump(payload, f, indent=2)
    os.replace(os.path.join(best_dir, "metrics.json.tmp"), os.path.join(best_dir, "metrics.json"))
    logging.info("new best %s=%.4f at step %d -> %s", self.config.train.monitor,
                 metrics[self.config.train.monitor], step, best_dir)

