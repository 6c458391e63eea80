"""Fixtures of the data tests: shard sets with unusual layouts."""

from __future__ import annotations

import pytest

from engine.data.sharding import ShardConfig, shard_dataset
from tests.engine.data.sharding.helpers import copy_tree, mark_partition


@pytest.fixture(scope="session")
def validation_only_dir(celeba_dir, tmp_path_factory) -> str:
  """`celeba_dir` with every image marked validation (1), like celeba-dev-val40."""
  d = copy_tree(celeba_dir, tmp_path_factory.mktemp("val_only") / "celeba")
  mark_partition(d, "1")
  return d


@pytest.fixture(scope="session")
def validation_only_shards(validation_only_dir, tmp_path_factory) -> str:
  """`validation_only_dir` sharded into 2 shards (no train split)."""
  out = str(tmp_path_factory.mktemp("val_only_shards"))
  shard_dataset(ShardConfig("celeba", validation_only_dir, out, num_shards=2))
  return out
