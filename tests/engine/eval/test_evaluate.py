"""engine.eval.evaluate on a tiny run directory, and `python -m launch.evaluate`."""

import dataclasses
import glob
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from engine.data.manifest import read_manifest
from engine.data.pipeline import make_dataset
from engine.config import ExperimentConfig, InputConfig, ModelConfig, TrainConfig
from engine.eval import framing, metrics
from engine.eval.evaluate import EvalConfig, evaluate, format_report
from engine.models import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _make_run(model_dir, shards, task="attribute", num_outputs=1):
  """A run directory as the trainer leaves it: config.json, best/model.weights.h5 and
  best/metrics.json (the step of the best weights: 12)."""
  model_config = ModelConfig("tiny_resnet", image_size=(32, 32), num_outputs=num_outputs)
  experiment = ExperimentConfig(
      input=InputConfig(shards, task=task, image_size=(32, 32), global_batch_size=8),
      model=model_config, train=TrainConfig(model_dir=str(model_dir)))
  os.makedirs(os.path.join(model_dir, "best"))
  with open(os.path.join(model_dir, "config.json"), "w") as f:
    f.write(experiment.to_json())
  model = build_model(model_config)
  model.save_weights(os.path.join(model_dir, "best", "model.weights.h5"))
  with open(os.path.join(model_dir, "best", "metrics.json"), "w") as f:
    json.dump({"step": 12}, f)
  return str(model_dir), model


@pytest.fixture(scope="module")
def run(celeba_shards, tmp_path_factory):
  return _make_run(tmp_path_factory.mktemp("run") / "male", celeba_shards)


def test_every_example_once_with_slices_json_and_png(run, celeba_shards, tmp_path):
  model_dir, model = run
  output_json = str(tmp_path / "report.json")
  report = evaluate(EvalConfig(model_dir, celeba_shards, split="validation", batch_size=5,
                               output_json=output_json))
  count = read_manifest(celeba_shards)["splits"]["validation"]["num_examples"]
  numbers = report["metrics"]
  assert report["num_examples"] == numbers["num_examples"] == count == 32  # 7 batches, 3 padded
  assert np.sum(numbers["confusion_matrix"]) == count
  slices = report["slices"]
  for name in ("Eyeglasses", "Smiling", "Young"):
    assert sum(s["count"] for s in slices["by_attribute"][name].values()) == count
  assert "Male" not in slices["by_attribute"]  # the label: shown by class instead
  assert sum(s["count"] for s in slices["by_class"].values()) == count
  assert sum(s["count"] for s in slices["by_attribute"]["identity_examples"].values()) == count

  # The numbers are the model's own: one unpadded batch through Keras gives the same accuracy.
  images, labels, _ = next(iter(make_dataset(InputConfig(
      celeba_shards, split="validation", image_size=(32, 32), global_batch_size=32,
      training=False))))
  predictions = (model(images, training=False).numpy()[:, 0] > 0).astype(int)
  assert numbers["accuracy"] == pytest.approx(np.mean(predictions == labels.numpy()))

  with open(output_json) as f:
    assert json.load(f)["metrics"]["confusion_matrix"] == numbers["confusion_matrix"]
  out_dir = os.path.join(model_dir, "eval_validation")
  png = cv2.imread(os.path.join(out_dir, "confusion_matrix.png"))
  assert png is not None and png.shape[2] == 3
  assert glob.glob(os.path.join(out_dir, "events.out.tfevents.*"))
  assert report["checkpoint_step"] == 12  # TensorBoard's point is at the weights' own step
  # The run chose these weights on this very split: the report and the console say so.
  assert report["selection"] == {"monitor": "val_accuracy", "split": "validation",
                                 "data_dir": celeba_shards, "on_scored_split": True}
  assert "lean optimistic; --checkpoint=latest" in format_report(report)


def test_best_weights_on_another_split_or_other_weights_carry_no_selection_note(run, tmp_path):
  model_dir, model = run
  best = os.path.join(model_dir, "best", "model.weights.h5")
  report = evaluate(EvalConfig(model_dir, split="test", batch_size=16))
  assert report["selection"]["on_scored_split"] is False
  assert "optimistic" not in format_report(report)
  other = str(tmp_path / "elsewhere.weights.h5")  # the same weights, not the run's best file
  model.save_weights(other)
  report = evaluate(EvalConfig(model_dir, split="validation", batch_size=16, checkpoint=other))
  assert report["selection"] is None and "optimistic" not in format_report(report)
  assert report["checkpoint_path"] == other != best


def test_flip_tta_and_missing_checkpoint(run, celeba_shards):
  model_dir, _ = run
  report = evaluate(EvalConfig(model_dir, split="test", batch_size=16, flip_tta=True))
  assert report["num_examples"] == 32 and report["data_dir"] == celeba_shards
  with pytest.raises(FileNotFoundError, match="no training checkpoint"):
    evaluate(EvalConfig(model_dir, celeba_shards, checkpoint="latest"))


def test_multilabel_run(celeba_shards, tmp_path):
  model_dir, _ = _make_run(tmp_path / "attrs", celeba_shards, task="attributes", num_outputs=4)
  report = evaluate(EvalConfig(model_dir, celeba_shards, split="validation", batch_size=6))
  numbers = report["metrics"]
  assert numbers["num_examples"] == 32
  assert set(numbers["per_attribute"]) == {"Eyeglasses", "Male", "Smiling", "Young"}
  assert 0.0 <= numbers["mean_accuracy"] <= 1.0


def test_launch_evaluate_as_a_user_runs_it(run, tmp_path):
  model_dir, _ = run
  output_json = str(tmp_path / "cli.json")
  result = subprocess.run(
      [sys.executable, "-m", "launch.evaluate", f"--model_dir={model_dir}", "--split=validation",
       "--batch_size=5", f"--output_json={output_json}"],
      capture_output=True, text=True, cwd=ROOT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert result.returncode == 0, result.stderr
  assert "weighted avg" in result.stdout and "Eyeglasses=1" in result.stdout
  with open(output_json) as f:
    assert json.load(f)["num_examples"] == 32
  usage = subprocess.run([sys.executable, "-m", "launch.evaluate"], capture_output=True,
                         text=True, cwd=ROOT)
  assert usage.returncode != 0 and "--model_dir is required" in usage.stderr


def test_identity_run(celeba_shards, tmp_path):
  identities = len(read_manifest(celeba_shards)["identities"])
  model_dir, _ = _make_run(tmp_path / "ids", celeba_shards, task="identity", num_outputs=identities)
  report = evaluate(EvalConfig(model_dir, celeba_shards, split="train", batch_size=32))
  numbers = report["metrics"]
  assert numbers["num_examples"] == 96 and report["num_unknown_identity"] == 0
  assert numbers["accuracy"] <= numbers["top5_accuracy"]
  assert np.sum(numbers["confusion_matrix"]) == 96
  with pytest.raises(ValueError, match="identity-disjoint"):  # as CelebA's official splits are
    evaluate(EvalConfig(model_dir, celeba_shards, split="validation"))


def test_a_damaged_split_is_named_or_skipped_and_counted(run, celeba_shards, tmp_path):
  import shutil
  from engine.data.integrity import ShardIntegrityError
  from tests.engine.data.damage import flip_byte, record_starts
  model_dir, _ = run
  copy = str(tmp_path / "shards")
  shutil.copytree(celeba_shards, copy)
  shard = sorted(glob.glob(os.path.join(copy, "*-validation.tfrecord-*")))[0]
  flip_byte(shard, record_starts(shard)[2] + 40)
  with pytest.raises(ShardIntegrityError, match="do not match manifest.json"):
    evaluate(EvalConfig(model_dir, copy, split="validation"))
  with pytest.raises(ShardIntegrityError, match=f"{shard}: record 2 .*unreadable"):
    evaluate(EvalConfig(model_dir, copy, split="validation", verify_shards="off"))
  report = evaluate(EvalConfig(model_dir, copy, split="validation", verify_shards="off",
                               on_bad_record="skip"))
  # The bad record and the rest of its shard are lost; the report says so.
  assert report["manifest_examples"] == 32 and 0 < report["num_examples"] < 32
  assert report["skipped_examples"] == 32 - report["num_examples"]
  assert report["metrics"]["num_examples"] == report["num_examples"]


def test_slices_ranked_with_intervals_in_json_console_and_tensorboard(run, celeba_shards,
                                                                     tmp_path, capsys):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  model_dir, _ = run
  output_json = str(tmp_path / "report.json")
  report = evaluate(EvalConfig(model_dir, celeba_shards, split="train", batch_size=32,
                               output_json=output_json))
  ranking = report["fairness"]
  rows = ranking["ranked"] + ranking["too_few"]
  assert sorted(r["slice"] for r in rows) == sorted(
      f"{name}={value}" for name, values in report["slices"]["by_attribute"].items()
      for value in values)
  assert all(r["count"] >= 30 for r in ranking["ranked"]) and ranking["ranked"]
  assert all(r["count"] < 30 for r in ranking["too_few"])
  gaps = [r["gap"] for r in ranking["ranked"]]
  assert gaps == sorted(gaps, reverse=True)
  assert all(r["ci_low"] <= r["error"] <= r["ci_high"] for r in rows)
  assert ranking["overall_error"] == pytest.approx(1 - report["metrics"]["accuracy"])
  with open(output_json) as f:
    assert json.load(f)["fairness"]["ranked"][0]["slice"] == ranking["ranked"][0]["slice"]
  assert "error by slice, worst first" in capsys.readouterr().out
  tags = set()
  for path in glob.glob(os.path.join(model_dir, "eval_train", "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      tags.update(v.tag for v in event.summary.value)
  assert {"fairness", "fairness/largest_gap", "slice_error/Eyeglasses=1"} <= tags


def test_framing_curve_starts_from_the_evaluation_itself(run, celeba_shards):
  model_dir, _ = run
  report = evaluate(EvalConfig(model_dir, celeba_shards, split="validation", batch_size=8,
                               framings=("standard",)))
  rows = {r["name"]: r for r in report["framing"]}
  assert set(rows) == {f.name for f in framing.STANDARD_FRAMINGS}
  assert rows["clean"]["accuracy"] == report["metrics"]["accuracy"]
  assert rows["clean"]["drop_points"] == 0.0
  for name, row in rows.items():
    assert row["examples"] == 32
    assert row["drop_points"] == pytest.approx(
        100 * (rows["clean"]["accuracy"] - row["accuracy"]))
  with pytest.raises(ValueError, match="unknown framing"):
    evaluate(EvalConfig(model_dir, celeba_shards, split="validation", framings=("askew",)))


def test_an_ensemble_averages_the_members_logits_and_refuses_other_inputs(
    run, celeba_shards, tmp_path):
  model_dir, model = run
  other_dir, other = _make_run(tmp_path / "other", celeba_shards)
  report = evaluate(EvalConfig(model_dir, split="test", batch_size=16, flip_tta=True,
                               ensemble=(other_dir,)))
  assert [m["model_dir"] for m in report["ensemble"]] == [other_dir]
  assert report["ensemble"][0]["checkpoint_step"] == 12
  assert os.path.exists(os.path.join(model_dir, "eval_test_ensemble2"))
  images, labels = [], []
  for batch, batch_labels, mask in make_dataset(InputConfig(
      celeba_shards, split="test", image_size=(32, 32), global_batch_size=16, training=False)):
    keep = mask.numpy().astype(bool)
    images.append(batch.numpy()[keep])
    labels.append(batch_labels.numpy()[keep])
  images, labels = np.concatenate(images), np.concatenate(labels)
  views = [images, images[:, :, ::-1]]
  logits = np.mean([m(v, training=False).numpy() for m in (model, other) for v in views], 0)
  assert report["metrics"]["roc_auc"] == pytest.approx(metrics.roc_auc(labels, logits[:, 0]))
  alone = evaluate(EvalConfig(model_dir, split="test", batch_size=16, flip_tta=True))
  assert alone["metrics"]["roc_auc"] != report["metrics"]["roc_auc"]

  small_dir, _ = _make_run(tmp_path / "small", celeba_shards)
  config_path = os.path.join(small_dir, "config.json")
  experiment = ExperimentConfig.from_dict(json.load(open(config_path)))
  with open(config_path, "w") as f:
    f.write(dataclasses.replace(experiment, input=dataclasses.replace(
        experiment.input, crop_box=(0.1, 0.0, 0.8, 1.0))).to_json())
  with pytest.raises(ValueError, match="small reads crop_box"):
    evaluate(EvalConfig(model_dir, split="test", ensemble=(small_dir,)))
