"""The sharder: CelebA and image folders -> TFDS-loadable TFRecord shards + manifest.

`ShardConfig` and `ShardingError` load without TensorFlow, so a launcher checks its flags
before TensorFlow's import starts; `shard_dataset` imports it when first used.
"""

from engine.data.sharding.config import ShardConfig, ShardingError

__all__ = ["ShardConfig", "ShardingError", "shard_dataset"]


def __getattr__(name: str):
  if name == "shard_dataset":
    from engine.data.sharding.sharder import shard_dataset  # pylint: disable=g-import-not-at-top
    return shard_dataset
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
