"""Training images/s with augmentation on the host vs on the device, one run (issue 14).

  python -m benchmarks.augment_placement --data_dir=SHARDS [--backbone=resnet18]
      [--image_size=112] [--batch_size=64] [--steps=12] [--rounds=3] [--output_json=F]

Defaults are the celeba-dev recipe (configs/celeba_dev.flags) on its shards.
"""

from __future__ import annotations

import json

from absl import app, flags

from engine.bench.augment_placement import AugmentPlacementConfig, run_augment_placement_benchmark
from launch import usage

_D = AugmentPlacementConfig(data_dir="")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Shards (python -m tfrecords.shard).")
_BACKBONE = flags.DEFINE_string("backbone", _D.backbone, "Backbone.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", _D.image_size[0], "Square input size.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", _D.batch_size, "Batch size.")
_STEPS = flags.DEFINE_integer("steps", _D.steps, "Timed steps per variant and round.")
_ROUNDS = flags.DEFINE_integer("rounds", _D.rounds, "Interleaved rounds (median counts).")
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Write the report here.")


def main(argv: list[str]) -> None:
  del argv
  if not _DATA_DIR.value:
    raise app.UsageError("--data_dir is required")
  report = run_augment_placement_benchmark(AugmentPlacementConfig(
      data_dir=_DATA_DIR.value, backbone=_BACKBONE.value,
      image_size=(_IMAGE_SIZE.value, _IMAGE_SIZE.value), batch_size=_BATCH_SIZE.value,
      steps=_STEPS.value, rounds=_ROUNDS.value, output_json=_OUTPUT_JSON.value))
  print(json.dumps({k: report[k] for k in ("images_per_sec", "rounds", "device_vs_host",
                                           "device_augment_ms_per_batch",
                                           "device_augment_share_of_step")}, indent=2))


if __name__ == "__main__":
  usage.run(main)
