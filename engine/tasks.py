"""What is learned from a face: the task registry.

A task owns everything that depends on what the labels mean: how many outputs the model
has, which features of a record hold the label, the loss and accuracy per example, how
logits become probabilities, the class names, the validation metrics and which of them
can be monitored. Nothing outside this module compares task names: code asks
`TASKS.get(name)` and calls the task.

  attribute   one binary CelebA attribute (default Male), or a two-class folder set:
              one sigmoid logit
  identity    one class per training identity (CelebA), or per folder (Pins): softmax
  attributes  every CelebA attribute at once: a sigmoid per attribute

Adding a task is one subclass registered here plus its tests (tests/engine/test_tasks.py).
"""

from __future__ import annotations

import abc

import numpy as np
import tensorflow as tf

from engine.data import schema
from engine.eval import metrics
from engine.config import MONITOR_MODES
from engine.registry import Registry


class Task(abc.ABC):
  """The interface every task implements (see the module docstring)."""

  name: str
  output_kind: str                      # binary | softmax | multilabel (export metadata)
  monitors: tuple[str, ...]             # what its validation reports, monitorable
  uses_label_attribute: bool = False    # learns the attribute named by label_attribute

  # Data: what the labels are.
  @abc.abstractmethod
  def num_classes(self, manifest: dict, label_attribute: str) -> int:
    """Classes (attributes, for multi-label); raises ValueError when the shards lack them."""

  def num_outputs(self, num_classes: int) -> int:
    return num_classes

  @abc.abstractmethod
  def class_names(self, manifest: dict, label_attribute: str) -> list[str]:
    """Readable names in output order (female/male for CelebA's Male attribute)."""

  def class_counts(self, manifest: dict, label_attribute: str, split: str) -> list[int] | None:
    """Examples per class in `split` where the manifest counts them, else None."""
    if manifest["source"] != "folder":
      return None
    counts = _split(manifest, split)["class_counts"]
    return [counts[name] for name in manifest["class_names"]]

  @abc.abstractmethod
  def label_features(self, manifest: dict, label_attribute: str) -> dict:
    """The record features holding the label (tf.io parse spec)."""

  @abc.abstractmethod
  def label_fn(self, manifest: dict, label_attribute: str):
    """parsed features -> label tensor."""

  def zero_labels(self, batch: int, num_outputs: int) -> tf.Tensor:
    """Labels of the training step's shape and dtype (a trial step)."""
    return tf.zeros([batch], tf.int32)

  # Training: float32 per-example values from float32 logits.
  @abc.abstractmethod
  def per_example_loss(self, labels, logits, num_outputs: int, smoothing: float):
    """Cross-entropy per example, with label smoothing."""

  @abc.abstractmethod
  def per_example_correct(self, labels, logits):
    """1.0 per correct example (the mean over attributes for multi-label)."""

  def example_weights(self, labels, class_weights: tuple[float, ...] | None):
    if class_weights is None:
      return tf.ones(tf.shape(labels)[:1], tf.float32)
    return tf.gather(tf.constant(class_weights, tf.float32), labels)

  # Inference and evaluation.
  @abc.abstractmethod
  def probabilities(self, logits):
    """Logits -> per-class probabilities [N, C] ([1 - p, p] for one binary logit); a tensor
    of the logits' dtype (numpy float64 in, float64 out), graph-safe for exports."""

  def describe(self, probabilities: np.ndarray, names: list[str]) -> tuple[str, float]:
    """One example's probabilities -> (label, confidence)."""
    best = int(np.argmax(probabilities))
    return names[best], float(probabilities[best])

  def correct(self, labels: np.ndarray, probs: np.ndarray) -> np.ndarray | None:
    """Per example, whether the top class is right (None where there is no single answer)."""
    return probs.argmax(axis=1) == labels

  def known(self, labels: np.ndarray) -> np.ndarray:
    """Which examples have a class (identities unseen in training have none)."""
    return np.ones(labels.shape[:1], bool)

  def evaluate(self, labels: np.ndarray, probs: np.ndarray, names: list[str]
               ) -> tuple[dict, dict]:
    """(full report, {"val_accuracy", "val_loss", ... monitorable numbers})."""
    report = metrics.classification_metrics(labels, probs, names)
    numbers = {"val_accuracy": report["accuracy"], "val_loss": report["loss"],
               "val_f1_macro": report["f1_macro"], "val_auc": report.get("roc_auc")}
    if report.get("top5_accuracy") is not None:
      numbers["val_top5_accuracy"] = report["top5_accuracy"]
    return report, numbers

  def slice_exclusions(self, label_attribute: str) -> set[str]:
    """Attributes not worth slicing the error by (the label itself)."""
    return set()

  def check_monitor(self, monitor: str, num_classes: int, eval_classes_present: int | None,
                    eval_split: str) -> None:
    """Raises ValueError unless `monitor` is reported, and defined, for this task."""
    if monitor not in self.monitors:
      raise ValueError(f"--monitor={monitor} is not reported by --task={self.name}; it "
                       f"reports {', '.join(self.monitors)}")
    if monitor == "val_auc" and (num_classes > metrics.MAX_CONFUSION_CLASSES
                                 or (eval_classes_present or 2) < 2):
      held = eval_classes_present if eval_classes_present is not None else "some"
      raise ValueError(f"--monitor=val_auc is undefined here: AUC needs 2 to "
                       f"{metrics.MAX_CONFUSION_CLASSES} classes occurring in split "
                       f"{eval_split!r} (the task has {num_classes}, the split holds {held}); "
                       "monitor val_accuracy or val_loss")


TASKS: Registry[Task] = Registry("task")


def _register(cls: type[Task]) -> type[Task]:
  TASKS.add(cls.name, cls())
  return cls


def _split(manifest: dict, split: str) -> dict:
  if split not in manifest["splits"]:
    raise ValueError(f"no split {split!r}; has {sorted(manifest['splits'])}")
  return manifest["splits"][split]


def _attribute_key(name: str) -> str:
  return schema.flat_key(schema.ATTRIBUTES, name)


def _smoothed_binary_targets(labels, smoothing: float):
  """0/1 labels as float32 targets, pulled towards 1/2 by `smoothing` (sigmoid losses)."""
  targets = tf.cast(labels, tf.float32)
  return targets * (1.0 - smoothing) + 0.5 * smoothing if smoothing else targets


def _int_feature() -> tf.io.FixedLenFeature:
  return tf.io.FixedLenFeature([], tf.int64)


class _Softmax(Task):
  """K exclusive classes, one logit each."""

  output_kind = "softmax"
  monitors = tuple(MONITOR_MODES)

  def per_example_loss(self, labels, logits, num_outputs, smoothing):
    onehot = tf.one_hot(labels, num_outputs)
    if smoothing:
      onehot = onehot * (1.0 - smoothing) + smoothing / num_outputs
    return tf.nn.softmax_cross_entropy_with_logits(onehot, logits)

  def per_example_correct(self, labels, logits):
    return tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32)

  def probabilities(self, logits):
    return tf.nn.softmax(tf.convert_to_tensor(logits), axis=-1)


@_register
class AttributeTask(_Softmax):
  """One binary attribute: a single sigmoid logit, probabilities [1 - p, p]."""

  name = "attribute"
  output_kind = "binary"
  uses_label_attribute = True

  def num_classes(self, manifest, label_attribute):
    if manifest["source"] == "folder":
      if len(manifest["class_names"]) != 2:
        raise ValueError(f"task=attribute needs 2 classes; this set has "
                         f"{manifest['class_names']}")
      return 2
    if label_attribute not in manifest["attribute_names"]:
      raise ValueError(f"unknown attribute {label_attribute!r}; known: "
                       f"{', '.join(manifest['attribute_names'])}")
    return 2

  def num_outputs(self, num_classes):
    return 1

  def class_names(self, manifest, label_attribute):
    if manifest["source"] == "folder":
      return list(manifest["class_names"])
    if label_attribute == "Male":
      return ["female", "male"]
    return [f"not_{label_attribute}", label_attribute]

  def class_counts(self, manifest, label_attribute, split):
    if manifest["source"] == "folder":
      return super().class_counts(manifest, label_attribute, split)
    counts = _split(manifest, split)["class_counts"][label_attribute]
    return [counts["0"], counts["1"]]

  def label_features(self, manifest, label_attribute):
    if manifest["source"] == "folder":
      return {schema.LABEL: _int_feature()}
    return {_attribute_key(label_attribute): _int_feature()}

  def label_fn(self, manifest, label_attribute):
    (key,) = self.label_features(manifest, label_attribute)
    return lambda features: tf.cast(features[key], tf.int32)

  def per_example_loss(self, labels, logits, num_outputs, smoothing):
    targets = _smoothed_binary_targets(labels, smoothing)
    return tf.nn.sigmoid_cross_entropy_with_logits(targets, logits[:, 0])

  def per_example_correct(self, labels, logits):
    return tf.cast(tf.equal(tf.cast(logits[:, 0] > 0, tf.int32), labels), tf.float32)

  def probabilities(self, logits):
    positive = tf.sigmoid(tf.convert_to_tensor(logits))
    return tf.concat([1.0 - positive, positive], axis=-1)

  def slice_exclusions(self, label_attribute):
    return {label_attribute}  # the by-class view shows it


@_register
class IdentityTask(_Softmax):
  """Who it is: the training split's CelebA identities, or a folder set's classes."""

  name = "identity"

  def num_classes(self, manifest, label_attribute):
    if manifest["source"] == "folder":
      return len(manifest["class_names"])
    if not manifest.get("has_identity"):
      raise ValueError("task=identity needs identity_CelebA.txt in the sharded CelebA set")
    if not manifest["identities"]:
      raise ValueError("task=identity: these shards have no training identities (the classes "
                       "are the train split's identities, and there is no train split)")
    return len(manifest["identities"])

  def class_names(self, manifest, label_attribute):
    if manifest["source"] == "folder":
      return list(manifest["class_names"])
    return [str(i) for i in manifest["identities"]]

  def label_features(self, manifest, label_attribute):
    if manifest["source"] == "folder":
      return {schema.LABEL: _int_feature()}
    return {schema.IDENTITY: _int_feature()}

  def label_fn(self, manifest, label_attribute):
    if manifest["source"] == "folder":
      return lambda features: tf.cast(features[schema.LABEL], tf.int32)
    identities = manifest["identities"]
    table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        tf.constant(identities, tf.int64), tf.range(len(identities), dtype=tf.int32)),
        default_value=-1)  # an identity unseen in training: no class
    return lambda features: table.lookup(features[schema.IDENTITY])

  def known(self, labels):
    return labels >= 0


@_register
class AttributesTask(Task):
  """Every CelebA attribute at once: a sigmoid per attribute, multi-hot labels."""

  name = "attributes"
  output_kind = "multilabel"
  monitors = ("val_accuracy", "val_loss")

  def num_classes(self, manifest, label_attribute):
    if manifest["source"] == "folder":
      raise ValueError("task=attributes needs CelebA shards (folder sets have one label)")
    return len(manifest["attribute_names"])

  def class_names(self, manifest, label_attribute):
    return list(manifest["attribute_names"])

  def class_counts(self, manifest, label_attribute, split):
    return None

  def label_features(self, manifest, label_attribute):
    return {_attribute_key(name): _int_feature() for name in manifest["attribute_names"]}

  def label_fn(self, manifest, label_attribute):
    keys = list(self.label_features(manifest, label_attribute))
    return lambda features: tf.cast(tf.stack([features[k] for k in keys]), tf.float32)

  def zero_labels(self, batch, num_outputs):
    return tf.zeros([batch, num_outputs], tf.float32)

  def correct(self, labels, probs):
    return None

  def per_example_loss(self, labels, logits, num_outputs, smoothing):
    targets = _smoothed_binary_targets(labels, smoothing)
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(targets, logits), axis=-1)

  def per_example_correct(self, labels, logits):
    return tf.reduce_mean(tf.cast(tf.equal(tf.cast(logits > 0, tf.float32), labels), tf.float32),
                          -1)

  def example_weights(self, labels, class_weights):
    return tf.ones(tf.shape(labels)[:1], tf.float32)  # classes are not exclusive

  def probabilities(self, logits):
    return tf.sigmoid(tf.convert_to_tensor(logits))

  def describe(self, probabilities, names):
    on = [n for n, p in zip(names, probabilities) if p >= 0.5]
    # the least certain of the per-attribute decisions
    confidence = float(np.min(np.maximum(probabilities, 1.0 - probabilities)))
    return ("+".join(on) if on else "none"), confidence

  def evaluate(self, labels, probs, names):
    report = metrics.multilabel_metrics(labels, probs, names)
    return report, {"val_accuracy": report["mean_accuracy"], "val_loss": report["loss"]}
