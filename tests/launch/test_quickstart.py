"""The README's main job, run as a user runs it (smaller data, a tiny backbone)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from absl import flags

from launch import experiment_flags

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Training flags given to the quickstart override configs/quickstart.flags, as they
# would for launch.train: a tiny backbone and two epochs keep the test short.
OVERRIDES = ["--epochs=2", "--backbone=tiny_resnet"]


def _recipe_config(*args: str) -> dict:
  """`launch.train --flagfile=quickstart.flags ARGS`'s resolved config, as config.json has it."""
  flags.FLAGS.unparse_flags()
  try:
    flags.FLAGS(["train", *experiment_flags.resolve_flagfile_args(
        ["--flagfile=quickstart.flags", *args])])
    return json.loads(experiment_flags.experiment_config_from_flags().to_json())
  finally:
    flags.FLAGS.unparse_flags()


def _assert_is_resolved(written: dict, recipe: dict) -> None:
  """config.json is the recipe with `augment_on=auto` resolved (before step 0)."""
  assert recipe["input"]["augment_on"] == "auto"
  assert written["input"]["augment_on"] in ("host", "device")
  assert written == {**recipe, "input": {**recipe["input"],
                                         "augment_on": written["input"]["augment_on"]}}


def test_quickstart_trains_the_recipe_then_evaluates_and_logs(tmp_path):
  """Run without --work_dir: everything lands where the recipe's --data_dir and
  --model_dir say, and config.json is the recipe's resolved config. The recipes nest
  configs/base.flags relative to the working directory (absl reads nested flagfiles so),
  which is the repo root for a user; here a fresh directory with a link to configs/."""
  os.symlink(experiment_flags.CONFIG_DIR, tmp_path / "configs")
  result = subprocess.run(
      [sys.executable, "-m", "launch.quickstart", "--num_train=96", "--num_eval=24", *OVERRIDES],
      cwd=tmp_path, capture_output=True, text=True, timeout=600,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=REPO))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "tensorboard --logdir" in result.stdout and "macro avg" in result.stdout
  recipe = _recipe_config(*OVERRIDES)
  model_dir = tmp_path / recipe["train"]["model_dir"]
  with open(model_dir / "config.json") as f:
    _assert_is_resolved(json.load(f), recipe)
  assert os.listdir(tmp_path / recipe["input"]["data_dir"])  # the shards
  with open(model_dir / "eval_test" / "report.json") as f:
    assert json.load(f)["num_examples"] == 24
  assert os.listdir(model_dir / "train")  # TensorBoard event files


@pytest.mark.slow  # a second training run
def test_work_dir_moves_data_shards_and_run(tmp_path):
  work = tmp_path / "qs"
  result = subprocess.run(
      [sys.executable, "-m", "launch.quickstart", f"--work_dir={work}", "--num_train=64",
       "--num_eval=16", "--epochs=1", "--backbone=tiny_resnet", "--batch_size=16"],
      cwd=REPO, capture_output=True, text=True, timeout=600,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert result.returncode == 0, result.stderr[-3000:]
  assert sorted(os.listdir(work)) == ["celeba", "model", "shards"]
  with open(work / "model" / "config.json") as f:
    _assert_is_resolved(json.load(f), _recipe_config(
        f"--data_dir={work / 'shards'}", f"--model_dir={work / 'model'}", "--epochs=1",
        "--backbone=tiny_resnet", "--batch_size=16"))


def test_the_recipe_keeps_data_and_run_together():
  """The quickstart writes its synthetic faces beside the recipe's shards."""
  recipe = _recipe_config()
  assert os.path.dirname(recipe["input"]["data_dir"]) == os.path.dirname(
      recipe["train"]["model_dir"]) == "runs/quickstart"
