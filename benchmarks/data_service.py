"""Images/s through a tf.data service with 1 and 2 local workers vs the local pipeline, and
each service's per-epoch example counts (no duplicates), one run (issue 14).

  python -m benchmarks.data_service --data_dir=SHARDS [--image_size=112] [--batch_size=64]
      [--rounds=3] [--seconds_per_turn=4] [--output_json=F]

Defaults are the celeba-dev recipe's input (configs/celeba_dev.flags).
"""

from __future__ import annotations

import json

from absl import app, flags

from engine.bench.data_service import DataServiceBenchConfig, run_data_service_benchmark
from launch import usage

_D = DataServiceBenchConfig(data_dir="")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Shards (python -m tfrecords.shard).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", _D.image_size[0], "Square output size.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", _D.batch_size, "Batch size.")
_ROUNDS = flags.DEFINE_integer("rounds", _D.rounds, "Interleaved rounds (median counts).")
_SECONDS = flags.DEFINE_float("seconds_per_turn", _D.seconds_per_turn, "Timed seconds per turn.")
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Write the report here.")


def main(argv: list[str]) -> None:
  del argv
  if not _DATA_DIR.value:
    raise app.UsageError("--data_dir is required")
  report = run_data_service_benchmark(DataServiceBenchConfig(
      data_dir=_DATA_DIR.value, image_size=(_IMAGE_SIZE.value, _IMAGE_SIZE.value),
      batch_size=_BATCH_SIZE.value, rounds=_ROUNDS.value, seconds_per_turn=_SECONDS.value,
      output_json=_OUTPUT_JSON.value))
  print(json.dumps({k: report[k] for k in ("images_per_sec", "vs_local", "rounds",
                                           "epoch_counts")}, indent=2))


if __name__ == "__main__":
  usage.run(main)
