"""The recipe table trains, evaluates and times each backbone and reports all of it."""

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


def test_cross_validation_scores_each_fold_then_validation_once(celeba_shards, tmp_path):
  report = run_recipe_table(RecipeTableConfig(
      tiny_experiment(celeba_shards, str(tmp_path / "unused"), epochs=1),
      backbones=("tiny_resnet",), work_dir=str(tmp_path / "runs"), latency_iterations=2,
      cv_folds=2))
  (row,) = report["rows"]
  cv = row["cross_validation"]
  assert [f["fold"] for f in cv["folds"]] == [0, 1]
  # The held-out folds partition the training split (96 synthetic faces).
  assert sum(f["val_examples"] for f in cv["folds"]) == 96
  accuracies = [f["val_accuracy"] for f in cv["folds"]]
  assert cv["mean"] == pytest.approx(sum(accuracies) / 2)
  assert cv["min"] == min(accuracies) and cv["max"] == max(accuracies)
  assert row["cv_gap"] == pytest.approx(row["val_accuracy"] - cv["mean"])
  for k in (0, 1):
    assert (tmp_path / "runs" / "tiny_resnet" / f"fold-{k}" / "summary.json").exists()
  assert "2 folds" in report["markdown"]
