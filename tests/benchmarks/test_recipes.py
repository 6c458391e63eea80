"""The recipe table trains, evaluates and times each backbone and reports all of it."""

import dataclasses
import json

import pytest

from engine.bench.recipes import RecipeTableConfig, run_recipe_table
from tests.engine.train.conftest import tiny_experiment


def test_one_row_per_backbone_with_accuracy_time_and_latency(celeba_shards, tmp_path):
  out = tmp_path / "recipes.json"
  report = run_recipe_table(RecipeTableConfig(
      tiny_experiment(celeba_shards, str(tmp_path / "unused"), epochs=2),
      backbones=("tiny_resnet",), work_dir=str(tmp_path / "runs"), latency_iterations=3,
      output_json=str(out)))
  (row,) = report["rows"]
  assert row["backbone"] == "tiny_resnet" and row["epochs"] == 2
  assert 0.5 <= row["val_accuracy"] <= 1.0 and 0.0 <= row["val_f1_macro"] <= 1.0
  assert set(row["recall_by_class"]) == {"female", "male"}
  assert row["train_minutes"] > 0 and row["train_images_per_sec"] > 0
  assert row["latency_p50_ms"] > 0
  assert "| tiny_resnet |" in report["markdown"]
  assert json.loads(out.read_text())["rows"][0]["model_dir"].endswith("tiny_resnet")


def test_cross_validation_then_validation_of_only_the_best_variant(
    celeba_shards, tmp_path):
  base = tiny_experiment(celeba_shards, str(tmp_path / "unused"), epochs=1)
  # a learning rate of 1e-9 cannot learn: its folds score the majority class at best
  frozen = dataclasses.replace(base, train=dataclasses.replace(base.train, learning_rate=1e-9))
  report = run_recipe_table(RecipeTableConfig(
      base, backbones=("tiny_resnet",), work_dir=str(tmp_path / "runs"), latency_iterations=2,
      cv_folds=2, variants=(("frozen", frozen), ("learns", base)), validate="best"))
  frozen_row, learns_row = report["rows"]
  assert frozen_row["variant"] == "frozen" and learns_row["variant"] == "learns"
  means = [frozen_row["cross_validation"]["mean"], learns_row["cross_validation"]["mean"]]
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


def test_validate_best_without_cross_validation_is_refused(celeba_shards, tmp_path):
  with pytest.raises(ValueError, match="cv_folds"):
    run_recipe_table(RecipeTableConfig(
        tiny_experiment(celeba_shards, str(tmp_path / "unused"), epochs=1), validate="best"))
