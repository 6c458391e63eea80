"""Sharding throughput (images/s), copying JPEG bytes and re-encoding.

  python -m benchmarks.shard [--data_dir=CELEBA_DIR] [--workers=2] [--output_json=F]
"""

from __future__ import annotations

from absl import flags

from engine.bench.shard import ShardBenchConfig, run_shard_benchmark
from launch import usage

_DATA_DIR = flags.DEFINE_string("data_dir", None, "CelebA-format dir; default synthetic.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 6000, "Synthetic images to generate.")
_WORKERS = flags.DEFINE_integer("workers", 0, "Writer processes; 0 = auto.")
_REENCODE = flags.DEFINE_list("reencode_size", ["128", "128"], "H,W for the re-encode run; "
                              "empty to skip.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Runs per variant; the best is reported.")
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Write the report here.")


def main(argv: list[str]) -> None:
  del argv
  size = tuple(int(v) for v in _REENCODE.value) if _REENCODE.value else None
  report = run_shard_benchmark(ShardBenchConfig(
      data_dir=_DATA_DIR.value, num_images=_NUM_IMAGES.value, workers=_WORKERS.value,
      reencode_size=size, repeats=_REPEATS.value, output_json=_OUTPUT_JSON.value))
  print(f"{'variant':<22}{'images':>8}{'seconds':>10}{'images/s':>10}")
  for name, r in report["results"].items():
    print(f"{name:<22}{r['images']:>8}{r['seconds']:>10.2f}{r['images_per_sec']:>10.0f}")


if __name__ == "__main__":
  usage.run(main)
