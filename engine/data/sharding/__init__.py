"""The sharder: CelebA and image folders -> TFDS-loadable TFRecord shards + manifest."""

from engine.data.sharding.config import ShardConfig, ShardingError
from engine.data.sharding.sharder import shard_dataset

__all__ = ["ShardConfig", "ShardingError", "shard_dataset"]
