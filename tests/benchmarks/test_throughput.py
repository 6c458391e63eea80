"""The throughput benchmark runs at a tiny size and reports its baselines."""

import json

import pytest

from engine.bench.throughput import ThroughputConfig, run_throughput_benchmark


@pytest.mark.slow  # builds three MobileNetV3s (~35 s on 2 cores)
def test_reports_fused_keras_and_tf_keras(tmp_path):
  out = tmp_path / "t.json"
  report = run_throughput_benchmark(ThroughputConfig(
      backbones=("tiny_resnet", "mobilenet_v3_small"), image_size=(32, 32), batch_size=4,
      warmup_steps=1, steps=2, output_json=str(out)))
  assert json.loads(out.read_text()) == json.loads(json.dumps(report))
  tiny, mobile = report["results"]
  assert tiny["images_per_sec"]["fused"] > 0 and tiny["images_per_sec"]["keras_bn"] > 0
  assert tiny["images_per_sec"]["tf_keras"] is None and tiny["tf_keras_note"]
  assert mobile["images_per_sec"]["tf_keras"] > 0
  rates = mobile["images_per_sec"]
  assert abs(mobile["fused_vs_tf_keras"] - rates["fused"] / rates["tf_keras"]) < 0.01
  assert report["machine"]["tensorflow"]
