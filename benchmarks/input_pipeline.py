"""Input pipeline images/s vs the JPEG-decode ceiling and the seeds' ImageDataGenerator.

  python -m benchmarks.input_pipeline [--data_dir=SHARDS] [--image_size=128,128]
      [--batch_size=64] [--noaugment] [--rounds=3] [--seconds_per_turn=2]
      [--output_json=F]

Contenders take turns (fresh iterators, rotated order) so that this machine's drift hits
all of them alike; ratios are medians over rounds of same-round ratios.
"""

from __future__ import annotations

from absl import flags

from engine.bench.input_pipeline import InputBenchConfig, run_input_benchmark
from launch import usage

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Shards; default: synthetic CelebA-size faces.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 2000, "Synthetic images to generate.")
_IMAGE_SIZE = flags.DEFINE_list("image_size", ["128", "128"], "Output H,W.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Batch size.")
_AUGMENT = flags.DEFINE_bool("augment", True, "Use the seeds' augmentation set.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Rounds; every contender is timed once per round.")
_SECONDS = flags.DEFINE_float("seconds_per_turn", 2.0, "Timed seconds per contender per round.")
_WARMUP = flags.DEFINE_integer("warmup_batches", 8, "Untimed batches at the start of a turn.")
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Write the report here.")


def main(argv: list[str]) -> None:
  del argv
  report = run_input_benchmark(InputBenchConfig(
      data_dir=_DATA_DIR.value, num_images=_NUM_IMAGES.value,
      image_size=tuple(int(v) for v in _IMAGE_SIZE.value), batch_size=_BATCH_SIZE.value,
      augment=_AUGMENT.value, rounds=_ROUNDS.value, seconds_per_turn=_SECONDS.value,
      warmup_batches=_WARMUP.value, output_json=_OUTPUT_JSON.value))
  rounds = report["rounds"]
  print(f"{'pipeline':<26}{'images/s':>10}{'vs ceiling':>12}{'vs seeds':>10}   per round")
  for name, rate in report["images_per_sec"].items():
    per_round = " ".join(f"{r[name]:>7.0f}" for r in rounds)
    print(f"{name:<26}{rate:>10.0f}{report['vs_decode_ceiling'][name]:>12.2f}"
          f"{report['vs_seed_pipeline'][name]:>10.1f}   {per_round}")


if __name__ == "__main__":
  usage.run(main)
