"""Which images go where: checks, subset selection, seeded shuffle, shard assignment.

A plan is a pure function of the source files and the options (never of the worker
count), so the same inputs always give the same shards, and a rerun can tell whether
an output directory holds the same run (same fingerprint) before resuming it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math

import numpy as np

from engine.data.sharding.config import ShardConfig, ShardingError
from engine.data.sharding.jpeg import jpeg_orientation, jpeg_problem, jpeg_size, upright_size
from engine.data.sharding.records import SourceRecord

SPLITS = ("train", "validation", "test")
JPEG_EXTENSIONS = (".jpg", ".jpeg")
_MAX_LISTED_ERRORS = 5


@dataclasses.dataclass(frozen=True)
class CheckedImage:
  record: SourceRecord
  num_bytes: int
  size: tuple[int, int] | None  # upright (height, width) when known from the JPEG header
  orientation: int = 1          # EXIF orientation; not 1: the writer stores it upright


@dataclasses.dataclass(frozen=True)
class ShardPlan:
  split: str
  index: int
  count: int
  images: tuple[CheckedImage, ...]


def check_images(records: list[SourceRecord], config: ShardConfig
                 ) -> tuple[list[CheckedImage], list[dict]]:
  """Reads every image once and checks it; returns (good images, skipped)."""
  good, bad = [], []
  for record in records:
    try:
      with open(record.path, "rb") as f:
        data = f.read()
    except OSError as e:
      bad.append({"file": record.path, "where": record.where,
                  "reason": f"cannot read ({e.strerror or e})"})
      continue
    if record.path.lower().endswith(JPEG_EXTENSIONS):
      problem = jpeg_problem(data)
      if problem:
        bad.append({"file": record.path, "where": record.where, "reason": problem})
        continue
      orientation = jpeg_orientation(data)
      good.append(CheckedImage(record, len(data), upright_size(jpeg_size(data), orientation),
                               orientation))
    elif not data:
      bad.append({"file": record.path, "where": record.where, "reason": "empty file"})
    else:  # PNG/BMP/...: decoded and re-encoded as JPEG by the writer
      good.append(CheckedImage(record, len(data), None))
  if bad and config.on_bad_image == "error":
    listed = "\n".join(f"  {b['file']} (listed at {b['where']}): {b['reason']}"
                       for b in bad[:_MAX_LISTED_ERRORS])
    more = f"\n  ... and {len(bad) - _MAX_LISTED_ERRORS} more" if len(bad) > _MAX_LISTED_ERRORS else ""
    raise ShardingError(f"{len(bad)} bad image(s); nothing was written "
                        f"(--on_bad_image=skip skips them):\n{listed}{more}")
  for b in bad:
    logging.warning("skipping %s (listed at %s): %s", b["file"], b["where"], b["reason"])
  return good, bad


def _balance_value(image: CheckedImage, attribute: str) -> object:
  features = image.record.features
  if attribute == "label" and "label" in features:
    return features["label"]
  attributes = features.get("attributes", {})
  if attribute not in attributes:
    raise ShardingError(f"balance_by={attribute!r}: not an attribute of {image.record.where}; "
                        f"known: {', '.join(sorted(attributes) or ['label'])}")
  return attributes[attribute]


def select_subset(images: list[CheckedImage], config: ShardConfig) -> list[CheckedImage]:
  """Applies max_examples (and balance_by) with a seeded choice; keeps input order."""
  if config.max_examples is None or config.max_examples >= len(images) and not config.balance_by:
    return images
  rng = np.random.default_rng(config.seed)
  if not config.balance_by:
    keep = rng.choice(len(images), size=config.max_examples, replace=False)
    return [images[i] for i in sorted(keep)]
  groups: dict[object, list[int]] = {}
  for i, image in enumerate(images):
    groups.setdefault(_balance_value(image, config.balance_by), []).append(i)
  per_group = config.max_examples // len(groups)
  keep = []
  for value in sorted(groups, key=str):
    members = groups[value]
    if len(members) < per_group:
      logging.warning("balance_by=%s: only %d examples with value %s (wanted %d)",
                      config.balance_by, len(members), value, per_group)
    take = min(per_group, len(members))
    keep.extend(members[i] for i in rng.choice(len(members), size=take, replace=False))
  return [images[i] for i in sorted(keep)]


def _shard_count(images: list[CheckedImage], reference_count: int, config: ShardConfig) -> int:
  if config.num_shards is not None:
    # --num_shards is the train split's count (the largest split's, without train);
    # smaller splits get proportionally fewer.
    wanted = math.ceil(config.num_shards * len(images) / reference_count)
  else:
    if config.image_size:  # re-encoded size is unknown until written; assume JPEG ~ H*W/8
      est_bytes = len(images) * config.image_size[0] * config.image_size[1] * 3 / 8
    else:
      est_bytes = sum(i.num_bytes for i in images)
    wanted = math.ceil(est_bytes / (config.target_shard_mb * 2**20))
  return max(1, min(wanted, len(images)))


def make_plan(images: list[CheckedImage], config: ShardConfig) -> list[ShardPlan]:
  """Shuffles each split with the seed and cuts it into contiguous shards."""
  by_split = {s: [i for i in images if i.record.split == s] for s in SPLITS}
  if not images:
    raise ShardingError(f"{config.data_dir}: no examples after selection")
  if not by_split["train"]:  # e.g. CelebA's validation partition alone, to evaluate on
    logging.warning("%s: no training examples; writing %s only (for evaluation; the manifest "
                    "has no train split)", config.data_dir,
                    " and ".join(s for s in SPLITS if by_split[s]))
  reference_count = len(by_split["train"]) or max(len(m) for m in by_split.values())
  plans = []
  for split_index, split in enumerate(SPLITS):
    members = by_split[split]
    if not members:
      continue
    order = np.random.default_rng([config.seed, split_index]).permutation(len(members))
    shuffled = [members[i] for i in order]
    n = _shard_count(members, reference_count, config)
    for k in range(n):
      chunk = tuple(shuffled[k * len(shuffled) // n:(k + 1) * len(shuffled) // n])
      plans.append(ShardPlan(split, k, n, chunk))
  return plans


def fingerprint(plans: list[ShardPlan], config: ShardConfig) -> str:
  """Identifies a run by its options (not workers/output) and exact assignment."""
  options = {k: v for k, v in config.to_json().items() if k not in ("workers", "output_dir")}
  digest = hashlib.sha256(json.dumps(options, sort_keys=True).encode())
  for plan in plans:
    digest.update(f"{plan.split}/{plan.index}/{plan.count}:".encode())
    for image in plan.images:
      digest.update(f"{image.record.path}|{image.num_bytes};".encode())
  return digest.hexdigest()
