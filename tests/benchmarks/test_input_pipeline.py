"""The input-pipeline benchmark runs at a tiny size and reports every baseline."""

import json

from engine.bench.input_pipeline import InputBenchConfig, run_input_benchmark


def test_reports_rates_and_ratios_against_baselines(celeba_shards, tmp_path):
  out = tmp_path / "report.json"
  report = run_input_benchmark(InputBenchConfig(
      data_dir=celeba_shards, image_size=(32, 32), batch_size=8, batches=3, seed_batches=2,
      output_json=str(out)))
  assert json.loads(out.read_text()) == json.loads(json.dumps(report))
  names = {"decode_ceiling", "facetrain", "facetrain_flip_zoom_shift", "facetrain_no_augment",
           "imagedatagen",
           "keras_from_dir"}
  assert set(report["images_per_sec"]) == names
  assert all(rate > 0 for rate in report["images_per_sec"].values())
  assert report["vs_decode_ceiling"]["decode_ceiling"] == 1.0
  assert report["vs_seed_pipeline"]["imagedatagen"] == 1.0
  ceiling = report["images_per_sec"]["decode_ceiling"]
  assert report["vs_decode_ceiling"]["facetrain"] == round(
      report["images_per_sec"]["facetrain"] / ceiling, 3)
  assert report["num_images"] == 96
