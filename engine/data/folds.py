"""Identity-disjoint k-fold shard sets cut from one split, for model selection.

Choosing a recipe, a checkpoint or a backbone on the validation split and then reporting
that split's accuracy overstates how the model does on new faces. Cross-validation on the
training partition keeps the validation split out of every choice: fold k trains on the
other folds and is scored on its own. Folds never split an identity (CelebA has ~20 images
per person; the same face in train and held-out would flatter the estimate the same way).

Each fold is an ordinary shard directory (`train` and `validation` splits, a manifest with
sizes and hashes), so every trainer, evaluator and benchmark reads it unchanged. Records are
copied as serialized bytes: no JPEG is decoded or re-encoded, and a fold's shards are a
function of the source shards, `num_folds`, `seed` and `train_fraction` alone.

`train_fraction` < 1 keeps the same held-out faces but trains each fold on a subset of its
training people (whole identities, about that share of the images): the points of a learning
curve. The subsets are nested: a smaller fraction's people are a prefix of a larger one's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np
import tensorflow as tf

from engine.atomic_write import atomic_write_json
from engine.data import integrity, schema
from engine.data.manifest import read_manifest, split_files

FOLD_DIR = "fold-{index}-of-{count}"
SUBSET_SUFFIX = "-train{percent}"  # a train_fraction < 1: fold-0-of-3-train50


@dataclasses.dataclass(frozen=True)
class FoldConfig:
  """Where the folds come from and go.

  Attributes:
    data_dir: a CelebA-format shard directory with identities.
    output_dir: the folds are written to `output_dir/fold-K-of-N/`.
    num_folds: how many folds (>= 2).
    seed: shuffles identities before they are dealt to folds.
    split: the split that is cut into folds (the training partition).
    train_fraction: the share of each fold's training images (whole people) it keeps; the
      held-out fold is unchanged.
  """

  data_dir: str
  output_dir: str
  num_folds: int = 5
  seed: int = 0
  split: str = "train"
  train_fraction: float = 1.0

  @property
  def suffix(self) -> str:
    """What sets a subset's directories apart: "" for whole folds, "-train50" for 0.5."""
    if self.train_fraction >= 1:
      return ""
    return SUBSET_SUFFIX.format(percent=f"{100 * self.train_fraction:g}")

  def fold_dir(self, index: int) -> str:
    return os.path.join(self.output_dir,
                        FOLD_DIR.format(index=index, count=self.num_folds) + self.suffix)


def _labels_and_identities(files: list[str], manifest: dict) -> tuple[list[bytes], np.ndarray,
                                                                       dict[str, np.ndarray]]:
  """Every record of `files` (serialized), its identity, and its class columns."""
  names = manifest.get("attribute_names") or []
  spec = {schema.IDENTITY: tf.io.FixedLenFeature([], tf.int64)}
  spec.update({schema.flat_key(schema.ATTRIBUTES, n): tf.io.FixedLenFeature([], tf.int64)
               for n in names})
  records, identities, columns = [], [], {n: [] for n in names}
  for record in tf.data.TFRecordDataset(files):
    parsed = tf.io.parse_single_example(record, spec)
    records.append(record.numpy())
    identities.append(int(parsed[schema.IDENTITY]))
    for n in names:
      columns[n].append(int(parsed[schema.flat_key(schema.ATTRIBUTES, n)]))
  return records, np.array(identities), {n: np.array(v) for n, v in columns.items()}


def assign_folds(identities: np.ndarray, num_folds: int, seed: int) -> np.ndarray:
  """The fold of each example: identities shuffled, then dealt largest-first to the
  currently smallest fold, so folds differ in size by at most one identity's images."""
  people, counts = np.unique(identities, return_counts=True)
  order = np.random.default_rng(seed).permutation(len(people))
  order = order[np.argsort(-counts[order], kind="stable")]
  sizes = np.zeros(num_folds, np.int64)
  fold_of_person = {}
  for p in order:
    fold = int(np.argmin(sizes))
    fold_of_person[int(people[p])] = fold
    sizes[fold] += counts[p]
  return np.array([fold_of_person[int(i)] for i in identities])


def subsample_people(identities: np.ndarray, members: np.ndarray, fraction: float,
                     seed: int) -> np.ndarray:
  """The members (indices into `identities`) of the first people, in an order drawn from
  `seed`, that hold `fraction` of the members' images (the last person whole).

  Every fold ranks people by the same order, so a smaller fraction's people are a prefix
  of a larger one's: nested subsets, one learning curve."""
  if fraction >= 1:
    return members
  people = np.unique(identities)
  rank = dict(zip(people.tolist(), np.random.default_rng([seed, 1]).permutation(len(people))))
  own, counts = np.unique(identities[members], return_counts=True)
  order = np.argsort([rank[int(p)] for p in own], kind="stable")
  before = np.cumsum(counts[order]) - counts[order]  # images kept before each person
  kept = own[order][before < fraction * len(members)]
  return members[np.isin(identities[members], kept)]


def _write_split(path: str, records: list[bytes]) -> None:
  tmp = path + ".tmp"
  with tf.io.TFRecordWriter(tmp) as writer:
    for record in records:
      writer.write(record)
  os.replace(tmp, path)


def _fold_manifest(source: dict, config: FoldConfig, index: int, splits: dict,
                   train_identities: list[int]) -> dict:
  manifest = {k: v for k, v in source.items() if k not in ("splits", "identities", "throughput")}
  manifest["splits"] = splits
  manifest["identities"] = train_identities
  manifest["fold"] = {"index": index, "num_folds": config.num_folds, "seed": config.seed,
                      "source_dir": os.path.abspath(config.data_dir), "split": config.split,
                      "source_shards": [s["sha256"] for s in
                                        source["splits"][config.split]["shards"]]}
  if config.train_fraction < 1:  # absent at 1: folds written before the option stay current
    manifest["fold"]["train_fraction"] = config.train_fraction
  return manifest


def _class_counts(columns: dict[str, np.ndarray], members: np.ndarray) -> dict:
  return {n: {"0": int((v[members] == 0).sum()), "1": int((v[members] == 1).sum())}
          for n, v in columns.items()}


def _is_current(fold_dir: str, expected: dict) -> bool:
  path = os.path.join(fold_dir, schema.MANIFEST)
  if not os.path.exists(path):
    return False
  with open(path) as f:
    return json.load(f).get("fold") == expected


def write_identity_folds(config: FoldConfig) -> list[str]:
  """Writes (or reuses, when already written from the same shards) the k fold directories.

  Returns:
    The fold directories, fold 0 first.

  Raises:
    ValueError: fewer than two folds or identities, or shards without identities.
  """
  source = read_manifest(config.data_dir)
  if config.num_folds < 2:
    raise ValueError(f"num_folds={config.num_folds}: cross-validation needs at least 2 folds")
  if not 0 < config.train_fraction <= 1:
    raise ValueError(f"train_fraction={config.train_fraction}: the share of each fold's "
                     "training images to keep must be in (0, 1]")
  if not source.get("has_identity"):
    raise ValueError(f"{config.data_dir}: identity-disjoint folds need identities in the shards "
                     "(CelebA's identity_CelebA.txt when sharding)")
  if config.split not in source["splits"]:
    raise ValueError(f"{config.data_dir}: no split {config.split!r} to cut into folds "
                     f"(has {sorted(source['splits'])})")
  dirs = [config.fold_dir(k) for k in range(config.num_folds)]
  expected = [_fold_manifest(source, config, k, {}, [])["fold"] for k in range(config.num_folds)]
  if all(_is_current(d, e) for d, e in zip(dirs, expected)):
    return dirs
  integrity.check_shards(config.data_dir, source, [config.split], "full")
  records, identities, columns = _labels_and_identities(
      split_files(config.data_dir, source, config.split), source)
  if len(np.unique(identities)) < config.num_folds:
    raise ValueError(f"{config.data_dir}: {len(np.unique(identities))} identities in split "
                     f"{config.split}, fewer than num_folds={config.num_folds}")
  folds = assign_folds(identities, config.num_folds, config.seed)
  name = source["dataset_name"]
  for k, fold_dir in enumerate(dirs):
    if os.path.exists(fold_dir):
      shutil.rmtree(fold_dir)  # from other shards or options: never mix the two
    os.makedirs(fold_dir)
    splits = {}
    train = subsample_people(identities, np.flatnonzero(folds != k), config.train_fraction,
                             config.seed)
    for split, members in (("train", train), ("validation", np.flatnonzero(folds == k))):
      path = os.path.join(fold_dir, schema.FILENAME_TEMPLATE.format(
          DATASET=name, SPLIT=split, FILEFORMAT="tfrecord", SHARD_X_OF_Y="00000-of-00001"))
      _write_split(path, [records[i] for i in members])
      splits[split] = {"num_examples": int(len(members)),
                       "class_counts": _class_counts(columns, members),
                       "shards": [integrity.shard_entry(path, int(len(members)))]}
    train_people = sorted({int(i) for i in identities[train]})
    # The manifest goes last: a fold directory without one is incomplete and rewritten.
    atomic_write_json(os.path.join(fold_dir, schema.MANIFEST),
                      _fold_manifest(source, config, k, splits, train_people))
  return dirs
