"""Shards CelebA or an image-folder dataset into TFDS-loadable TFRecords.

  python -m tfrecords.shard --source=celeba --data_dir=~/celeba --output_dir=shards/celeba
  python -m tfrecords.shard --source=folder --data_dir=~/gender --output_dir=shards/gender \
      --image_size=128,128 --max_examples=5000 --balance_by=label

A mistake in the flags (unknown or contradictory, a --data_dir that does not exist) is one
line on stderr and exit code 2; bad input data (a corrupt image, a malformed attribute
row) is one line naming the file, and exit code 1.
"""

from __future__ import annotations

import json
import os

from absl import app, flags

from engine.data.sharding import ShardConfig, ShardingError  # no TensorFlow: flags answer at once
from launch import usage

_SOURCE = flags.DEFINE_enum("source", "celeba", ["celeba", "folder"], "Input format.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Source directory.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where shards and manifest.json go.")
_NUM_SHARDS = flags.DEFINE_integer("num_shards", None, "Train shards (others scale); "
                                   "default from --target_shard_mb.")
_TARGET_SHARD_MB = flags.DEFINE_float("target_shard_mb", 64.0, "Target shard size.")
_IMAGE_SIZE = flags.DEFINE_list("image_size", None, "H,W to resize and re-encode to.")
_JPEG_QUALITY = flags.DEFINE_integer("jpeg_quality", 95, "Quality when re-encoding.")
_MAX_EXAMPLES = flags.DEFINE_integer("max_examples", None, "Seeded subset of this size.")
_BALANCE_BY = flags.DEFINE_string("balance_by", None, "Attribute (or 'label') to balance.")
_SEED = flags.DEFINE_integer("seed", 0, "Subset, split and shuffle seed.")
_VALIDATION_FRACTION = flags.DEFINE_float("validation_fraction", 0.1, "Folder source only.")
_TEST_FRACTION = flags.DEFINE_float("test_fraction", 0.1, "Folder source only.")
_WORKERS = flags.DEFINE_integer("workers", 0, "Writer processes; 0 = auto.")
_ON_BAD_IMAGE = flags.DEFINE_enum("on_bad_image", "error", ["error", "skip"],
                                  "Stop on a bad image, or skip it and report it.")


def _config():
  if not _DATA_DIR.value or not _OUTPUT_DIR.value:
    raise app.UsageError("--data_dir and --output_dir are required")
  if not os.path.isdir(_DATA_DIR.value):
    raise app.UsageError(f"--data_dir={_DATA_DIR.value}: no such directory")
  try:
    size = tuple(int(v) for v in _IMAGE_SIZE.value) if _IMAGE_SIZE.value else None
  except ValueError:
    raise app.UsageError(f"--image_size must be H,W integers, got {_IMAGE_SIZE.value}") from None
  return ShardConfig(
      source=_SOURCE.value, data_dir=_DATA_DIR.value, output_dir=_OUTPUT_DIR.value,
      num_shards=_NUM_SHARDS.value, target_shard_mb=_TARGET_SHARD_MB.value, image_size=size,
      jpeg_quality=_JPEG_QUALITY.value, max_examples=_MAX_EXAMPLES.value,
      balance_by=_BALANCE_BY.value, seed=_SEED.value,
      validation_fraction=_VALIDATION_FRACTION.value, test_fraction=_TEST_FRACTION.value,
      workers=_WORKERS.value, on_bad_image=_ON_BAD_IMAGE.value)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    config = _config().validate()
  except ShardingError as e:  # contradictory or out-of-range options
    usage.fail(e)
  from engine.data.sharding import shard_dataset  # TensorFlow starts after the flags
  try:
    manifest = shard_dataset(config)
  except (ShardingError, ValueError) as e:  # the data: the message names the file
    usage.fail(e, exit_code=1)
  counts = {split: info["num_examples"] for split, info in manifest["splits"].items()}
  print(json.dumps({"output_dir": _OUTPUT_DIR.value, "splits": counts,
                    "skipped": len(manifest["skipped"]), "throughput": manifest["throughput"]},
                   indent=2))


if __name__ == "__main__":
  usage.run(main)
