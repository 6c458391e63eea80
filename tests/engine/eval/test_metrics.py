"""engine.eval.metrics on small cases computed by hand."""

import numpy as np
import pytest

from engine.eval import metrics

# Binary: 4 positives, 6 negatives; p = 0.6 is tied between a positive and a negative.
LABELS = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
P = np.array([0.9, 0.7, 0.6, 0.3, 0.6, 0.4, 0.2, 0.1, 0.8, 0.05])
PROBS = np.stack([1 - P, P], axis=1)


def test_binary_report_by_hand():
  m = metrics.classification_metrics(LABELS, PROBS, ["no", "yes"])
  # predictions 1 1 1 0 | 1 0 0 0 1 0  ->  TN 4, FP 2, FN 1, TP 3
  assert m["confusion_matrix"] == [[4, 2], [1, 3]]
  assert m["num_examples"] == 10 and m["accuracy"] == pytest.approx(0.7)
  assert m["per_class"]["yes"] == pytest.approx(
      {"precision": 3 / 5, "recall": 3 / 4, "f1": 2 / 3, "support": 4})
  assert m["per_class"]["no"] == pytest.approx(
      {"precision": 4 / 5, "recall": 4 / 6, "f1": 8 / 11, "support": 6})
  assert m["f1_macro"] == pytest.approx((8 / 11 + 2 / 3) / 2)
  assert m["weighted_avg"]["f1"] == pytest.approx(0.6 * 8 / 11 + 0.4 * 2 / 3)
  # Positive-over-negative pairs: 6 + 5 + (4 + 1/2 for the tie) + 3 = 18.5 of 24.
  assert m["roc_auc"] == pytest.approx(18.5 / 24)
  true_p = np.where(LABELS == 1, P, 1 - P)
  assert m["loss"] == pytest.approx(-np.log(true_p).mean())
  assert "top5_accuracy" not in m


def test_mask_drops_padding():
  labels = np.r_[LABELS, 1, 1, 0]
  probs = np.r_[PROBS, [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]]  # all wrong, all padding
  masked = metrics.classification_metrics(labels, probs, ["no", "yes"],
                                          mask=np.r_[np.ones(10), 0, 0, 0])
  assert masked == metrics.classification_metrics(LABELS, PROBS, ["no", "yes"])


def test_three_classes_by_hand():
  labels = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2])
  predictions = np.array([0, 1, 1, 1, 2, 2, 2, 0, 1])
  probs = 0.1 + 0.7 * np.eye(3)[predictions]
  m = metrics.classification_metrics(labels, probs, ["a", "b", "c"])
  assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 1], [1, 1, 2]]
  assert m["accuracy"] == pytest.approx(5 / 9)
  expected = {"a": (1 / 2, 1 / 2, 1 / 2, 2), "b": (2 / 4, 2 / 3, 4 / 7, 3),
              "c": (2 / 3, 2 / 4, 4 / 7, 4)}  # precision, recall, F1, support
  for name, (precision, recall, f1, support) in expected.items():
    assert m["per_class"][name] == pytest.approx(
        {"precision": precision, "recall": recall, "f1": f1, "support": support})
  assert m["macro_avg"]["f1"] == pytest.approx((1 / 2 + 4 / 7 + 4 / 7) / 3)
  assert m["weighted_avg"]["f1"] == pytest.approx(5 / 9)
  # One-vs-rest with ties (scores 0.8 / 0.1): a 9.5/14, b 12/18, c 13/20.
  assert m["roc_auc"] == pytest.approx((9.5 / 14 + 12 / 18 + 13 / 20) / 3)


def test_never_predicted_class_has_zero_precision():
  m = metrics.classification_metrics([0, 1, 2], np.eye(3)[[0, 1, 1]], ["a", "b", "c"])
  assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
  assert m["macro_avg"]["precision"] == pytest.approx((1 + 0.5 + 0) / 3)


def test_top5_and_bad_labels():
  probs = np.tile(np.arange(7, 0, -1) / 28.0, (2, 1))  # class 0 most likely, 6 least
  m = metrics.classification_metrics([2, 6], probs, list("abcdefg"))
  assert m["top5_accuracy"] == 0.5 and m["accuracy"] == 0.0
  with pytest.raises(ValueError, match="labels must be in"):
    metrics.classification_metrics([0, 7], probs, list("abcdefg"))


def test_roc_auc_edge_cases():
  assert metrics.roc_auc([1, 1], [0.2, 0.3]) is None
  assert metrics.roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
  assert metrics.roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0


def test_multilabel():
  labels = np.array([[1, 0], [0, 0], [1, 1], [1, 1]])
  probs = np.array([[0.9, 0.2], [0.6, 0.1], [0.4, 0.7], [0.0, 0.0]])
  m = metrics.multilabel_metrics(labels, probs, ["Smiling", "Young"], mask=[1, 1, 1, 0])
  assert m["num_examples"] == 3
  assert m["per_attribute"]["Smiling"]["accuracy"] == pytest.approx(1 / 3)
  assert m["per_attribute"]["Young"]["accuracy"] == 1.0
  assert m["per_attribute"]["Young"]["roc_auc"] == 1.0
  assert m["mean_accuracy"] == pytest.approx(4 / 6) and m["exact_match"] == pytest.approx(1 / 3)


def test_sliced_error():
  correct = np.array([True, False, True, True, False, False])
  s = metrics.sliced_error(correct, {"Eyeglasses": np.array([0, 0, 0, 1, 1, 1])},
                           labels=np.array([0, 1, 1, 0, 0, 1]), class_names=["a", "b"])
  eyeglasses = s["by_attribute"]["Eyeglasses"]
  assert eyeglasses["0"] == pytest.approx({"error": 1 / 3, "count": 3})
  assert eyeglasses["1"] == pytest.approx({"error": 2 / 3, "count": 3})
  assert s["by_class"]["a"] == pytest.approx({"error": 1 / 3, "count": 3, "recall": 2 / 3})
  assert s["by_class"]["b"] == pytest.approx({"error": 2 / 3, "count": 3, "recall": 1 / 3})


def test_confusion_matrix_image():
  image = metrics.confusion_matrix_image([[9, 1], [0, 5]], ["not Male", "Male"])
  assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
  bigger = metrics.confusion_matrix_image(np.eye(4, dtype=int), list("abcd"))
  assert bigger.shape[0] > image.shape[0] - 10 and bigger.shape[1] > image.shape[1] - 10
  assert (image < 128).any()  # dark cells and text were drawn
  with pytest.raises(ValueError):
    metrics.confusion_matrix_image([[1, 2]], ["a"])


def _random_multiclass(num_examples=300, num_classes=4, seed=0):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, num_examples)
  logits = rng.normal(size=(num_examples, num_classes)) + 1.5 * np.eye(num_classes)[labels]
  probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  return labels, probs


def test_classification_report_matches_sklearn():
  """Our report's numbers are sklearn's; ours only in shape, the mask and the clipped loss."""
  from sklearn import metrics as skm  # pylint: disable=g-import-not-at-top
  labels, probs = _random_multiclass()
  names = ["a", "b", "c", "d"]
  m = metrics.classification_metrics(labels, probs, names)
  report = skm.classification_report(labels, probs.argmax(axis=1), target_names=names,
                                     output_dict=True, zero_division=0.0)
  for name in names:
    assert m["per_class"][name] == pytest.approx(
        {k: report[name][k if k != "f1" else "f1-score"] for k in m["per_class"][name]})
  for ours, theirs in (("macro_avg", "macro avg"), ("weighted_avg", "weighted avg")):
    assert m[ours] == pytest.approx({k: report[theirs][k if k != "f1" else "f1-score"]
                                     for k in m[ours]})
  assert m["accuracy"] == pytest.approx(report["accuracy"])
  assert m["loss"] == pytest.approx(skm.log_loss(labels, probs))  # no probability near 0
  assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, probs, multi_class="ovr"))
  assert m["confusion_matrix"] == skm.confusion_matrix(labels, probs.argmax(axis=1)).tolist()


def test_top5_matches_sklearn():
  from sklearn import metrics as skm  # pylint: disable=g-import-not-at-top
  labels, probs = _random_multiclass(num_classes=9, seed=1)
  m = metrics.classification_metrics(labels, probs, list("abcdefghi"))
  assert m["top5_accuracy"] == pytest.approx(skm.top_k_accuracy_score(labels, probs, k=5))


def test_loss_clips_like_keras_where_sklearn_does_not():
  """A certain mistake costs -log(1e-7) (Keras' epsilon), not infinity or float eps."""
  m = metrics.classification_metrics([1, 0], [[1.0, 0.0], [1.0, 0.0]], ["no", "yes"])
  assert m["loss"] == pytest.approx(-np.log(1e-7) / 2)


def test_multilabel_matches_sklearn():
  from sklearn import metrics as skm  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(2)
  labels = rng.integers(0, 2, (200, 3))
  probs = np.clip(0.35 * labels + rng.uniform(0.0, 0.65, labels.shape), 0.01, 0.99)
  m = metrics.multilabel_metrics(labels, probs, ["x", "y", "z"])
  predicted = probs >= 0.5
  for a, name in enumerate("xyz"):
    stats = m["per_attribute"][name]
    assert stats["f1"] == pytest.approx(skm.f1_score(labels[:, a], predicted[:, a]))
    assert stats["precision"] == pytest.approx(skm.precision_score(labels[:, a], predicted[:, a]))
    assert stats["roc_auc"] == pytest.approx(skm.roc_auc_score(labels[:, a], probs[:, a]))
  assert m["exact_match"] == pytest.approx(skm.accuracy_score(labels, predicted))
  per_column = [skm.log_loss(labels[:, a], probs[:, a]) for a in range(3)]
  assert m["loss"] == pytest.approx(np.mean(per_column))
