"""Input pipeline images/s vs the JPEG-decode ceiling and the seeds' ImageDataGenerator.

  python -m benchmarks.input_pipeline [--data_dir=SHARDS] [--image_size=128,128]
      [--batch_size=64] [--augment] [--output_json=F]
"""

from __future__ import annotations

from absl import app, flags

from engine.bench.input_pipeline import InputBenchConfig, run_input_benchmark

_DATA_DIR = flags.DEFINE_string("data_dir", None, "Shards; default: synthetic CelebA-size faces.")
_NUM_IMAGES = flags.DEFINE_integer("num_images", 2000, "Synthetic images to generate.")
_IMAGE_SIZE = flags.DEFINE_list("image_size", ["128", "128"], "Output H,W.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Batch size.")
_AUGMENT = flags.DEFINE_bool("augment", True, "Use the seeds' augmentation set.")
_BATCHES = flags.DEFINE_integer("batches", 30, "Timed batches per contender.")
_SEED_BATCHES = flags.DEFINE_integer("seed_batches", 5, "Timed ImageDataGenerator batches.")
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Write the report here.")


def main(argv: list[str]) -> None:
  del argv
  report = run_input_benchmark(InputBenchConfig(
      data_dir=_DATA_DIR.value, num_images=_NUM_IMAGES.value,
      image_size=tuple(int(v) for v in _IMAGE_SIZE.value), batch_size=_BATCH_SIZE.value,
      augment=_AUGMENT.value, batches=_BATCHES.value, seed_batches=_SEED_BATCHES.value,
      output_json=_OUTPUT_JSON.value))
  print(f"{'pipeline':<28}{'images/s':>10}{'vs ceiling':>12}{'vs seeds':>10}")
  for name, rate in report["images_per_sec"].items():
    print(f"{name:<28}{rate:>10.0f}{report['vs_decode_ceiling'][name]:>12.2f}"
          f"{report['vs_seed_pipeline'][name]:>10.1f}")


if __name__ == "__main__":
  app.run(main)
