"""The README's main job, run as a user runs it (smaller data, a tiny backbone)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_quickstart_shards_trains_evaluates_and_logs(tmp_path):
  work = str(tmp_path / "qs")
  result = subprocess.run(
      [sys.executable, "-m", "launch.quickstart", f"--work_dir={work}", "--num_train=96",
       "--num_eval=24", "--epochs=2", "--backbone=tiny_resnet"],
      cwd=REPO, capture_output=True, text=True, timeout=600,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "tensorboard --logdir" in result.stdout and "macro avg" in result.stdout
  with open(os.path.join(work, "model", "eval_test", "report.json")) as f:
    report = json.load(f)
  assert report["num_examples"] == 24
  assert os.listdir(os.path.join(work, "model", "train"))  # TensorBoard event files
