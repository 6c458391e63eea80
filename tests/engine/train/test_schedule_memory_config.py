"""Schedules, the memory estimate and auto batch, precision choice, config checks."""

from __future__ import annotations

import dataclasses
import json

import pytest
import tensorflow as tf

from engine import precision
from engine.config import ExperimentConfig, InputConfig, ModelConfig, TrainConfig
from engine.models import build_model
from engine.train import memory
from engine.train.optim import LearningRate


def test_cosine_with_warmup_and_step_decay():
  cosine = LearningRate(1.0, total_steps=110, warmup_steps=10, kind="cosine")
  assert float(cosine(0)) == pytest.approx(0.1)
  assert float(cosine(10)) == pytest.approx(1.0)
  assert float(cosine(60)) == pytest.approx(0.5)
  assert float(cosine(110)) == pytest.approx(0.0, abs=1e-6)
  step = LearningRate(1.0, total_steps=100, kind="step", decay_steps=(30, 60), decay_factor=0.1)
  assert [round(float(step(s)), 4) for s in (0, 30, 59, 60)] == [1.0, 0.1, 0.1, 0.01]
  scale = tf.Variable(0.5)
  assert float(LearningRate(2.0, 10, kind="plateau", scale=scale)(3)) == pytest.approx(1.0)


def test_memory_estimate_grows_with_batch_and_shrinks_with_bf16():
  model = build_model(ModelConfig("tiny_resnet", image_size=(32, 32)))
  estimate = memory.estimate_memory(model)
  assert estimate.params == sum(int(tf.size(v)) for v in model.trainable_variables)
  assert estimate.total_mb(64) > estimate.total_mb(8) > estimate.weights_mb
  with precision.policy("mixed_bfloat16"):
    half = memory.estimate_memory(build_model(ModelConfig("tiny_resnet", image_size=(32, 32))))
  assert half.activations_mb_per_image == pytest.approx(estimate.activations_mb_per_image / 2)
  assert "GB at batch 64" in estimate.describe(64)


def test_auto_batch_halves_until_a_step_fits():
  tried = []

  def try_step(batch):
    tried.append(batch)
    if batch > 24:
      raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")

  assert memory.find_batch_size(try_step, 128) == 16
  assert tried == [128, 64, 32, 16]
  with pytest.raises(RuntimeError, match="not even batch"):
    memory.find_batch_size(lambda b: try_step(1000), 4)


def test_starting_batch_respects_an_8gb_card():
  estimate = memory.MemoryEstimate(params=25_000_000, weights_mb=400.0,
                                   activations_mb_per_image=90.0)
  assert memory.starting_batch(estimate, 8192.0, 1) == 64
  assert memory.starting_batch(estimate, None, 2) == 128


def test_auto_precision_follows_the_hardware(monkeypatch):
  monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
  assert precision.resolve_precision("auto")[0] == "mixed_bfloat16"
  monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2"})
  policy, why = precision.resolve_precision("auto")
  assert policy == "float32" and "emulated" in why
  assert precision.resolve_precision("mixed_float16") == ("mixed_float16", "requested")


@pytest.mark.parametrize("overrides, message", [
    ({"optimizer": "rmsprop"}, "optimizer"),
    ({"epochs": 0, "train_steps": 0}, "epochs or train_steps"),
    ({"strategy": "mirrored", "cpu_devices": 2, "precision": "mixed_float16"}, "contradicts"),
    ({"profile_steps": (5, 3)}, "profile_steps"),
    ({"label_smoothing": 1.5}, "label_smoothing"),
])
def test_train_config_rejects_bad_values(overrides, message):
  with pytest.raises(ValueError, match=message):
    TrainConfig(**overrides).validate()


def test_experiment_config_round_trips_through_json(tmp_path):
  config = ExperimentConfig(InputConfig(str(tmp_path), image_size=(48, 48)),
                            ModelConfig("tiny_resnet", image_size=(48, 48)),
                            TrainConfig(profile_steps=(2, 4)))
  again = ExperimentConfig.from_dict(json.loads(config.to_json()))
  assert again == config
  assert dataclasses.replace(again.train, seed=1) != config.train


def test_a_run_from_before_a_new_config_field_still_resumes(tmp_path):
  """config.json written before a field existed counts that field at its default."""
  from engine.run.run_dir import prepare_run_dir
  config = ExperimentConfig(InputConfig(str(tmp_path)), ModelConfig("tiny_resnet"),
                            TrainConfig(model_dir=str(tmp_path)))
  old = json.loads(config.to_json())
  del old["input"]["on_bad_record"], old["input"]["verify_shards"], old["input"]["augment_on"]
  with open(tmp_path / "config.json", "w") as f:
    json.dump(old, f)
  prepare_run_dir(config, chief=True)  # resumes
  # The trainer writes what augment_on=auto resolved to; either place applies the same draws.
  prepare_run_dir(dataclasses.replace(config, input=dataclasses.replace(
      config.input, augment_on="device")), chief=True)
  changed = dataclasses.replace(config, input=dataclasses.replace(config.input,
                                                                  on_bad_record="skip"))
  with pytest.raises(ValueError, match="on_bad_record: 'error' -> 'skip'"):
    prepare_run_dir(changed, chief=True)
