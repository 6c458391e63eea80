"""The task registry: each task's labels, loss, probabilities and monitors, and how a new
task plugs in without touching the pipeline, the step or the evaluator."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from engine.config import AugmentConfig, ExperimentConfig, InputConfig, ModelConfig, TrainConfig
from engine.data.manifest import read_manifest
from engine.data.pipeline import make_dataset
from engine.models import build_model
from engine.tasks import TASKS, AttributesTask
from engine.train.task import TaskSpec, make_train_step


@pytest.mark.parametrize("task, monitor, num_classes, present, message", [
    ("attributes", "val_f1_macro", 4, None, "not reported by --task=attributes"),
    ("attributes", "val_auc", 4, None, "not reported by --task=attributes"),
    ("attribute", "val_auc", 2, 1, "AUC needs 2 to"),
    ("identity", "val_auc", 5000, None, "the task has 5000"),
])
def test_a_monitor_the_task_cannot_report_is_refused(task, monitor, num_classes, present,
                                                      message):
  with pytest.raises(ValueError, match=message):
    TASKS.get(task).check_monitor(monitor, num_classes, present, "validation")


@pytest.mark.parametrize("task, monitor", [("attributes", "val_loss"), ("attribute", "val_auc"),
                                           ("identity", "val_f1_macro")])
def test_monitors_the_task_reports_pass(task, monitor):
  TASKS.get(task).check_monitor(monitor, 2, 2, "validation")


def test_an_unknown_task_lists_the_known_ones():
  with pytest.raises(KeyError, match="known: attribute, attributes, identity"):
    TASKS.get("age")


def test_probabilities_follow_each_output_kind():
  logits = np.array([[0.0], [2.0]])
  binary = TASKS.get("attribute").probabilities(logits).numpy()
  np.testing.assert_allclose(binary[:, 1], 1 / (1 + np.exp(-logits[:, 0])))
  np.testing.assert_allclose(binary.sum(axis=1), 1.0)
  softmax = TASKS.get("identity").probabilities(np.array([[1.0, 2.0, 3.0]])).numpy()
  np.testing.assert_allclose(softmax[0], np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum())
  multilabel = TASKS.get("attributes").probabilities(np.array([[0.0, 100.0]])).numpy()
  np.testing.assert_allclose(multilabel, [[0.5, 1.0]])
  assert binary.dtype == np.float64  # numpy float64 in, float64 out


def test_losses_are_the_cross_entropies():
  logits = tf.constant([[1.5], [-0.5]])
  labels = tf.constant([1, 0])
  loss = TASKS.get("attribute").per_example_loss(labels, logits, 1, 0.0).numpy()
  np.testing.assert_allclose(loss, [np.log1p(np.exp(-1.5)), np.log1p(np.exp(-0.5))], rtol=1e-6)
  logits3 = tf.constant([[1.0, 2.0, 0.5]])
  loss3 = TASKS.get("identity").per_example_loss(tf.constant([1]), logits3, 3, 0.0).numpy()
  np.testing.assert_allclose(loss3, -np.log(np.exp(2.0) / np.exp([1.0, 2.0, 0.5]).sum()),
                             rtol=1e-6)


class _SmilingAndMale(AttributesTask):
  """A new task for the test: two chosen attributes as a multi-label pair."""

  name = "smiling_and_male"
  _PAIR = ("Smiling", "Male")

  def num_classes(self, manifest, label_attribute):
    return len(self._PAIR)

  def class_names(self, manifest, label_attribute):
    return list(self._PAIR)

  def label_features(self, manifest, label_attribute):
    return {f"attributes/{name}": tf.io.FixedLenFeature([], tf.int64) for name in self._PAIR}


def test_a_new_task_is_one_class(celeba_shards, monkeypatch):
  """Registered, the pipeline reads its labels and the step trains on its loss, unchanged."""
  monkeypatch.setitem(TASKS._entries, "smiling_and_male", _SmilingAndMale())
  manifest = read_manifest(celeba_shards)
  task = TASKS.get("smiling_and_male")
  images, labels = next(iter(make_dataset(InputConfig(
      celeba_shards, task="smiling_and_male", image_size=(32, 32), global_batch_size=8,
      augment=AugmentConfig(flip=True)))))
  assert labels.shape == (8, 2) and labels.dtype == tf.float32
  model = build_model(ModelConfig("tiny_resnet", image_size=(32, 32),
                                  num_outputs=task.num_outputs(task.num_classes(manifest, ""))))
  import keras
  optimizer = keras.optimizers.Adam(1e-3)
  optimizer.build(model.trainable_variables)
  sums = make_train_step(TaskSpec(task, 2), model, optimizer, 8)(images, labels)
  assert np.isfinite(float(sums["loss_sum"])) and float(sums["count"]) == 8
