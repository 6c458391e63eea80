"""`python -m launch.predict` and `python -m launch.export`, run as a user runs them."""

import csv
import json
import os
import subprocess
import sys

import pytest

from tests.engine.eval.test_predict import write_images, write_problem_images, write_run_dir
from tests.launch.test_usage import assert_one_line_error

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(module, *args):
  return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                        cwd=ROOT)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  return write_run_dir(tmp_path_factory.mktemp("run"))


@pytest.mark.slow  # two fresh interpreters importing TensorFlow
def test_predict_prints_each_image_and_fails_on_a_bad_file(run_dir, tmp_path):
  files = write_images(tmp_path / "images")
  output = str(tmp_path / "preds.csv")
  result = _run("launch.predict", f"--model_dir={run_dir}", str(tmp_path / "images"),
                f"--output={output}", "--batch_size=2", "--aligned")
  assert result.returncode != 0, result.stderr
  lines = [line.split("\t") for line in result.stdout.splitlines() if "\t" in line]
  assert [line[0] for line in lines] == files
  for path, label, value in lines:
    if path.endswith("broken.jpg"):
      assert label == "ERROR" and "broken.jpg: not a readable image" in value
    else:
      assert label in ("female", "male") and 0.5 <= float(value) <= 1.0
  assert "1 of 5 files failed" in result.stdout
  with open(output) as f:
    assert len(list(csv.DictReader(f))) == 5

  good = [f for f in files if not f.endswith("broken.jpg")]
  result = _run("launch.predict", f"--model_dir={run_dir}", *good,
                f"--output={tmp_path / 'preds.json'}", "--aligned")
  assert result.returncode == 0, result.stderr
  with open(tmp_path / "preds.json") as f:
    assert [r["status"] for r in json.load(f)] == ["ok"] * 4


def test_predict_on_a_folder_as_users_leave_it(run_dir, tmp_path):
  """A truncated JPEG, an empty file, a text file named .jpg and 20000x20000 images beside
  a good JPEG and PNG: a row per file, the bad ones naming why, the good ones predicted,
  exit code 1 (and no 1.2 GB decode: the size is read from the header first)."""
  expected = write_problem_images(tmp_path / "images")
  output = tmp_path / "preds.csv"
  result = _run("launch.predict", f"--model_dir={run_dir}", str(tmp_path / "images"),
                f"--output={output}", "--aligned")
  assert result.returncode == 1, result.stderr[-3000:]
  rows = [line.split("\t") for line in result.stdout.splitlines() if "\t" in line]
  assert [os.path.basename(row[0]) for row in rows] == sorted(expected)
  for path, label, value in rows:
    fragment = expected[os.path.basename(path)]
    if fragment is None:
      assert label in ("female", "male") and 0.5 <= float(value) <= 1.0
    else:
      assert label == "ERROR" and value.startswith(f"{path}: ") and fragment in value, value
  assert result.stdout.splitlines()[-1] == f"5 of {len(expected)} files failed"
  with open(output) as f:
    statuses = [row["status"] for row in csv.DictReader(f)]
  assert statuses.count("ok") == 2 and statuses.count("error") == 5


def test_predict_without_images_is_a_usage_error(run_dir):
  result = _run("launch.predict", f"--model_dir={run_dir}")
  assert_one_line_error(result, "launch.predict", "give one or more image files")


@pytest.mark.slow
def test_export_prints_the_artifact(run_dir, tmp_path):
  output = str(tmp_path / "served")
  # the run's shards are not on this machine: nothing to check the export on
  unchecked = _run("launch.export", f"--model_dir={run_dir}", "--format=saved_model",
                   f"--output={output}")
  assert_one_line_error(unchecked, "launch.export", "give real images to check it on")
  assert not os.path.exists(output)
  write_images(tmp_path / "images")
  result = _run("launch.export", f"--model_dir={run_dir}", "--format=saved_model",
                f"--output={output}", f"--check_images={tmp_path / 'images'}")
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip().splitlines()[-1] == output
  assert os.path.exists(os.path.join(output, "saved_model.pb"))
  with open(output + ".labels.json") as f:
    assert json.load(f)["class_names"] == ["female", "male"]
  bad = _run("launch.export", f"--model_dir={run_dir}", "--format=coreml")
  assert_one_line_error(bad, "launch.export", "--format=coreml")


@pytest.mark.slow  # three fresh interpreters importing TensorFlow
def test_export_onnx_then_predict_through_it(run_dir, tmp_path):
  """The deploy loop as a user runs it: export, then check the artifact on one's photos."""
  pytest.importorskip("tf2onnx", reason="--format=onnx needs the deploy extra")
  pytest.importorskip("onnxruntime", reason="--format=onnx needs the deploy extra")
  files = [f for f in write_images(tmp_path / "images") if not f.endswith("broken.jpg")]
  artifact = str(tmp_path / "model.onnx")
  exported = _run("launch.export", f"--model_dir={run_dir}", "--format=onnx",
                  f"--output={artifact}", f"--check_images={tmp_path / 'images'}")
  assert exported.returncode == 0, exported.stderr
  from_run = _run("launch.predict", f"--model_dir={run_dir}", "--aligned", *files)
  from_artifact = _run("launch.predict", f"--model={artifact}", "--aligned", *files)
  assert from_artifact.returncode == 0, from_artifact.stderr
  rows = [line.split("\t") for line in from_artifact.stdout.splitlines() if "\t" in line]
  expected = [line.split("\t") for line in from_run.stdout.splitlines() if "\t" in line]
  assert [r[:2] for r in rows] == [r[:2] for r in expected] and len(rows) == 4
  for got, want in zip(rows, expected):
    assert float(got[2]) == pytest.approx(float(want[2]), abs=2e-4)  # printed to 4 places
  both = _run("launch.predict", f"--model_dir={run_dir}", f"--model={artifact}", files[0])
  assert_one_line_error(both, "launch.predict", "give --model_dir (a training run) or --model")
