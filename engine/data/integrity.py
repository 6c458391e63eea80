"""Are the shards on disk the ones manifest.json describes, and which record is broken?

Two checks against the manifest, and one search:
- fast (before every run): every listed shard exists with the listed size, and the
  SHA-256 of its first and last 64 KiB matches `sha256_head_tail` when the manifest
  has it (sharders before that field: size only). It reads at most 128 KiB per
  shard, so all of CelebA (1.4 GB in ~22 shards) costs milliseconds. It catches
  truncated, missing, replaced and re-sharded files, and bytes changed in place near
  either end; a byte changed in the middle passes it, and the reader's CRCs catch
  that record when it is read.
- full (on request): the SHA-256 of every byte.
- `locate_corrupt_record`: TensorFlow's DataLossError ("corrupted record at N",
  "truncated record at N") names a byte offset but no file; this names the shard and
  the record index, so an error can tell the user what to re-shard.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from typing import Sequence

import tensorflow as tf

from engine.data.manifest import ShardIntegrityError, split_files

# The fast check hashes this many bytes at each end of a shard.
HEAD_TAIL_BYTES = 64 * 1024
HEAD_TAIL_KEY = "sha256_head_tail"
_MAX_LISTED_PROBLEMS = 10
_READ_BLOCK_BYTES = 1 << 20
_SCAN_BATCH = 1024  # records per step when searching for a corrupt one


def file_sha256(path: str) -> str:
  """The SHA-256 of a whole file, read in 1 MiB blocks."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(_READ_BLOCK_BYTES), b""):
      digest.update(block)
  return digest.hexdigest()


def head_tail_sha256(path: str) -> str:
  """The SHA-256 of a file's first and last HEAD_TAIL_BYTES (the whole file if smaller)."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    size = os.fstat(f.fileno()).st_size
    if size <= 2 * HEAD_TAIL_BYTES:
      digest.update(f.read())
    else:
      digest.update(f.read(HEAD_TAIL_BYTES))
      f.seek(size - HEAD_TAIL_BYTES)
      digest.update(f.read(HEAD_TAIL_BYTES))
  return digest.hexdigest()


def shard_entry(path: str, num_examples: int) -> dict:
  """A shard's manifest entry: what `verify_shards` checks it against."""
  return {"file": os.path.basename(path), "num_examples": num_examples,
          "bytes": os.path.getsize(path), "sha256": file_sha256(path),
          HEAD_TAIL_KEY: head_tail_sha256(path)}


def _shard_problem(path: str, shard: dict, full: bool) -> str | None:
  """What differs between the file at `path` and its manifest entry, or None."""
  try:
    size = os.path.getsize(path)
  except FileNotFoundError:
    return "missing"
  if size != shard["bytes"]:
    return (f"{size} bytes, manifest.json says {shard['bytes']} "
            f"({'truncated' if size < shard['bytes'] else 'grown'}, or from another run)")
  expected = shard.get(HEAD_TAIL_KEY)
  if expected and head_tail_sha256(path) != expected:
    return (f"same size, but its first/last {HEAD_TAIL_BYTES // 1024} KiB differ from "
            "manifest.json (bytes changed in place)")
  if full and file_sha256(path) != shard["sha256"]:
    return "same size, but its SHA-256 differs from manifest.json (bytes changed in place)"
  return None


def verify_shards(data_dir: str, manifest: dict, splits: Sequence[str] | None = None,
                  full: bool = False) -> None:
  """Checks the shards of `splits` against `manifest` (see the module docstring).

  Args:
    data_dir: the shard directory.
    manifest: its manifest.json, as read by `manifest.read_manifest`.
    splits: the splits to check; None checks every split of the manifest.
    full: also compare the SHA-256 of every byte (reads everything).

  Raises:
    ShardIntegrityError: naming every shard that is missing or differs, and how.
    ValueError: a requested split is not in the manifest.
  """
  start = time.perf_counter()
  splits = list(manifest["splits"]) if splits is None else list(splits)
  unknown = [s for s in splits if s not in manifest["splits"]]
  if unknown:
    raise ValueError(f"{data_dir}: no split(s) {unknown}; has {sorted(manifest['splits'])}")
  problems, num_bytes, num_files = [], 0, 0
  for split in splits:
    entries = manifest["splits"][split]["shards"]
    for path, shard in zip(split_files(data_dir, manifest, split), entries):
      problem = _shard_problem(path, shard, full)
      if problem:
        problems.append((path, problem))
      num_bytes, num_files = num_bytes + shard["bytes"], num_files + 1
  if problems:
    listed = "\n".join(f"  {path}: {what}" for path, what in problems[:_MAX_LISTED_PROBLEMS])
    more = (f"\n  ... and {len(problems) - _MAX_LISTED_PROBLEMS} more"
            if len(problems) > _MAX_LISTED_PROBLEMS else "")
    raise ShardIntegrityError(
        f"{data_dir}: {len(problems)} of {num_files} shard(s) of {', '.join(splits)} do not match "
        f"manifest.json; re-shard (python -m tfrecords.shard) or restore them:\n{listed}{more}",
        problems)
  has_head_tail = all(HEAD_TAIL_KEY in s for split in splits
                      for s in manifest["splits"][split]["shards"])
  how = ("full SHA-256" if full else
         f"sizes + first/last {HEAD_TAIL_BYTES // 1024} KiB" if has_head_tail else
         "sizes only (manifest without head/tail digests)")
  logging.info("%s: %d shard(s) of %s (%.1f MB) match manifest.json (%s) in %.1f ms", data_dir,
               num_files, ", ".join(splits), num_bytes / 2**20, how,
               (time.perf_counter() - start) * 1e3)


def check_shards(data_dir: str, manifest: dict, splits: Sequence[str], mode: str) -> None:
  """`verify_shards` as a run asks for it: mode "fast", "full" or "off" (logged)."""
  if mode == "off":
    logging.warning("%s: shards not checked against manifest.json (verify_shards=off)", data_dir)
    return
  verify_shards(data_dir, manifest, splits, full=mode == "full")


def _tf_message(error: tf.errors.OpError) -> str:
  """TensorFlow's message without the function-node and op decorations."""
  message = re.sub(r"\{\{[^}]*\}\}\s*", "", error.message)
  return re.sub(r"\s*\[Op:[^\]]*\].*$", "", message, flags=re.S).strip()


def _first_unreadable(path: str) -> tuple[int, str] | None:
  """(index of the first unreadable record of `path`, TensorFlow's message), or None."""
  whole_batches = 0  # records in batches read without error; a failing batch yields nothing
  try:
    for size in tf.data.TFRecordDataset(path).batch(_SCAN_BATCH).map(tf.size):
      whole_batches += int(size)
    return None
  except tf.errors.OpError:
    pass
  index = whole_batches  # then one record at a time, at most one batch's worth
  try:
    for _ in tf.data.TFRecordDataset(path).skip(whole_batches):
      index += 1
  except tf.errors.OpError as e:
    return index, _tf_message(e)
  return None  # the file changed between the two reads


def locate_corrupt_record(files: Sequence[str]) -> tuple[str, int, str] | None:
  """Finds the first unreadable record, reading `files` one after the other.

  Clean files are read once, in batches inside tf.data (540 MB in 0.4 s here); the damaged
  one is read again up to its bad record, one record at a time for the last batch.

  Returns:
    (file, index of the first unreadable record, counted from 0 in that file,
    TensorFlow's message), or None when every record of every file reads.
  """
  for path in files:
    found = _first_unreadable(path)
    if found:
      return path, *found
  return None


def log_unreadable_records(data_dir: str, manifest: dict, split: str) -> int:
  """For on_bad_record=skip: reads every shard of `split` once and logs, per damaged shard,
  its first unreadable record and how many of its records are lost with it (a TFRecord
  reader cannot resync, so the rest of that shard goes). Returns the records lost."""
  start, lost_total = time.perf_counter(), 0
  shards = manifest["splits"][split]["shards"]
  for path, shard in zip(split_files(data_dir, manifest, split), shards):
    found = _first_unreadable(path) if os.path.exists(path) else (0, "missing")
    if found is None:
      continue
    index, message = found
    lost = shard["num_examples"] - index
    lost_total += lost
    logging.warning("on_bad_record=skip: %s: record %d (counted from 0) is unreadable (%s); "
                    "it and the %d records after it are skipped, every epoch", path, index,
                    message, lost - 1)
  if lost_total:
    logging.warning("on_bad_record=skip: %s/%s: %d of %d records skipped", data_dir, split,
                    lost_total, manifest["splits"][split]["num_examples"])
  logging.info("%s/%s: every shard read in %.1f s to count unreadable records", data_dir, split,
               time.perf_counter() - start)
  return lost_total


def corrupt_record_error(data_dir: str, manifest: dict, split: str,
                         error: tf.errors.OpError) -> ShardIntegrityError:
  """The error to raise for a DataLossError met while reading `split`: names the shard.

  Scans the split's files (on the error path only; ~1 GB/s here), so the caller writes
  `raise corrupt_record_error(...) from error`.
  """
  found = locate_corrupt_record(split_files(data_dir, manifest, split))
  if found is None:
    return ShardIntegrityError(
        f"{data_dir}/{split}: reading failed ({_tf_message(error)}), but a rescan read every "
        "record of every shard (a transient read error, or the files changed since)")
  path, index, message = found
  return ShardIntegrityError(
      f"{path}: record {index} (counted from 0) is unreadable: {message}. The shard is damaged; "
      "re-shard (python -m tfrecords.shard), or pass on_bad_record=skip to drop it and the rest "
      "of that shard", [(path, f"record {index}: {message}")])
