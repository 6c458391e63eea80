"""The trainer end to end on tiny shards: learning, TensorBoard, best export, hooks, precisions."""

from __future__ import annotations

import dataclasses
import glob
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import config as tf_config
from tensorboard.backend.event_processing import event_accumulator

from engine.data.integrity import ShardIntegrityError
from engine.train import train
from engine.train.hooks import NonFiniteLossError
from engine.run.restore import load_model
from tests.engine.data.damage import flip_byte, record_starts
from tests.engine.train.conftest import tiny_experiment


def _scalars(log_dir: str) -> dict[str, list[tuple[int, float]]]:
  acc = event_accumulator.EventAccumulator(log_dir, size_guidance={"tensors": 0, "images": 0})
  acc.Reload()
  out = {}
  for tag in acc.Tags()["tensors"]:
    values = [(e.step, tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]
    if values and values[0][1].ndim == 0 and values[0][1].dtype.kind == "f":
      out[tag] = [(step, float(value)) for step, value in values]
  return out


def _tags(log_dir: str) -> set[str]:
  acc = event_accumulator.EventAccumulator(log_dir, size_guidance={"tensors": 0, "images": 0})
  acc.Reload()
  return set(acc.Tags()["tensors"])


def test_loss_decreases_and_validation_learns(trained_run):
  config, summary = trained_run
  losses = [v for _, v in _scalars(os.path.join(config.train.model_dir, "train"))["loss"]]
  assert losses[-1] < 0.8 * losses[0]
  assert summary["step"] == 36 and summary["stopped_by"] == "completed"
  assert summary["final_metrics"]["val_accuracy"] >= 0.8
  assert summary["final_metrics"]["val_examples"] == 32  # every validation face once


def test_tensorboard_has_the_documented_tags(trained_run):
  config, _ = trained_run
  train_tags = _tags(os.path.join(config.train.model_dir, "train"))
  assert {"loss", "accuracy", "learning_rate", "images_per_sec", "step_time_ms",
          "input_wait_fraction", "system/host/cpu_pct"} <= train_tags
  assert "_hparams_/session_start_info" in train_tags
  eval_tags = _tags(os.path.join(config.train.model_dir, "eval"))
  assert {"accuracy", "loss", "f1_macro", "auc", "confusion_matrix", "samples"} <= eval_tags


def test_best_checkpoint_is_the_best_evaluation(trained_run):
  config, summary = trained_run
  history = _scalars(os.path.join(config.train.model_dir, "eval"))["accuracy"]
  best_step, best_value = max(history, key=lambda sv: (sv[1], -sv[0]))
  with open(os.path.join(config.train.model_dir, "best", "metrics.json")) as f:
    best = json.load(f)
  assert best["step"] == best_step
  assert best["val_accuracy"] == pytest.approx(best_value)
  assert summary["best"]["best_step"] == best_step


def test_restored_model_reproduces_validation_accuracy(trained_run):
  config, _ = trained_run
  model, restored_config, _ = load_model(config.train.model_dir, "best")
  assert restored_config.model.num_outputs == 1
  with open(os.path.join(config.train.model_dir, "best", "metrics.json")) as f:
    best = json.load(f)
  from engine.train.evaluation import Evaluator
  from engine.train.task import TaskSpec
  metrics_again = Evaluator(restored_config, model).run(
      0, _NoSummaries())
  assert metrics_again["val_accuracy"] == pytest.approx(best["val_accuracy"])


@pytest.mark.parametrize("checkpoint", ["latest", "36", "prefix"])
def test_latest_checkpoint_holds_the_final_weights(trained_run, checkpoint):
  """The trainer's final weights, bit for bit, however the checkpoint is named."""
  from engine.train.loop import weights_fingerprint
  config, summary = trained_run
  if checkpoint == "prefix":
    checkpoint = os.path.join(config.train.model_dir, "checkpoints", "ckpt-36")
  model, _, source = load_model(config.train.model_dir, checkpoint)
  assert source.step == 36 and not source.ema
  assert weights_fingerprint(model) == summary["weights_sha256"]


def test_evaluating_latest_reproduces_the_final_validation_and_logs_its_step(trained_run):
  from engine.eval.evaluate import EvalConfig, evaluate
  config, summary = trained_run
  report = evaluate(EvalConfig(config.train.model_dir, split="validation", checkpoint="latest"))
  assert report["checkpoint_step"] == 36
  assert report["metrics"]["accuracy"] == pytest.approx(summary["final_metrics"]["val_accuracy"])
  assert report["metrics"]["loss"] == pytest.approx(summary["final_metrics"]["val_loss"], rel=1e-5)
  steps = {step for step, _ in _scalars(os.path.join(config.train.model_dir,
                                                     "eval_validation"))["accuracy"]}
  assert steps == {36}


class _NoSummaries:
  def scalars(self, *args, **kwargs):
    pass

  def image(self, *args, **kwargs):
    pass


def test_rerun_of_a_finished_run_trains_nothing_more(trained_run):
  config, summary = trained_run
  again = train(config)
  assert again["step"] == summary["step"]
  assert again["weights_sha256"] == summary["weights_sha256"]
  assert again["final_metrics"] == summary["final_metrics"] and summary["final_metrics"]


def test_rerun_with_another_config_is_refused(trained_run):
  config, _ = trained_run
  other = dataclasses.replace(config, train=dataclasses.replace(config.train, learning_rate=0.5))
  with pytest.raises(ValueError, match="different configuration.*learning_rate"):
    train(other)


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precisions_train(celeba_shards, tmp_path, precision):
  summary = train(tiny_experiment(celeba_shards, str(tmp_path), precision=precision, epochs=1))
  assert summary["precision"] == precision
  assert np.isfinite(summary["final_metrics"]["val_loss"])


def test_xla_compiled_step(celeba_shards, tmp_path):
  summary = train(tiny_experiment(celeba_shards, str(tmp_path), jit_compile="true", epochs=2,
                                  ema_decay=0.9, eval_flip=True))
  assert summary["jit_compile"] is True
  assert summary["final_metrics"]["val_accuracy"] >= 0.7


def test_non_finite_loss_stops_naming_the_step(celeba_shards, tmp_path):
  config = tiny_experiment(celeba_shards, str(tmp_path), optimizer="sgd", learning_rate=1e30,
                           schedule="constant", epochs=2, checkpoint_every=4)
  with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step \d+"):
    train(config)


def _inject_nan_at_step(monkeypatch, bad_step: int) -> None:
  """Makes the loss of training step `bad_step` (counted from 1) NaN, in the compiled step."""
  from engine.tasks import AttributeTask
  calls = tf.Variable(0, dtype=tf.int64, trainable=False)
  real_loss = AttributeTask.per_example_loss

  def loss_with_a_nan(self, labels, logits, num_outputs, smoothing):
    calls.assign_add(1)
    nan = tf.where(calls == bad_step, float("nan"), 0.0)
    return real_loss(self, labels, logits, num_outputs, smoothing) + nan

  monkeypatch.setattr(AttributeTask, "per_example_loss", loss_with_a_nan)


@pytest.mark.parametrize("precision", ["float32", "mixed_float16"])
def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(celeba_shards, tmp_path,
                                                                     monkeypatch, precision):
  _inject_nan_at_step(monkeypatch, 6)
  config = tiny_experiment(celeba_shards, str(tmp_path), precision=precision, epochs=2,
                           checkpoint_every=4, eval_every=4)
  with pytest.raises(NonFiniteLossError, match=r"step 6: .*ckpt-4"):
    train(config)
  assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-4")
  model, _, source = load_model(str(tmp_path), "latest")
  assert source.step == 4
  assert all(np.isfinite(w).all() for w in model.get_weights())


def test_early_stopping(celeba_shards, tmp_path):
  # A frozen backbone (batch norm in inference mode too) and a rate this small cannot
  # change accuracy: the second evaluation is no better.
  config = tiny_experiment(celeba_shards, str(tmp_path), learning_rate=1e-12, schedule="constant",
                           epochs=10, early_stopping_patience=1, eval_every=4)
  config = dataclasses.replace(config, model=dataclasses.replace(config.model, finetune="frozen"))
  summary = train(config)
  assert summary["stopped_by"].startswith("early stopping")
  assert summary["step"] == 8


def test_multilabel_task(celeba_shards, tmp_path):
  config = tiny_experiment(celeba_shards, str(tmp_path), epochs=1, monitor="val_loss")
  config = dataclasses.replace(config, input=dataclasses.replace(config.input, task="attributes"))
  summary = train(config)
  assert np.isfinite(summary["final_metrics"]["val_loss"])


def test_an_unreported_monitor_fails_before_step_0(celeba_shards, tmp_path):
  config = tiny_experiment(celeba_shards, str(tmp_path), epochs=1, monitor="val_f1_macro")
  config = dataclasses.replace(config, input=dataclasses.replace(config.input, task="attributes"))
  with pytest.raises(ValueError, match="val_f1_macro is not reported by --task=attributes"):
    train(config)
  assert not os.path.exists(tmp_path / "config.json")


def test_identity_task(celeba_shards, tmp_path):
  # CelebA's splits share no identities, so this evaluates on train identities.
  config = tiny_experiment(celeba_shards, str(tmp_path), epochs=1, monitor="val_loss")
  config = dataclasses.replace(config, input=dataclasses.replace(config.input, task="identity"),
                               eval_split="train")
  summary = train(config)
  assert np.isfinite(summary["final_metrics"]["val_loss"])
  assert summary["final_metrics"]["val_examples"] == 96


def test_identity_on_disjoint_split_is_a_clear_error(celeba_shards, tmp_path):
  config = tiny_experiment(celeba_shards, str(tmp_path), epochs=1, monitor="val_loss")
  config = dataclasses.replace(config, input=dataclasses.replace(config.input, task="identity"))
  with pytest.raises(ValueError, match="identity-disjoint"):
    train(config)


def test_profile_steps_write_a_trace(celeba_shards, tmp_path):
  train(tiny_experiment(celeba_shards, str(tmp_path), epochs=1, profile_steps=(2, 6)))
  traces = [f for _, _, files in os.walk(tmp_path / "profile") for f in files]
  assert any(f.endswith(".xplane.pb") for f in traces)


def test_batch_size_trial_is_the_real_compiled_step(celeba_shards, tmp_path, monkeypatch):
  """The auto batch size's trial runs the training step itself: configured optimizer with
  its slots, EMA, XLA as the run resolves it (here on the CPU, where XLA also compiles)."""
  from engine.train import loop
  seen = {}
  real_step = loop.make_train_step

  def spy(spec, model, optimizer, batch, ema=None):
    seen.update(optimizer=optimizer, slots=len(optimizer.variables), ema=ema, batch=batch)
    return real_step(spec, model, optimizer, batch, ema)

  monkeypatch.setattr(loop, "make_train_step", spy)
  config = tiny_experiment(celeba_shards, str(tmp_path), ema_decay=0.9, optimizer="adamw")
  config = dataclasses.replace(config, model=dataclasses.replace(config.model, num_outputs=1))
  loop.trial_step(config, 4, "float32", use_jit=True)
  assert type(seen["optimizer"]).__name__ == "FusedAdamW" and seen["batch"] == 4
  assert seen["slots"] > 2 * len(seen["ema"].sources)  # m and v per weight, built before


def test_a_second_trainer_on_a_locked_run_directory_is_refused(celeba_shards, tmp_path):
  from engine.run.lock import RunLock, RunLockedError
  holder = RunLock(str(tmp_path)).acquire()
  try:
    with pytest.raises(RunLockedError, match="in use by another trainer"):
      train(tiny_experiment(celeba_shards, str(tmp_path), epochs=1))
    assert not os.path.exists(tmp_path / "config.json")
  finally:
    holder.release()


def _damaged_copy(shards: str, tmp_path) -> tuple[str, str]:
  """A copy of the shards with one byte flipped inside record 3 of the first train shard."""
  import shutil
  copy = str(tmp_path / "shards")
  shutil.copytree(shards, copy)
  shard = sorted(glob.glob(os.path.join(copy, "*-train.tfrecord-00000-*")))[0]
  flip_byte(shard, record_starts(shard)[3] + 40)
  return copy, shard


def test_a_changed_shard_is_refused_before_training(celeba_shards, tmp_path):
  copy, shard = _damaged_copy(celeba_shards, tmp_path)
  with pytest.raises(ShardIntegrityError, match=f"(?s)do not match manifest.json.*{os.path.basename(shard)}: same size.*differ"):
    train(tiny_experiment(copy, str(tmp_path / "run"), epochs=1))
  assert not os.path.exists(tmp_path / "run" / "config.json")


def test_a_corrupt_record_met_in_training_names_the_shard_and_record(celeba_shards, tmp_path):
  copy, shard = _damaged_copy(celeba_shards, tmp_path)
  config = tiny_experiment(copy, str(tmp_path / "run"), epochs=1)
  config = dataclasses.replace(config, input=dataclasses.replace(
      config.input, verify_shards="off", cache="none"))
  with pytest.raises(ShardIntegrityError, match=f"{shard}: record 3 .*unreadable"):
    train(config)


@pytest.mark.slow
def test_device_augmentation_resumes_bit_identical_and_compiles_in_the_xla_step(
    celeba_shards, tmp_path):
  """Stopped at step 8 and resumed, a deterministic run augmenting on the device ends with
  the weights of an uninterrupted one; the whole step also compiles with XLA (not under
  determinism: XLA has no deterministic MaxPool gradient)."""
  augment = dataclasses.replace(tiny_experiment("", "").input.augment, rotation_deg=15,
                                zoom=0.1, erasing_prob=0.5)

  def config(model_dir, steps, deterministic=True, **train_overrides):
    # A constant rate: a cosine schedule would follow train_steps, which differs here.
    base = tiny_experiment(celeba_shards, model_dir, train_steps=steps, schedule="constant",
                           deterministic=deterministic, checkpoint_every=8, **train_overrides)
    return dataclasses.replace(base, input=dataclasses.replace(
        base.input, augment=augment, augment_on="device", deterministic=deterministic))

  xla = train(config(str(tmp_path / "xla"), 8, deterministic=False, jit_compile="true"))
  assert xla["jit_compile"] is True and np.isfinite(xla["final_metrics"]["val_loss"])
  try:
    whole = train(config(str(tmp_path / "whole"), 16))
    train(config(str(tmp_path / "resumed"), 8))
    resumed = train(config(str(tmp_path / "resumed"), 16))
  finally:  # the trainer turns op determinism on for the whole process
    tf_config.disable_op_determinism()
  assert resumed["processes"] == 2 and resumed["step"] == 16
  assert resumed["weights_sha256"] == whole["weights_sha256"]
