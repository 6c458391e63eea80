"""Evaluation metrics over collected predictions: plain numpy, no TensorFlow.

Everything here takes whole-split arrays (labels, probabilities, an optional padding
mask) and returns JSON-ready dicts of Python numbers, so a report can be computed,
saved and compared without a framework in the loop.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import cv2
import numpy as np

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
  """Exact area under the ROC curve via the Mann-Whitney rank statistic.

  Tied scores get their average rank, so a tie between a positive and a negative counts
  one half (the area under the ROC curve's diagonal segment through the tie).

  Args:
    binary_labels: [N] truthy for positives.
    scores: [N] higher means more positive.

  Returns:
    The AUC in [0, 1], or None when the labels hold only one class.
  """
  positive = np.asarray(binary_labels).reshape(-1).astype(bool)
  scores = np.asarray(scores, np.float64).reshape(-1)
  num_pos = int(positive.sum())
  num_neg = positive.size - num_pos
  if not num_pos or not num_neg:
    return None
  order = np.argsort(scores, kind="mergesort")
  ordered = scores[order]
  is_start = np.r_[True, ordered[1:] != ordered[:-1]]
  starts = np.flatnonzero(is_start)
  ends = np.r_[starts[1:], ordered.size]
  # 1-based ranks start+1 .. end share their mean.
  group_rank = (starts + 1 + ends) / 2.0
  ranks = np.empty(ordered.size)
  ranks[order] = group_rank[np.cumsum(is_start) - 1]
  u = ranks[positive].sum() - num_pos * (num_pos + 1) / 2.0
  return float(u / (num_pos * num_neg))


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
  numerator = np.asarray(numerator, np.float64)
  denominator = np.asarray(denominator, np.float64)
  out = np.zeros_like(numerator)
  np.divide(numerator, denominator, out=out, where=denominator > 0)
  return out


def _precision_recall_f1(tp, predicted, support):
  precision = _safe_divide(tp, predicted)
  recall = _safe_divide(tp, support)
  f1 = _safe_divide(2 * precision * recall, precision + recall)
  return precision, recall, f1


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

  predictions = probs.argmax(axis=1)
  correct = predictions == labels
  support = np.bincount(labels, minlength=num_classes)
  predicted = np.bincount(predictions, minlength=num_classes)
  tp = np.bincount(labels[correct], minlength=num_classes)
  precision, recall, f1 = _precision_recall_f1(tp, predicted, support)
  true_probs = probs[np.arange(labels.size), labels]
  present = (support > 0) | (predicted > 0)
  weights = support / support.sum()

  result = {
      "num_examples": int(labels.size),
      "accuracy": float(correct.mean()),
      "loss": float(-np.log(np.clip(true_probs, LOG_EPSILON, 1.0)).mean()),
      "per_class": {
          str(name): {"precision": float(precision[c]), "recall": float(recall[c]),
                      "f1": float(f1[c]), "support": int(support[c])}
          for c, name in enumerate(class_names)},
      "macro_avg": {"precision": float(precision[present].mean()),
                    "recall": float(recall[present].mean()),
                    "f1": float(f1[present].mean()), "support": int(labels.size)},
      "weighted_avg": {"precision": float(weights @ precision), "recall": float(weights @ recall),
                       "f1": float(weights @ f1), "support": int(labels.size)},
  }
  result["f1_macro"] = result["macro_avg"]["f1"]
  result["confusion_matrix"] = None
  result["roc_auc"] = None
  if num_classes <= max_confusion_classes:
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    result["confusion_matrix"] = matrix.tolist()
    if num_classes == 2:
      result["roc_auc"] = roc_auc(labels == 1, probs[:, 1])
    else:
      aucs = [roc_auc(labels == c, probs[:, c]) for c in range(num_classes)]
      aucs = [a for a in aucs if a is not None]
      result["roc_auc"] = float(np.mean(aucs)) if aucs else None
  if num_classes > 5:
    top5 = np.argpartition(-probs, 5, axis=1)[:, :5]
    result["top5_accuracy"] = float((top5 == labels[:, None]).any(axis=1).mean())
  return result


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
  tp = (predicted & labels01).sum(axis=0)
  precision, recall, f1 = _precision_recall_f1(tp, predicted.sum(axis=0), labels01.sum(axis=0))
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
      "exact_match": float(correct.all(axis=1).mean()),
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


_FONT = cv2.FONT_HERSHEY_SIMPLEX
_FONT_SCALE = 0.45
_LIGHT = np.array([247, 251, 255], np.float64)  # RGB ends of the colour ramp
_DARK = np.array([8, 48, 107], np.float64)


def _text_size(text: str) -> tuple[int, int]:
  (width, height), baseline = cv2.getTextSize(text, _FONT, _FONT_SCALE, 1)
  return width, height + baseline


def _fit(text: str, max_width: int) -> str:
  """Truncates text (with '..') until it is at most max_width pixels wide."""
  if _text_size(text)[0] <= max_width:
    return text
  while len(text) > 1 and _text_size(text + "..")[0] > max_width:
    text = text[:-1]
  return text + ".."


def _text_image(text: str, color=(0, 0, 0)) -> np.ndarray:
  """White RGB strip holding `text`, for pasting (rotated) into a larger image."""
  width, height = _text_size(text)
  strip = np.full((height + 4, width + 4, 3), 255, np.uint8)
  cv2.putText(strip, text, (2, height - 2), _FONT, _FONT_SCALE, color, 1, cv2.LINE_AA)
  return strip


def _paste(canvas: np.ndarray, patch: np.ndarray, top: int, left: int) -> None:
  h = min(patch.shape[0], canvas.shape[0] - top)
  w = min(patch.shape[1], canvas.shape[1] - left)
  canvas[top:top + h, left:left + w] = patch[:h, :w]


def confusion_matrix_image(cm, class_names: Sequence[str], max_label_px: int = 140
                           ) -> np.ndarray:
  """Renders a confusion matrix as an RGB heatmap with counts and class names.

  Rows are true classes (names on the left), columns predictions (names on top, rotated).
  Colour is the row-normalised rate, so each row reads as that class's recall spread.

  Args:
    cm: [C, C] counts, [true][pred].
    class_names: C names.
    max_label_px: longer names are truncated to this many pixels.

  Returns:
    uint8 [H, W, 3] RGB (cv2.imwrite wants BGR: convert first).
  """
  cm = np.asarray(cm, np.int64)
  num_classes = cm.shape[0]
  if cm.shape != (num_classes, num_classes) or len(class_names) != num_classes:
    raise ValueError(f"need a [C, C] matrix and C names; got {cm.shape}, {len(class_names)} names")
  names = [_fit(str(n), max_label_px) for n in class_names]
  cell = max(40, max(_text_size(str(v))[0] for v in cm.flat) + 12)
  label_px = max(_text_size(n)[0] for n in names) + 12
  axis_px = _text_size("predicted")[1] + 10
  top, left, pad = axis_px + label_px, axis_px + label_px, 10
  image = np.full((top + num_classes * cell + pad, left + num_classes * cell + pad, 3), 255,
                  np.uint8)

  rows = cm.sum(axis=1, keepdims=True)
  rates = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
  for t in range(num_classes):
    for p in range(num_classes):
      y, x = top + t * cell, left + p * cell
      color = tuple(int(c) for c in np.round(_LIGHT + rates[t, p] * (_DARK - _LIGHT)))
      cv2.rectangle(image, (x, y), (x + cell - 1, y + cell - 1), color, thickness=-1)
      cv2.rectangle(image, (x, y), (x + cell - 1, y + cell - 1), (200, 200, 200), thickness=1)
      text = str(cm[t, p])
      width, height = _text_size(text)
      ink = (255, 255, 255) if rates[t, p] > 0.5 else (0, 0, 0)
      cv2.putText(image, text, (x + (cell - width) // 2, y + (cell + height) // 2 - 3), _FONT,
                  _FONT_SCALE, ink, 1, cv2.LINE_AA)

  for c, name in enumerate(names):
    row_label = _text_image(name)
    _paste(image, row_label, top + c * cell + (cell - row_label.shape[0]) // 2,
           left - row_label.shape[1] - 4)
    column_label = np.rot90(_text_image(name))  # reads bottom to top
    _paste(image, column_label, top - column_label.shape[0] - 4,
           left + c * cell + (cell - column_label.shape[1]) // 2)
  title = _text_image("predicted")
  _paste(image, title, 2, left + (num_classes * cell - title.shape[1]) // 2)
  side = np.rot90(_text_image("true"))
  _paste(image, side, top + (num_classes * cell - side.shape[0]) // 2, 2)
  return image
