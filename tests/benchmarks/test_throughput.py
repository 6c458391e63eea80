"""The throughput benchmark runs at a tiny size and reports its baselines."""

import contextlib
import json

import pytest

from engine.bench.throughput import ThroughputConfig, _model_garden, run_throughput_benchmark


def test_reports_ours_against_keras_fit_and_input_wait(tmp_path):
  out = tmp_path / "t.json"
  report = run_throughput_benchmark(ThroughputConfig(
      backbones=("tiny_resnet",), image_size=(32, 32), batch_size=4, precision="float32",
      warmup_steps=1, steps=2, pipeline_steps=3, matmul_size=256, output_json=str(out),
      model_garden_python=str(tmp_path / "no_such_python")))
  assert json.loads(out.read_text()) == json.loads(json.dumps(report))
  (tiny,) = report["results"]
  rates = tiny["images_per_sec"]
  assert rates["ours"] > 0 and rates["ours_keras_bn"] > 0 and rates["keras_fit"] > 0
  assert rates["ours_stock_kernels"] > 0
  assert rates["tf_keras_fit"] is None and tiny["tf_keras_note"]
  assert rates["model_garden"] is None
  assert tiny["model_garden_note"] == "Model Garden's vision backbones have no such model"
  assert tiny["ours_vs_keras_fit"] == pytest.approx(rates["ours"] / rates["keras_fit"], rel=0.01)
  # Fractions of the matmul peak measured in the same run, from the same rates.
  peak = report["matmul_peak"]
  assert peak["dtype"] == "float32" and peak["gflops"] == max(peak["runs_gflops"]) > 0
  fractions = tiny["fraction_of_matmul_peak"]
  assert fractions["ours"] == pytest.approx(
      rates["ours"] * tiny["step_gflop_per_image"] / peak["gflops"], rel=0.02)
  assert fractions["model_garden"] is None
  real = tiny["with_input_pipeline"]
  assert real["images_per_sec"] > 0 and 0.0 <= real["input_wait_fraction"] <= 1.0
  assert report["machine"]["tensorflow"] and "gpu_available" in report["device"]


@pytest.mark.slow  # builds MobileNetV3s in three stacks (~30 s on 2 cores)
def test_tf_keras_baseline_where_applications_has_the_model():
  report = run_throughput_benchmark(ThroughputConfig(
      backbones=("mobilenet_v3_small",), image_size=(32, 32), batch_size=4, precision="float32",
      warmup_steps=1, steps=2, matmul_size=256, contenders=("tf_keras_fit",)))
  (mobile,) = report["results"]
  assert mobile["images_per_sec"]["tf_keras_fit"] > 0 and mobile["ours_vs_tf_keras_fit"] > 0
  assert mobile["images_per_sec"]["ours_stock_kernels"] is None  # not requested


def test_model_garden_is_skipped_with_a_note_where_not_installed(tmp_path):
  config = ThroughputConfig(model_garden_python=str(tmp_path / "none" / "python"))
  with contextlib.ExitStack() as stack:
    run, note = _model_garden("resnet50", config, "float32", stack)
  assert run is None and "make model-garden-venv" in note and str(tmp_path) in note


def test_model_garden_failure_is_loud(tmp_path):
  fake = tmp_path / "python"
  fake.write_text("#!/bin/sh\necho 'No module named official' >&2\nexit 3\n")
  fake.chmod(0o755)
  with contextlib.ExitStack() as stack, pytest.raises(RuntimeError, match="exited with 3.*official"):
    _model_garden("resnet50", ThroughputConfig(model_garden_python=str(fake)), "float32", stack)
