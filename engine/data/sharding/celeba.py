"""Reads CelebA from its own files into `SourceRecord`s.

Files (in `data_dir`): `img_align_celeba/` (JPEGs), `list_attr_celeba.txt` (line 1 the
row count, line 2 the attribute names, then `name v1 v2 ...` with values 1/-1),
`list_eval_partition.txt` (`name 0|1|2`), and when present `identity_CelebA.txt`
(`name id`) and `list_landmarks_align_celeba.txt` (count, header, `name x1 y1 ...`).
Every problem names the file and line. Image names must stay inside `img_align_celeba/`
(no `..`, not absolute, and no link out of it), checked while parsing: before any image
is read and before anything is written.
"""

from __future__ import annotations

import os
from typing import Iterator

from engine.data import schema
from engine.data.sharding.config import ShardingError
from engine.data.sharding.records import SourceRecord

IMAGE_DIR = "img_align_celeba"
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
IDENTITY_FILE = "identity_CelebA.txt"
LANDMARK_FILE = "list_landmarks_align_celeba.txt"
SPLIT_BY_CODE = {"0": "train", "1": "validation", "2": "test"}


def _lines(path: str) -> Iterator[tuple[int, list[str]]]:
  """Yields (1-based line number, whitespace-split fields), skipping blank lines."""
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, start=1):
      fields = line.split()
      if fields:
        yield number, fields


def _check_name(path: str, number: int, name: str) -> None:
  """Refuses an image name that would leave img_align_celeba/.

  The annotation files say where the images are; they must not be able to point the
  sharder at any other file (whose bytes would end up in the shards).
  """
  parts = name.replace("\\", "/").split("/")
  if os.path.isabs(name) or ".." in parts or "\x00" in name or name in ("", "."):
    raise ShardingError(f"{path}:{number}: image name {name!r} must be a relative path inside "
                        f"{IMAGE_DIR}/ (no '..', not absolute); refusing to read outside it")


def _check_resolves_inside(image_path: str, file_name: str, image_root: str, where: str) -> None:
  """Refuses an image that is, or lies under, a link resolving outside `image_root`.

  `image_root` is the resolved image directory, so img_align_celeba/ may itself be a
  link (to a larger disk); only links from inside it to elsewhere are refused.
  """
  if "/" not in file_name and not os.path.islink(image_path):
    return  # a plain file directly in the directory: one lstat, nothing to resolve
  target = os.path.realpath(image_path)
  if os.path.commonpath([target, image_root]) != image_root:
    raise ShardingError(f"{where}: {file_name} resolves to {target}, outside {image_root}; "
                        f"copy the image into {IMAGE_DIR}/ instead of linking it")


def _required(data_dir: str, name: str) -> str:
  path = os.path.join(data_dir, name)
  if not os.path.exists(path):
    raise ShardingError(f"{path}: missing (a CelebA directory needs {ATTR_FILE}, "
                        f"{PARTITION_FILE} and {IMAGE_DIR}/)")
  return path


def read_attributes(path: str) -> tuple[list[str], dict[str, tuple[int, dict[str, bool]]]]:
  """Parses list_attr_celeba.txt -> (names, {file: (line, {name: bool})})."""
  lines = _lines(path)
  try:
    _, count_fields = next(lines)
    _, names = next(lines)
  except StopIteration:
    raise ShardingError(f"{path}: needs a count line and an attribute-name line") from None
  if len(count_fields) != 1 or not count_fields[0].isdigit():
    raise ShardingError(f"{path}:1: expected the row count, got {' '.join(count_fields)!r}")
  rows: dict[str, tuple[int, dict[str, bool]]] = {}
  for number, fields in lines:
    _check_name(path, number, fields[0])
    if len(fields) != len(names) + 1:
      raise ShardingError(f"{path}:{number}: expected {len(names) + 1} columns "
                          f"(file name + {len(names)} attributes), got {len(fields)}")
    values = {}
    for name, value in zip(names, fields[1:]):
      if value not in ("1", "-1"):
        raise ShardingError(f"{path}:{number}: attribute {name} must be 1 or -1, got {value!r}")
      values[name] = value == "1"
    if fields[0] in rows:
      raise ShardingError(f"{path}:{number}: {fields[0]} listed twice")
    rows[fields[0]] = (number, values)
  if int(count_fields[0]) != len(rows):
    raise ShardingError(f"{path}:1: says {count_fields[0]} rows but has {len(rows)} "
                        "(truncated or edited file?)")
  return names, rows


def _read_pairs(path: str, known: dict, what: str) -> dict[str, tuple[int, str]]:
  """Parses `name value` files; every name must be one the attribute file lists."""
  pairs = {}
  for number, fields in _lines(path):
    _check_name(path, number, fields[0])
    if len(fields) != 2:
      raise ShardingError(f"{path}:{number}: expected 'file {what}', got {' '.join(fields)!r}")
    if fields[0] not in known:
      raise ShardingError(f"{path}:{number}: {fields[0]} is not in {ATTR_FILE}")
    pairs[fields[0]] = (number, fields[1])
  return pairs


def _read_landmarks(path: str, known: dict) -> dict[str, dict[str, int]]:
  lines = _lines(path)
  next(lines, None)  # count
  next(lines, None)  # header
  landmarks = {}
  for number, fields in lines:
    _check_name(path, number, fields[0])
    if len(fields) != len(schema.LANDMARK_NAMES) + 1:
      raise ShardingError(f"{path}:{number}: expected {len(schema.LANDMARK_NAMES) + 1} columns, "
                          f"got {len(fields)}")
    if fields[0] not in known:
      raise ShardingError(f"{path}:{number}: {fields[0]} is not in {ATTR_FILE}")
    try:
      landmarks[fields[0]] = dict(zip(schema.LANDMARK_NAMES, map(int, fields[1:])))
    except ValueError:
      raise ShardingError(f"{path}:{number}: landmarks must be integers") from None
  return landmarks


def read_celeba(data_dir: str) -> tuple[list[SourceRecord], dict]:
  """Reads a CelebA directory -> (records in file-name order, dataset facts)."""
  attr_path = _required(data_dir, ATTR_FILE)
  partition_path = _required(data_dir, PARTITION_FILE)
  image_dir = _required(data_dir, IMAGE_DIR)
  names, attributes = read_attributes(attr_path)
  partition = _read_pairs(partition_path, attributes, "partition")
  identity_path = os.path.join(data_dir, IDENTITY_FILE)
  identities = (_read_pairs(identity_path, attributes, "identity")
                if os.path.exists(identity_path) else None)
  landmark_path = os.path.join(data_dir, LANDMARK_FILE)
  landmarks = (_read_landmarks(landmark_path, attributes)
               if os.path.exists(landmark_path) else None)
  image_root = os.path.realpath(image_dir)
  records = []
  for file_name in sorted(attributes):
    line, values = attributes[file_name]
    where = f"{attr_path}:{line}"
    _check_resolves_inside(os.path.join(image_dir, file_name), file_name, image_root, where)
    if file_name not in partition:
      raise ShardingError(f"{where}: {file_name} has no row in {partition_path}")
    p_line, code = partition[file_name]
    if code not in SPLIT_BY_CODE:
      raise ShardingError(f"{partition_path}:{p_line}: partition must be 0, 1 or 2, got {code!r}")
    features = {schema.FILE_NAME: file_name, schema.ATTRIBUTES: values}
    if identities is not None:
      if file_name not in identities:
        raise ShardingError(f"{where}: {file_name} has no row in {identity_path}")
      i_line, identity = identities[file_name]
      if not identity.isdigit():
        raise ShardingError(f"{identity_path}:{i_line}: identity must be an integer, got {identity!r}")
      features[schema.IDENTITY] = int(identity)
    if landmarks is not None:
      if file_name not in landmarks:
        raise ShardingError(f"{where}: {file_name} has no row in {landmark_path}")
      features[schema.LANDMARKS] = landmarks[file_name]
    records.append(SourceRecord(path=os.path.join(image_dir, file_name), file_name=file_name,
                                split=SPLIT_BY_CODE[code], where=where, features=features))
  facts = {"attribute_names": names, "has_identity": identities is not None,
           "has_landmarks": landmarks is not None}
  return records, facts
