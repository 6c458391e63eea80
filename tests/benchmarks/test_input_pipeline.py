"""The input-pipeline benchmark runs at a tiny size and reports every baseline."""

import json
import statistics

from engine.bench.input_pipeline import InputBenchConfig, run_input_benchmark


def test_reports_rates_and_ratios_against_baselines(celeba_shards, tmp_path):
  out = tmp_path / "report.json"
  report = run_input_benchmark(InputBenchConfig(
      data_dir=celeba_shards, image_size=(32, 32), batch_size=8, rounds=2,
      seconds_per_turn=0.05, warmup_batches=1, output_json=str(out)))
  assert json.loads(out.read_text()) == json.loads(json.dumps(report))
  names = {"decode_ceiling", "facetrain", "facetrain_no_augment", "facetrain_decoded_cache",
           "imagedatagen", "keras_from_dir"}
  assert set(report["images_per_sec"]) == names
  assert len(report["rounds"]) == 2 and all(set(r) == names for r in report["rounds"])
  assert all(rate > 0 for rate in report["images_per_sec"].values())
  assert report["vs_decode_ceiling"]["decode_ceiling"] == 1.0
  assert report["vs_seed_pipeline"]["imagedatagen"] == 1.0
  # Ratios are medians of same-round ratios, not ratios of medians.
  same_round = [r["facetrain"] / r["decode_ceiling"] for r in report["rounds"]]
  assert abs(report["vs_decode_ceiling"]["facetrain"] - statistics.median(same_round)) < 2e-3
  assert report["num_images"] == 96
  assert report["machine"]["cores"] >= 1
