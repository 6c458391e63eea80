"""The sharder's entry point, run as a user runs it."""

import json
import os
import subprocess
import sys

from tests.engine.data.sharding.helpers import copy_tree, mark_partition, replace_line


def _run(*args):
  return subprocess.run([sys.executable, "-m", "tfrecords.shard", *args], capture_output=True,
                        text=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))


def test_shards_and_prints_summary(celeba_dir, tmp_path):
  result = _run("--source=celeba", f"--data_dir={celeba_dir}", f"--output_dir={tmp_path}/o",
                "--num_shards=2")
  assert result.returncode == 0, result.stderr
  summary = json.loads(result.stdout)
  assert summary["splits"] == {"train": 96, "validation": 32, "test": 32}
  assert "images/s" in result.stderr  # the progress line


def test_bad_row_exits_nonzero_naming_file_and_line(celeba_dir, tmp_path):
  d = copy_tree(celeba_dir, tmp_path / "c")
  replace_line(os.path.join(d, "list_attr_celeba.txt"), 6, "000004.jpg 1 1 x 1")
  result = _run("--source=celeba", f"--data_dir={d}", f"--output_dir={tmp_path}/o")
  assert result.returncode == 1
  assert "list_attr_celeba.txt:6: attribute Smiling must be 1 or -1" in result.stderr
  assert not os.path.exists(f"{tmp_path}/o/manifest.json")


def test_validation_partition_alone_is_sharded(celeba_dir, tmp_path):
  d = copy_tree(celeba_dir, tmp_path / "c")
  mark_partition(d, "1")  # like shared/data/celeba-dev-val40
  result = _run("--source=celeba", f"--data_dir={d}", f"--output_dir={tmp_path}/o")
  assert result.returncode == 0, result.stderr
  assert json.loads(result.stdout)["splits"] == {"validation": 160}
  assert "no training examples; writing validation only" in result.stderr
