"""The tf.data service benchmark runs at a tiny size: the local baselines and the service
in the same rounds, and the per-epoch counts."""

import pytest

from engine.bench import data_service
from engine.bench.data_service import DataServiceBenchConfig, run_data_service_benchmark


@pytest.mark.slow  # starts a dispatcher and a worker process
def test_reports_the_service_against_the_local_pipeline_and_counts_an_epoch(
    celeba_shards, monkeypatch):
  monkeypatch.setattr(data_service, "WORKER_COUNTS", (1,))
  report = run_data_service_benchmark(DataServiceBenchConfig(
      celeba_shards, image_size=(32, 32), batch_size=8, crop_box=None, rounds=2,
      seconds_per_turn=0.2, warmup_batches=1))
  assert all(set(r) == {"local_cached", "local", "service_1"} for r in report["rounds"])
  assert report["vs_local"]["local"] == 1.0 and report["images_per_sec"]["service_1"] > 0
  counts = report["epoch_counts"]
  assert counts["service_1"] == {"examples": counts["expected_examples"],
                                 "distinct": counts["expected_examples"], "max_per_example": 1}
