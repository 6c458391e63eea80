"""Reads an image-folder dataset (one sub-folder per class) into `SourceRecord`s.

Two layouts: split folders first (`Training/male/x.jpg`, `Validation/female/y.jpg`, the
Kaggle gender set), or class folders directly (`pins_Adriana Lima/x.jpg`, Pins), in
which case a seeded split by fraction assigns each image to train/validation/test.
"""

from __future__ import annotations

import os

import numpy as np

from engine.data import schema
from engine.data.sharding.config import ShardConfig, ShardingError
from engine.data.sharding.records import SourceRecord

SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "validation", "valid": "validation", "validation": "validation",
    "test": "test", "testing": "test",
}


def _subdirs(path: str) -> list[str]:
  return sorted(d for d in os.listdir(path)
                if os.path.isdir(os.path.join(path, d)) and not d.startswith("."))


def _images(path: str) -> list[str]:
  """Image files below `path` (recursively), sorted, relative to `path`."""
  found = []
  for root, dirs, files in os.walk(path):
    dirs.sort()
    for name in sorted(files):
      if name.lower().endswith(schema.IMAGE_EXTENSIONS):
        found.append(os.path.relpath(os.path.join(root, name), path))
  return found


def _seeded_split(count: int, config: ShardConfig) -> list[str]:
  order = np.random.default_rng(config.seed).permutation(count)
  n_val = round(count * config.validation_fraction)
  n_test = round(count * config.test_fraction)
  splits = ["train"] * count
  for rank, index in enumerate(order):
    if rank < n_val:
      splits[index] = "validation"
    elif rank < n_val + n_test:
      splits[index] = "test"
  return splits


def read_folder(config: ShardConfig) -> tuple[list[SourceRecord], dict]:
  """Reads `config.data_dir` -> (records, dataset facts incl. class_names)."""
  root = config.data_dir
  if not os.path.isdir(root):
    raise ShardingError(f"{root}: not a directory")
  top = _subdirs(root)
  split_dirs = {d: SPLIT_ALIASES[d.lower()] for d in top if d.lower() in SPLIT_ALIASES}
  if split_dirs and len(split_dirs) != len(top):
    others = sorted(set(top) - set(split_dirs))
    raise ShardingError(f"{root}: mixes split folders {sorted(split_dirs)} with other folders "
                        f"{others}; use one layout")
  layout = {d: _subdirs(os.path.join(root, d)) for d in split_dirs} if split_dirs else {"": top}
  class_names = sorted({c for classes in layout.values() for c in classes})
  if len(class_names) < 2:
    raise ShardingError(f"{root}: found {len(class_names)} class folder(s); need at least 2")
  entries = []  # (split or None, class, relative path)
  for split_dir, classes in layout.items():
    for class_name in classes:
      class_dir = os.path.join(root, split_dir, class_name)
      for rel in _images(class_dir):
        entries.append((split_dirs.get(split_dir), class_name,
                        os.path.join(split_dir, class_name, rel)))
  if not entries:
    raise ShardingError(f"{root}: no images ({', '.join(schema.IMAGE_EXTENSIONS)}) found")
  splits = ([e[0] for e in entries] if split_dirs else _seeded_split(len(entries), config))
  records = []
  for (_, class_name, rel), split in zip(entries, splits):
    records.append(SourceRecord(
        path=os.path.join(root, rel), file_name=rel, split=split, where=os.path.join(root, rel),
        features={schema.FILE_NAME: rel, schema.LABEL: class_names.index(class_name)}))
  return records, {"class_names": class_names}
