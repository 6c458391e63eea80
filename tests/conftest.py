"""Shared fixtures: a synthetic CelebA-format tree with real JPEGs, and its shards."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from engine.data.sharding import ShardConfig, shard_dataset  # noqa: E402
from engine.data.synthetic import SyntheticConfig, write_synthetic_celeba  # noqa: E402


@pytest.fixture(scope="session")
def celeba_dir(tmp_path_factory) -> str:
  """A tiny CelebA-format directory (96/32/32 faces of 54x44 px, 4 attributes)."""
  return write_synthetic_celeba(SyntheticConfig(str(tmp_path_factory.mktemp("celeba"))))


@pytest.fixture(scope="session")
def celeba_shards(celeba_dir, tmp_path_factory) -> str:
  """`celeba_dir` sharded: 4 train shards; returns the shard directory."""
  out = str(tmp_path_factory.mktemp("shards"))
  shard_dataset(ShardConfig("celeba", celeba_dir, out, num_shards=4))
  return out
