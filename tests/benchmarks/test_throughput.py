"""The throughput benchmark runs at a tiny size and reports its baselines."""

import json

import pytest

from engine.bench.throughput import ThroughputConfig, run_throughput_benchmark


def test_reports_ours_against_keras_fit_and_input_wait(tmp_path):
  out = tmp_path / "t.json"
  report = run_throughput_benchmark(ThroughputConfig(
      backbones=("tiny_resnet",), image_size=(32, 32), batch_size=4, precision="float32",
      warmup_steps=1, steps=2, pipeline_steps=3, output_json=str(out)))
  assert json.loads(out.read_text()) == json.loads(json.dumps(report))
  (tiny,) = report["results"]
  rates = tiny["images_per_sec"]
  assert rates["ours"] > 0 and rates["ours_keras_bn"] > 0 and rates["keras_fit"] > 0
  assert rates["tf_keras_fit"] is None and tiny["tf_keras_note"]
  assert tiny["ours_vs_keras_fit"] == pytest.approx(rates["ours"] / rates["keras_fit"], rel=0.01)
  real = tiny["with_input_pipeline"]
  assert real["images_per_sec"] > 0 and 0.0 <= real["input_wait_fraction"] <= 1.0
  assert report["machine"]["tensorflow"] and "gpu_available" in report["device"]


@pytest.mark.slow  # builds MobileNetV3s in three stacks (~30 s on 2 cores)
def test_tf_keras_baseline_where_applications_has_the_model():
  report = run_throughput_benchmark(ThroughputConfig(
      backbones=("mobilenet_v3_small",), image_size=(32, 32), batch_size=4, precision="float32",
      warmup_steps=1, steps=2))
  (mobile,) = report["results"]
  assert mobile["images_per_sec"]["tf_keras_fit"] > 0 and mobile["ours_vs_tf_keras_fit"] > 0
