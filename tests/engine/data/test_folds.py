"""Identity-disjoint folds: every training record lands in exactly one held-out fold, no
identity crosses train/held-out, and a fold directory is a shard set the engine reads."""

from __future__ import annotations

import collections
import os

import numpy as np
import pytest
import tensorflow as tf

from engine.data import integrity, schema
from engine.data.folds import FoldConfig, assign_folds, write_identity_folds
from engine.data.manifest import read_manifest, split_files

_IDENTITY = {schema.IDENTITY: tf.io.FixedLenFeature([], tf.int64)}


def _records(data_dir: str, split: str) -> list[tuple[bytes, int]]:
  files = split_files(data_dir, read_manifest(data_dir), split)
  return [(r.numpy(), int(tf.io.parse_single_example(r, _IDENTITY)[schema.IDENTITY]))
          for r in tf.data.TFRecordDataset(files)]


@pytest.fixture(scope="module")
def folds(celeba_shards, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("folds"))
  return write_identity_folds(FoldConfig(celeba_shards, out, num_folds=3, seed=1))


def test_each_record_is_held_out_once_and_identities_never_cross(celeba_shards, folds):
  source = collections.Counter(r for r, _ in _records(celeba_shards, "train"))
  held_out = collections.Counter()
  for fold_dir in folds:
    train, validation = _records(fold_dir, "train"), _records(fold_dir, "validation")
    assert collections.Counter(r for r, _ in train + validation) == source
    assert not {i for _, i in train} & {i for _, i in validation}
    held_out.update(r for r, _ in validation)
  assert held_out == source


def test_fold_manifests_verify_and_count_classes(folds):
  for k, fold_dir in enumerate(folds):
    manifest = read_manifest(fold_dir)
    integrity.verify_shards(fold_dir, manifest, full=True)  # raises on any difference
    assert manifest["fold"]["index"] == k and manifest["fold"]["num_folds"] == 3
    for split, entry in manifest["splits"].items():
      males = sum(1 for r, _ in _records(fold_dir, split)
                  if tf.io.parse_single_example(r, {"attributes/Male": tf.io.FixedLenFeature(
                      [], tf.int64)})["attributes/Male"] == 1)
      assert entry["class_counts"]["Male"]["1"] == males
      assert sum(entry["class_counts"]["Male"].values()) == entry["num_examples"]


def test_folds_are_reused_when_current_and_rewritten_when_not(celeba_shards, folds):
  mtimes = [os.path.getmtime(os.path.join(d, schema.MANIFEST)) for d in folds]
  again = write_identity_folds(FoldConfig(celeba_shards, os.path.dirname(folds[0]), 3, seed=1))
  assert [os.path.getmtime(os.path.join(d, schema.MANIFEST)) for d in again] == mtimes
  reseeded = write_identity_folds(FoldConfig(celeba_shards, os.path.dirname(folds[0]), 3, seed=2))
  assert [os.path.getmtime(os.path.join(d, schema.MANIFEST)) for d in reseeded] != mtimes
  assert read_manifest(reseeded[0])["fold"]["seed"] == 2


def test_assign_folds_balances_sizes_and_keeps_people_whole():
  identities = np.repeat(np.arange(40), np.arange(40) % 7 + 1)
  folds = assign_folds(identities, 4, seed=0)
  sizes = np.bincount(folds, minlength=4)
  assert sizes.max() - sizes.min() <= 7  # at most one identity's images apart
  for person in np.unique(identities):
    assert len(set(folds[identities == person])) == 1
  assert (assign_folds(identities, 4, seed=0) == folds).all()


def test_refuses_what_cannot_be_folded(celeba_shards, tmp_path):
  with pytest.raises(ValueError, match="at least 2 folds"):
    write_identity_folds(FoldConfig(celeba_shards, str(tmp_path), num_folds=1))
  with pytest.raises(ValueError, match="no split 'test_set'"):
    write_identity_folds(FoldConfig(celeba_shards, str(tmp_path), split="test_set"))


def test_a_train_fraction_keeps_whole_people_nested_and_the_held_out_faces(celeba_shards,
                                                                            tmp_path):
  whole = write_identity_folds(FoldConfig(celeba_shards, str(tmp_path), 3, seed=1))
  half = write_identity_folds(FoldConfig(celeba_shards, str(tmp_path), 3, seed=1,
                                         train_fraction=0.5))
  most = write_identity_folds(FoldConfig(celeba_shards, str(tmp_path), 3, seed=1,
                                         train_fraction=0.75))
  assert half[0] == whole[0] + "-train50" and most[0] == whole[0] + "-train75"
  for full_dir, half_dir, most_dir in zip(whole, half, most):
    assert _records(half_dir, "validation") == _records(full_dir, "validation")
    train = {d: _records(d, "train") for d in (full_dir, half_dir, most_dir)}
    people = {d: collections.Counter(i for _, i in records) for d, records in train.items()}
    for person, count in people[half_dir].items():  # whole people, each with every image
      assert people[full_dir][person] == count
    assert set(people[half_dir]) < set(people[most_dir]) < set(people[full_dir])
    n, largest = len(train[full_dir]), max(people[full_dir].values())
    assert n / 2 <= len(train[half_dir]) < n / 2 + largest
    assert {r for r, _ in train[half_dir]} <= {r for r, _ in train[full_dir]}
    manifest = read_manifest(half_dir)
    integrity.verify_shards(half_dir, manifest, full=True)
    assert manifest["fold"]["train_fraction"] == 0.5
    assert manifest["splits"]["train"]["num_examples"] == len(train[half_dir])
    assert manifest["identities"] == sorted(people[half_dir])
  assert "train_fraction" not in read_manifest(whole[0])["fold"]
  with pytest.raises(ValueError, match=r"train_fraction=0: .* \(0, 1\]"):
    write_identity_folds(FoldConfig(celeba_shards, str(tmp_path), 3, train_fraction=0))
