"""manifest.json: what the sharder wrote, read back (splits, shards, classes, counts)."""

from __future__ import annotations

import json
import os

from engine.data import schema


class ShardIntegrityError(ValueError):
  """A shard differs from manifest.json or holds an unreadable record; names the file.

  Attributes:
    problems: (shard path, what differs) for every problem found.
  """

  def __init__(self, message: str, problems=()):
    super().__init__(message)
    self.problems = list(problems)


def read_manifest(data_dir: str) -> dict:
  path = os.path.join(data_dir, schema.MANIFEST)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: missing; shard the data first (python -m tfrecords.shard)")
  with open(path) as f:
    return json.load(f)


def read_split_manifest(data_dir: str, split: str) -> dict:
  """read_manifest, for reading `split`.

  Raises:
    FileNotFoundError: no manifest.json in data_dir.
    ValueError: the shards have no such split (the message lists the ones they have).
  """
  manifest = read_manifest(data_dir)
  require_split(data_dir, manifest, split)
  return manifest


def require_split(data_dir: str, manifest: dict, split: str) -> None:
  """Raises ValueError naming the splits the shards have, when `split` is not one of them."""
  if split not in manifest["splits"]:
    raise ValueError(f"{data_dir}: no split {split!r}; has {sorted(manifest['splits'])}")


def split_files(data_dir: str, manifest: dict, split: str) -> list[str]:
  """The shard paths of `split`, in manifest order.

  Raises:
    ShardIntegrityError: a manifest entry is not a plain file name (it would point
      outside `data_dir`).
  """
  paths = []
  for shard in manifest["splits"][split]["shards"]:
    name = shard["file"]
    if not name or os.path.basename(name) != name or name in (".", ".."):
      raise ShardIntegrityError(f"{os.path.join(data_dir, schema.MANIFEST)}: shard entry "
                                f"{name!r} of split {split} is not a plain file name",
                          [(name, "not a plain file name")])
    paths.append(os.path.join(data_dir, name))
  return paths

