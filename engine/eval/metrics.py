"""Evaluation metrics over collected predictions: scikit-learn and numpy, no TensorFlow.

Everything here takes whole-split arrays (labels, probabilities, an optional padding
mask) and returns JSON-ready dicts of Python numbers, so a report can be computed,
saved and compared without a framework in the loop. The counting (precision, recall,
F1, AUC, confusion matrix, top-k) is scikit-learn's; what stays here is the report's
shape and our conventions (masks, the clipped log loss, which classes are averaged).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from sklearn import metrics as skm

# Keras' epsilon: log(p) is clipped so one confident mistake cannot make the loss inf.
LOG_EPSILON = 1e-7
# Above this many classes no [C, C] confusion matrix or one-vs-rest AUC is computed
# (CelebA has 10,177 identities: a 10k x 10k matrix is 800 MB and unreadable anyway).
MAX_CONFUSION_CLASSES = 100


def _kept(mask: np.ndarray | None, n: int) -> np.ndarray:
  """Boolean [n]: True where the example is real (mask != 0)."""
  if mask is None:
    return np.ones(n, bool)
  mask = np.asarray(mask).reshape(-1)
  if mask.shape[0] != n:
    raise ValueError(f"mask has {mask.shape[0]} entries for {n} examples")
  return mask != 0


def roc_auc(binary_labels: np.ndarray, scores: np.ndarray) -> float | None:
  """Area under the ROC curve (scikit-learn's `roc_auc_score`), None where undefined.

  A tie between a positive and a negative counts one half (the area under the ROC
  curve's diagonal segment through the tie).

  Args:
    binary_labels: [N] truthy for positives.
    scores: [N] higher means more positive.

  Returns:
    The AUC in [0, 1], or None when the labels hold only one class.
  """
  positive = np.asarray(binary_labels).reshape(-1).astype(bool)
  if positive.all() or not positive.any():  # sklearn would warn and return nan
    return None
  return float(skm.roc_auc_score(positive, np.asarray(scores, np.float64).reshape(-1)))


def _averages(labels: np.ndarray, predictions: np.ndarray) -> dict:
  """sklearn's macro and weighted averages. Without `labels=`, sklearn averages over the
  classes present in the labels or the predictions, so absent classes do not count."""
  out = {}
  for average in ("macro", "weighted"):
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        labels, predictions, average=average, zero_division=0.0)
    out[f"{average}_avg"] = {"precision": float(precision), "recall": float(recall),
                             "f1": float(f1), "support": int(labels.size)}
  return out


def classification_metrics(labels: np.ndarray, probs: np.ndarray, class_names: Sequence[str],
                           mask: np.ndarray | None = None,
                           max_confusion_classes: int = MAX_CONFUSION_CLASSES) -> dict:
  """Single-label classification report, like sklearn's classification_report and more.

  Conventions (sklearn's): a class never predicted has precision 0.0, a class absent from
  the labels has recall 0.0, and F1 is 0.0 when precision + recall is 0. The macro average
  runs over the classes that occur in the labels or the predictions; the weighted average
  weighs each class by its support.

  Args:
    labels: int [N] true class indices in [0, C).
    probs: float [N, C] class probabilities, C >= 2 (a binary task passes [1 - p, p]).
    class_names: C names, in index order.
    mask: optional [N]; examples with 0 (padding) are dropped.
    max_confusion_classes: above this many classes, `confusion_matrix` and a multi-class
      `roc_auc` are None (their cost grows with C^2 and C*N log N).

  Returns:
    {"num_examples", "accuracy", "loss" (mean cross-entropy of the true class, log clipped
    at 1e-7), "per_class": {name: {"precision", "recall", "f1", "support"}}, "macro_avg",
    "weighted_avg" ({"precision", "recall", "f1", "support"}), "f1_macro",
    "confusion_matrix" ([true][pred] counts, list of lists), "roc_auc" (binary: AUC of
    class 1's probability; multi-class: one-vs-rest macro over the classes that have both
    positives and negatives), and "top5_accuracy" when C > 5}.

  Raises:
    ValueError: on mismatched shapes, labels outside [0, C), or no unmasked example.
  """
  labels, probs = _checked_single_label(labels, probs, class_names, mask)
  num_classes = probs.shape[1]
  predictions = probs.argmax(axis=1)
  every_class = np.arange(num_classes)
  precision, recall, f1, support = skm.precision_recall_fscore_support(
      labels, predictions, labels=every_class, zero_division=0.0)
  true_probs = probs[np.arange(labels.size), labels]

  result = {
      "num_examples": int(labels.size),
      "accuracy": float(skm.accuracy_score(labels, predictions)),
      # Keras' clipping, not sklearn's log_loss (which clips at float eps, or not at all).
      "loss": float(-np.log(np.clip(true_probs, LOG_EPSILON, 1.0)).mean()),
      "per_class": {
          str(name): {"precision": float(precision[c]), "recall": float(recall[c]),
                      "f1": float(f1[c]), "support": int(support[c])}
          for c, name in enumerate(class_names)},
      **_averages(labels, predictions),
  }
  result["f1_macro"] = result["macro_avg"]["f1"]
  result.update(_confusion_and_auc(labels, probs, predictions, max_confusion_classes))
  if num_classes > 5:
    result["top5_accuracy"] = float(skm.top_k_accuracy_score(labels, probs, k=5,
                                                             labels=every_class))
  return result


def _checked_single_label(labels, probs, class_names, mask) -> tuple[np.ndarray, np.ndarray]:
  """(int64 labels, float64 probs) of the unmasked examples, or ValueError saying what is off."""
  probs = np.asarray(probs, np.float64)
  labels = np.asarray(labels).reshape(-1)
  if probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
    raise ValueError(f"probs must be [N, C] with N = {labels.shape[0]} labels; got {probs.shape}")
  num_classes = probs.shape[1]
  if num_classes < 2 or len(class_names) != num_classes:
    raise ValueError(f"need C >= 2 probability columns and C class names; got {num_classes} "
                     f"columns and {len(class_names)} names")
  kept = _kept(mask, labels.shape[0])
  labels, probs = labels[kept].astype(np.int64), probs[kept]
  if not labels.size:
    raise ValueError("no examples left after masking")
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(f"labels must be in [0, {num_classes}); got [{labels.min()}, {labels.max()}]")
  return labels, probs


def _confusion_and_auc(labels, probs, predictions, max_classes: int) -> dict:
  """The confusion matrix and ROC-AUC, or None for both above `max_classes` classes."""
  num_classes = probs.shape[1]
  if num_classes > max_classes:
    return {"confusion_matrix": None, "roc_auc": None}
  matrix = skm.confusion_matrix(labels, predictions, labels=np.arange(num_classes)).tolist()
  if num_classes == 2:
    return {"confusion_matrix": matrix, "roc_auc": roc_auc(labels == 1, probs[:, 1])}
  # sklearn's multi_class="ovr" refuses a split missing a class: skip those instead
  aucs = [roc_auc(labels == c, probs[:, c]) for c in range(num_classes)]
  aucs = [a for a in aucs if a is not None]
  return {"confusion_matrix": matrix, "roc_auc": float(np.mean(aucs)) if aucs else None}


def multilabel_metrics(labels01: np.ndarray, probs: np.ndarray, names: Sequence[str],
                       mask: np.ndarray | None = None, threshold: float = 0.5) -> dict:
  """Independent binary attributes (sigmoid outputs), each thresholded at `threshold`.

  Args:
    labels01: [N, A] 0/1 truth.
    probs: [N, A] probabilities of 1.
    names: A attribute names.
    mask: optional [N]; examples with 0 (padding) are dropped.
    threshold: a probability at or above it predicts 1.

  Returns:
    {"num_examples", "loss" (mean binary cross-entropy over all N*A entries),
    "per_attribute": {name: {"accuracy", "precision", "recall", "f1", "roc_auc",
    "positives"}}, "mean_accuracy", "mean_f1", "mean_roc_auc" (over attributes whose AUC
    exists; None if none does), "exact_match" (all A attributes right)}. Precision of an
    attribute never predicted 1 is 0.0.
  """
  labels01 = np.asarray(labels01).astype(bool)
  probs = np.asarray(probs, np.float64)
  if labels01.shape != probs.shape or labels01.ndim != 2 or labels01.shape[1] != len(names):
    raise ValueError(f"labels {labels01.shape} and probs {probs.shape} must both be [N, "
                     f"{len(names)}]")
  kept = _kept(mask, labels01.shape[0])
  labels01, probs = labels01[kept], probs[kept]
  if not labels01.shape[0]:
    raise ValueError("no examples left after masking")
  predicted = probs >= threshold
  correct = predicted == labels01
  precision, recall, f1, _ = skm.precision_recall_fscore_support(
      labels01, predicted, average=None, zero_division=0.0)
  clipped = np.clip(probs, LOG_EPSILON, 1.0 - LOG_EPSILON)
  bce = -(labels01 * np.log(clipped) + ~labels01 * np.log(1.0 - clipped))
  per_attribute = {}
  for a, name in enumerate(names):
    per_attribute[str(name)] = {
        "accuracy": float(correct[:, a].mean()), "precision": float(precision[a]),
        "recall": float(recall[a]), "f1": float(f1[a]),
        "roc_auc": roc_auc(labels01[:, a], probs[:, a]),
        "positives": int(labels01[:, a].sum())}
  aucs = [m["roc_auc"] for m in per_attribute.values() if m["roc_auc"] is not None]
  return {
      "num_examples": int(labels01.shape[0]),
      "loss": float(bce.mean()),
      "per_attribute": per_attribute,
      "mean_accuracy": float(correct.mean()),
      "mean_f1": float(f1.mean()),
      "mean_roc_auc": float(np.mean(aucs)) if aucs else None,
      "exact_match": float(skm.accuracy_score(labels01, predicted)),  # subset accuracy
  }


def _error_by_value(correct: np.ndarray, values: np.ndarray) -> dict:
  values = np.asarray(values).reshape(-1)
  if values.shape != correct.shape:
    raise ValueError(f"slice values have shape {values.shape}, predictions {correct.shape}")
  out = {}
  for value in np.unique(values):
    in_slice = values == value
    count = int(in_slice.sum())
    out[str(value.item())] = {"error": float(1.0 - correct[in_slice].mean()), "count": count}
  return out


def sliced_error(correct: np.ndarray, attributes: Mapping[str, np.ndarray],
                 labels: np.ndarray | None = None,
                 class_names: Sequence[str] | None = None) -> dict:
  """Error rate within slices of the data: the fairness view of one set of predictions.

  Args:
    correct: bool [N], whether each (real, unpadded) example was classified right.
    attributes: name -> [N] slice value per example (0/1 for CelebA attributes; any
      int or str works, e.g. a bucket of identity sizes).
    labels: optional int [N] true classes; adds the error by true class (1 - recall).
    class_names: names for `labels`' classes (default: the index as a string).

  Returns:
    {"by_attribute": {name: {str(value): {"error", "count"}}}} plus, with `labels`,
    "by_class": {class name: {"error", "count", "recall"}}. Values appear in sorted order;
    a value with no example does not appear.
  """
  correct = np.asarray(correct).reshape(-1).astype(bool)
  result = {"by_attribute": {name: _error_by_value(correct, values)
                             for name, values in attributes.items()}}
  if labels is not None:
    by_class = {}
    for value, stats in _error_by_value(correct, labels).items():
      name = class_names[int(value)] if class_names is not None else value
      by_class[str(name)] = {**stats, "recall": 1.0 - stats["error"]}
    result["by_class"] = by_class
  return result


# Up to this many classes the cells show their counts, and up to MAX_NAMED_CLASSES the
# axes the class names; above, colours only. matplotlib lays out each text for ~0.3 ms:
# counts in 30 x 30 cells would cost ~0.5 s at every validation, 100 x 100 seconds.
MAX_COUNTED_CLASSES = 12
MAX_NAMED_CLASSES = 40
_CELL_INCHES = 0.6       # one cell while labelled; a larger matrix shrinks to _MAX_SIDE_INCHES
_MAX_SIDE_INCHES = 12.0
_DPI = 100


def _fit(text: str, max_chars: int) -> str:
  """Truncates text to max_chars characters, the last two being '..'."""
  return text if len(text) <= max_chars else text[:max_chars - 2] + ".."


def confusion_matrix_image(cm, class_names: Sequence[str], max_label_chars: int = 20
                           ) -> np.ndarray:
  """Draws a confusion matrix with matplotlib (the Agg canvas: no display, no pyplot).

  Rows are true classes, columns predictions. Colour is the row-normalised rate, so
  each row reads as that class's recall spread. Cells show the counts up to
  MAX_COUNTED_CLASSES classes, the axes the names up to MAX_NAMED_CLASSES.

  Args:
    cm: [C, C] counts, [true][pred].
    class_names: C names.
    max_label_chars: longer names are truncated to this many characters.

  Returns:
    uint8 [H, W, 3] RGB (cv2.imwrite wants BGR: convert first).
  """
  # Imported here: matplotlib costs ~0.3 s to import, and only drawing needs it.
  from matplotlib.backends.backend_agg import FigureCanvasAgg  # pylint: disable=g-import-not-at-top
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  cm = np.asarray(cm, np.int64)
  num_classes = cm.shape[0]
  if cm.shape != (num_classes, num_classes) or len(class_names) != num_classes:
    raise ValueError(f"need a [C, C] matrix and C names; got {cm.shape}, {len(class_names)} names")
  rows = cm.sum(axis=1, keepdims=True)
  rates = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
  counted, named = num_classes <= MAX_COUNTED_CLASSES, num_classes <= MAX_NAMED_CLASSES
  names = [_fit(str(n), max_label_chars) for n in class_names]
  # Margins from the longest name (~0.09 inch a character at 10 pt), not a layout engine:
  # matplotlib's constrained layout measures every text again and doubles the time.
  margin_inches = 0.5 + (0.09 * max(len(n) for n in names) if named else 0.0)
  matrix_inches = min(num_classes * _CELL_INCHES, _MAX_SIDE_INCHES)
  side = matrix_inches + margin_inches + 0.15
  figure = Figure(figsize=(side, side), dpi=_DPI)
  figure.subplots_adjust(left=margin_inches / side, bottom=margin_inches / side,
                         right=1 - 0.15 / side, top=1 - 0.15 / side)
  canvas = FigureCanvasAgg(figure)
  axes = figure.add_subplot()
  # Not sklearn's ConfusionMatrixDisplay: it colours by the numbers it prints (we colour by
  # rate, print counts) and makes a tick per class even where no name fits (0.3 s at 100).
  axes.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
  if counted:
    for (t, p), count in np.ndenumerate(cm):
      axes.text(p, t, str(count), ha="center", va="center",
                color="white" if rates[t, p] > 0.5 else "black")
  every_class = np.arange(num_classes)
  axes.set_xticks(every_class if named else [], names if named else [], rotation="vertical")
  axes.set_yticks(every_class if named else [], names if named else [])
  axes.set_xlabel("predicted")
  axes.set_ylabel("true")
  canvas.draw()
  return np.asarray(canvas.buffer_rgba())[..., :3].copy()
