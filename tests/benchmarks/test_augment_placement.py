"""The augmentation-placement benchmark runs at a tiny size and reports both variants."""

import json

import pytest

from engine.bench.augment_placement import AugmentPlacementConfig, run_augment_placement_benchmark


def test_reports_host_and_device_in_the_same_rounds(celeba_shards, tmp_path):
  out = tmp_path / "a.json"
  report = run_augment_placement_benchmark(AugmentPlacementConfig(
      celeba_shards, backbone="tiny_resnet", image_size=(32, 32), batch_size=8,
      precision="float32", steps=2, rounds=2, warmup_steps=1, output_json=str(out)))
  assert json.loads(out.read_text()) == json.loads(json.dumps(report))
  assert all(set(r) == {"host", "device"} for r in report["rounds"]) and len(report["rounds"]) == 2
  rates = report["images_per_sec"]
  assert rates["host"] > 0 and rates["device"] > 0
  ratios = sorted(r["device"] / r["host"] for r in report["rounds"])
  assert report["device_vs_host"] == pytest.approx(sum(ratios) / 2, rel=0.01)
  assert report["device_augment_ms_per_batch"] > 0
  assert report["device_augment_share_of_step"] == pytest.approx(
      report["device_augment_ms_per_batch"] * rates["device"] / 8000, rel=0.01)
