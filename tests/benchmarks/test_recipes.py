"""The recipe table trains, evaluates and times each backbone and reports all of it."""

import dataclasses
import json
import os
import signal
import threading
import time

import pytest

from engine.bench import recipes
from engine.bench.recipes import (RecipeTableConfig, SweepStopped, best_candidate, candidates,
                                  run_recipe_table)
from engine.run.restore import load_model
from tests.engine.train.conftest import tiny_experiment
from tests.launch.test_usage import assert_one_line_error, run


def test_one_row_per_backbone_with_accuracy_time_and_latency(celeba_shards, tmp_path,
                                                             monkeypatch):
  out = tmp_path / "recipes.json"
  config = RecipeTableConfig(
      tiny_experiment(celeba_shards, str(tmp_path / "unused"), epochs=2),
      backbones=("tiny_resnet",), work_dir=str(tmp_path / "runs"), latency_iterations=3,
      output_json=str(out))
  report = run_recipe_table(config)
  (row,) = report["rows"]
  assert row["backbone"] == "tiny_resnet" and row["epochs"] == 2
  assert 0.5 <= row["val_accuracy"] <= 1.0 and 0.0 <= row["val_f1_macro"] <= 1.0
  assert set(row["recall_by_class"]) == {"female", "male"}
  assert row["train_minutes"] > 0 and row["train_images_per_sec"] > 0
  assert row["latency_p50_ms"] > 0
  assert "| tiny_resnet |" in report["markdown"]
  assert json.loads(out.read_text())["rows"][0]["model_dir"].endswith("tiny_resnet")

  # Scored with the final weights (the last of 24 steps), not the best checkpoint.
  assert row["checkpoint_step"] == 24 and report["checkpoint"] == "latest"
  assert "scored with its final weights" in report["markdown"]

  # A rerun reuses the evaluation of the same weights, shards and settings, and only that.
  calls = []
  real_evaluate = recipes.evaluate
  monkeypatch.setattr(recipes, "evaluate", lambda c: calls.append(c) or real_evaluate(c))
  assert run_recipe_table(config)["rows"][0]["val_accuracy"] == row["val_accuracy"]
  assert not calls
  state = os.path.join(row["model_dir"], "checkpoints", "checkpoint")
  with open(state) as f:
    text = f.read()
  final = recipes._weights_sha256(row["model_dir"], "latest")
  with open(state, "w") as f:  # "latest" names the epoch-1 checkpoint: other weights
    f.write(text.replace('model_checkpoint_path: "ckpt-24"', 'model_checkpoint_path: "ckpt-12"'))
  assert recipes._weights_sha256(row["model_dir"], "latest") != final
  with open(state, "w") as f:
    f.write(text)
  assert recipes._weights_sha256(row["model_dir"], "latest") == final

  best = dataclasses.replace(config, checkpoint="best")  # the trainer's choice, said so
  report = run_recipe_table(best)
  assert len(calls) == 1 and calls[0].checkpoint == "best"
  assert report["rows"][0]["checkpoint_step"] == report["rows"][0]["best_step"]
  assert "chosen on the split scored" in report["markdown"]
  model, _, source = load_model(row["model_dir"])  # other weights in the best file
  model.set_weights([w * 0.5 for w in model.get_weights()])
  model.save_weights(source.path)
  run_recipe_table(best)
  assert len(calls) == 2
  run_recipe_table(dataclasses.replace(config, framings=("clean",)))  # other settings
  assert len(calls) == 3 and calls[2].framings == ("clean",)


def test_cross_validation_then_validation_of_only_the_best_variant(
    celeba_shards, tmp_path):
  base = tiny_experiment(celeba_shards, str(tmp_path / "unused"), epochs=1)
  # a learning rate of 1e-9 cannot learn: its folds score the majority class at best
  frozen = dataclasses.replace(base, train=dataclasses.replace(base.train, learning_rate=1e-9))
  report = run_recipe_table(RecipeTableConfig(
      base, backbones=("tiny_resnet",), work_dir=str(tmp_path / "runs"), latency_iterations=2,
      cv_folds=2, variants=(("frozen", frozen), ("learns", base)), validate="best",
      framings=("clean", "loose_0.7"), select_by="worst_framing"))
  frozen_row, learns_row = report["rows"]
  assert frozen_row["variant"] == "frozen" and learns_row["variant"] == "learns"
  means = [r["cross_validation"]["worst_framing_mean"] for r in (frozen_row, learns_row)]
  winner, loser = (learns_row, frozen_row) if means[1] > means[0] else (frozen_row, learns_row)
  assert winner["validated"] and winner["val_accuracy"] is not None
  assert not loser["validated"] and loser["val_accuracy"] is None
  assert not (tmp_path / "runs" / loser["variant"] / "tiny_resnet" / "summary.json").exists()
  assert (tmp_path / "runs" / loser["variant"] / "tiny_resnet" / "fold-1" / "summary.json").exists()
  assert "another recipe cross-validated better" in report["markdown"]
  cv = winner["cross_validation"]
  assert [f["fold"] for f in cv["folds"]] == [0, 1]
  # The held-out folds partition the training split (96 synthetic faces).
  assert sum(f["val_examples"] for f in cv["folds"]) == 96
  accuracies = [f["val_accuracy"] for f in cv["folds"]]
  assert cv["mean"] == pytest.approx(sum(accuracies) / 2)
  assert cv["min"] == min(accuracies) and cv["max"] == max(accuracies)
  assert winner["cv_gap"] == pytest.approx(winner["val_accuracy"] - cv["mean"])
  assert "2 folds" in report["markdown"]
  for k, fold in enumerate(cv["folds"]):  # scored with each fold run's final weights
    fold_run = tmp_path / "runs" / winner["variant"] / "tiny_resnet" / f"fold-{k}"
    assert fold["checkpoint_step"] == json.loads((fold_run / "summary.json").read_text())["step"]
  # Every fold's worst framing is the lower of its two points, and it is what chose.
  for fold in cv["folds"]:
    assert fold["worst_framing"]["name"] in ("clean", "loose_0.7")
    assert fold["worst_framing"]["accuracy"] <= fold["val_accuracy"] + 1e-9
  assert cv["worst_framing_mean"] == pytest.approx(
      sum(f["worst_framing"]["accuracy"] for f in cv["folds"]) / 2)
  assert winner["val_worst_framing"]["accuracy"] <= winner["val_accuracy"] + 1e-9
  assert "worst framing: cross-validated / val" in report["markdown"]


def test_sigterm_stops_the_table_instead_of_scoring_a_half_run_and_going_on(
    celeba_shards, tmp_path, monkeypatch):
  received = []
  ours = lambda signum, frame: received.append(signum)  # a stray SIGTERM must not end pytest
  previous = signal.signal(signal.SIGTERM, ours)
  real_train = recipes.train

  def train_and_terminate(experiment):
    def send_once_the_trainer_listens():
      deadline = time.monotonic() + 60
      while signal.getsignal(signal.SIGTERM) is ours and time.monotonic() < deadline:
        time.sleep(0.005)
      os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=send_once_the_trainer_listens, daemon=True).start()
    return real_train(experiment)

  monkeypatch.setattr(recipes, "train", train_and_terminate)
  out = tmp_path / "recipes.json"
  try:
    with pytest.raises(SweepStopped, match=r"tiny_resnet: stopped by SIGTERM at step 4 of 24"):
      run_recipe_table(RecipeTableConfig(
          tiny_experiment(celeba_shards, str(tmp_path / "unused"), epochs=2),
          backbones=("tiny_resnet", "tiny_vgg"), work_dir=str(tmp_path / "runs"),
          output_json=str(out)))
    # The trainer gave the process its handler back: the next SIGTERM is not swallowed.
    assert signal.getsignal(signal.SIGTERM) is ours and not received
  finally:
    signal.signal(signal.SIGTERM, previous)
  run = tmp_path / "runs" / "tiny_resnet"
  assert (run / "checkpoints").is_dir() and not (run / recipes.SAVED_EVALUATION).exists()
  assert not (tmp_path / "runs" / "tiny_vgg").exists() and not out.exists()


@pytest.mark.parametrize("validate", ["best", "none"])
def test_choosing_or_estimating_without_cross_validation_is_refused(celeba_shards, tmp_path,
                                                                    validate):
  with pytest.raises(ValueError, match="cv_folds"):
    run_recipe_table(RecipeTableConfig(
        tiny_experiment(celeba_shards, str(tmp_path / "unused"), epochs=1), validate=validate))


def test_the_command_answers_a_contradiction_in_one_line_before_any_run(celeba_shards,
                                                                        tmp_path):
  result = run("benchmarks.recipes", "--validate=none", f"--data_dir={celeba_shards}",
               f"--work_dir={tmp_path / 'runs'}")
  assert_one_line_error(result, "benchmarks.recipes", "validate='none'", "set cv_folds")
  assert not os.listdir(tmp_path)


def test_validate_none_cross_validates_and_leaves_validation_untouched(celeba_shards, tmp_path):
  out = tmp_path / "recipes.json"
  report = run_recipe_table(RecipeTableConfig(
      tiny_experiment(celeba_shards, str(tmp_path / "unused"), epochs=1),
      backbones=("tiny_resnet",), work_dir=str(tmp_path / "runs"), cv_folds=2,
      validate="none", output_json=str(out)))
  (row,) = report["rows"]
  assert [f["fold"] for f in row["cross_validation"]["folds"]] == [0, 1]
  assert not row["validated"] and row["val_accuracy"] is None and row["model_dir"] is None
  assert "cross-validation only (validate=none)" in report["markdown"]
  run_dir = tmp_path / "runs" / "tiny_resnet"
  assert (run_dir / "fold-1" / "summary.json").exists()
  assert not (run_dir / "summary.json").exists()
  assert json.loads(out.read_text())["validate"] == "none"

  # A learning curve's point: the same held-out faces, half the training people, its own runs.
  whole_runs = [(run_dir / f"fold-{k}" / "summary.json").stat().st_mtime for k in (0, 1)]
  half = run_recipe_table(RecipeTableConfig(
      tiny_experiment(celeba_shards, str(tmp_path / "unused"), epochs=1),
      backbones=("tiny_resnet",), work_dir=str(tmp_path / "runs"), cv_folds=2,
      validate="none", cv_train_fraction=0.5))
  whole_folds, half_folds = (r["cross_validation"]["folds"] for r in (row, half["rows"][0]))
  for k, (w, h) in enumerate(zip(whole_folds, half_folds)):
    assert h["val_examples"] == w["val_examples"]
    assert w["train_examples"] / 2 <= h["train_examples"] < w["train_examples"]
    assert (run_dir / f"fold-{k}-train50" / "summary.json").exists()
  assert [(run_dir / f"fold-{k}" / "summary.json").stat().st_mtime for k in (0, 1)] == whole_runs
  assert half["cv_train_fraction"] == 0.5
  faces = sum(h["train_examples"] for h in half_folds) / 2
  assert f"trained on {faces:,.0f} faces" in half["markdown"]


def test_a_variant_with_its_own_backbone_is_one_candidate_on_it(celeba_shards, tmp_path):
  base = tiny_experiment(celeba_shards, str(tmp_path / "unused"), epochs=1)
  vgg = dataclasses.replace(base, model=dataclasses.replace(base.model, backbone="tiny_vgg"))
  config = RecipeTableConfig(base, backbones=(base.model.backbone, "other"),
                             work_dir="w", variants=(("same", base), ("vgg", vgg)))
  assert [(c.variant, c.backbone, c.run_dir) for c in candidates(config)] == [
      ("same", base.model.backbone, f"w/same/{base.model.backbone}"),
      ("same", "other", "w/same/other"), ("vgg", "tiny_vgg", "w/vgg/tiny_vgg")]


def test_the_best_candidate_is_chosen_by_the_asked_score():
  scores = [{"mean": 0.96, "worst_framing_mean": 0.93}, {"mean": 0.95, "worst_framing_mean": 0.94}]
  assert best_candidate(scores, "accuracy") == 0
  assert best_candidate(scores, "worst_framing") == 1


@pytest.mark.parametrize("kwargs,match", [
    ({"select_by": "worst_framing", "cv_folds": 2}, "set cv_folds and framings"),
    ({"framings": ("clean", "sideways")}, "unknown framing 'sideways'"),
    ({"select_by": "robustness"}, "select_by must be one of"),
    ({"checkpoint": "final"}, "checkpoint must be one of latest, best"),
    ({"cv_train_fraction": 1.5}, r"cv_train_fraction must be in \(0, 1\]"),
    ({"cv_train_fraction": 0.5, "cv_folds": 2}, "set cv_folds and validate='none'"),
])
def test_bad_selection_is_refused_before_training(celeba_shards, tmp_path, kwargs, match):
  with pytest.raises(ValueError, match=match):
    run_recipe_table(RecipeTableConfig(
        tiny_experiment(celeba_shards, str(tmp_path / "unused"), epochs=1),
        work_dir=str(tmp_path / "runs"), **kwargs))
  assert not (tmp_path / "runs").exists()
