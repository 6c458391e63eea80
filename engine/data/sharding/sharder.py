"""Shards a CelebA or image-folder dataset into TFDS-loadable TFRecords."""

from __future__ import annotations

import concurrent.futures
import json
import logging
import multiprocessing
import os
import re
import time

from engine.atomic_write import atomic_write_json
from engine.data import integrity, schema
from engine.data.sharding import plan as planning
from engine.data.sharding.celeba import read_celeba
from engine.data.sharding.config import ShardConfig, ShardingError
from engine.data.sharding.folder import read_folder
from engine.data.sharding.progress import Progress
from engine.data.sharding.writer import TMP_SUFFIX, ShardJob, build_features, write_shard

PLAN_FILE = ".shard_plan.json"
DATASET_NAMES = {"celeba": "celeb_a", "folder": "image_folder"}
# Output names come from the source kind, the split and the shard index only, never from
# input file or class names; a rerun deletes only temporary files of these names.
_OWN_NAME = re.compile(r"^(%s)-(%s)\.tfrecord-\d{5}-of-\d{5}$|^%s$|^%s$" % (
    "|".join(DATASET_NAMES.values()), "|".join(planning.SPLITS), re.escape(PLAN_FILE),
    re.escape(schema.MANIFEST)))
# Below this many images per worker a process pool costs more (a TensorFlow import per
# worker, ~3 s) than it saves: copying bytes runs ~2,800 images/s per core, re-encoding ~400.
_MIN_IMAGES_PER_WORKER = {"copy": 8000, "reencode": 1000}


def _image_shape(images: list[planning.CheckedImage], config: ShardConfig) -> list | None:
  if config.image_size:
    return [*config.image_size, 3]
  sizes = {i.size for i in images}
  return [*sizes.pop(), 3] if len(sizes) == 1 and None not in sizes else None


def _shard_path(config: ShardConfig, p: planning.ShardPlan) -> str:
  name = f"{DATASET_NAMES[config.source]}-{p.split}.tfrecord-{p.index:05d}-of-{p.count:05d}"
  return os.path.join(config.output_dir, name)


def _worker_count(config: ShardConfig, num_jobs: int, num_images: int) -> int:
  if config.workers:
    return min(config.workers, num_jobs)
  per_worker = _MIN_IMAGES_PER_WORKER["reencode" if config.image_size else "copy"]
  wanted = max(1, num_images // per_worker)
  return max(1, min(os.cpu_count() or 1, num_jobs, wanted))


def _run_jobs(jobs: list[ShardJob], workers: int, progress: Progress) -> None:
  if workers == 1:
    for job in jobs:
      progress.add(write_shard(job)[1])
    return
  # spawn, not fork: TensorFlow is not fork-safe once initialised.
  context = multiprocessing.get_context("spawn")
  with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
    for _, count in pool.map(write_shard, jobs):
      progress.add(count)


def _write_tfds_metadata(config: ShardConfig, features, plans: list[planning.ShardPlan]) -> None:
  import tensorflow_datasets as tfds

  split_infos = []
  for split in planning.SPLITS:
    shards = [p for p in plans if p.split == split]
    if shards:
      split_infos.append(tfds.core.SplitInfo(
          name=split, shard_lengths=[len(p.images) for p in shards],
          num_bytes=sum(os.path.getsize(_shard_path(config, p)) for p in shards)))
  tfds.folder_dataset.write_metadata(
      data_dir=config.output_dir, features=features, split_infos=split_infos,
      filename_template=tfds.core.ShardedFileTemplate(
          data_dir=config.output_dir, template=schema.FILENAME_TEMPLATE,
          dataset_name=DATASET_NAMES[config.source], filetype_suffix="tfrecord"),
      version="1.0.0", check_data=False,
      description=f"facetrain shards of {config.source} data from {config.data_dir}")


def _class_counts(images: list[planning.CheckedImage], facts: dict) -> dict:
  if "class_names" in facts:
    counts = {name: 0 for name in facts["class_names"]}
    for image in images:
      counts[facts["class_names"][image.record.features[schema.LABEL]]] += 1
    return counts
  counts = {name: {"0": 0, "1": 0} for name in facts["attribute_names"]}
  for image in images:
    for name, value in image.record.features[schema.ATTRIBUTES].items():
      counts[name][str(int(value))] += 1
  return counts


def _manifest(config, facts, plans, images, skipped, image_shape, seconds, written) -> dict:
  splits = {}
  for split in planning.SPLITS:
    shards = [p for p in plans if p.split == split]
    if not shards:
      continue
    members = [i for p in shards for i in p.images]
    splits[split] = {
        "num_examples": len(members),
        "class_counts": _class_counts(members, facts),
        "shards": [integrity.shard_entry(_shard_path(config, p), len(p.images)) for p in shards],
    }
  manifest = {
      "format_version": 1, "dataset_name": DATASET_NAMES[config.source], "source": config.source,
      "source_dir": os.path.abspath(config.data_dir), "options": config.to_json(),
      "image_shape": image_shape, "splits": splits,
      "skipped": [{"file": s["file"], "reason": s["reason"]} for s in skipped],
      "throughput": {"images_written": written, "seconds": round(seconds, 3),
                     "images_per_sec": round(written / seconds, 1) if seconds > 0 else None},
      **facts,
  }
  if facts.get("has_identity"):
    manifest["identities"] = sorted({i.record.features[schema.IDENTITY] for i in images
                                     if i.record.split == "train"})
  return manifest


def shard_dataset(config: ShardConfig) -> dict:
  """Shards `config.data_dir` into `config.output_dir`; returns the manifest.

  Resumable: a rerun of a killed run writes only the missing shards; a rerun of a
  finished run does nothing. Raises ShardingError (naming file and line) on bad input,
  before any shard is written under its final name.
  """
  config.validate()
  start = time.perf_counter()
  if config.source == "celeba":
    records, facts = read_celeba(config.data_dir)
  else:
    records, facts = read_folder(config)
  images, skipped = planning.check_images(records, config)
  images = planning.select_subset(images, config)
  plans = planning.make_plan(images, config)
  fingerprint = planning.fingerprint(plans, config)
  os.makedirs(config.output_dir, exist_ok=True)
  plan_path = os.path.join(config.output_dir, PLAN_FILE)
  manifest_path = os.path.join(config.output_dir, schema.MANIFEST)
  if os.path.exists(plan_path):
    with open(plan_path) as f:
      previous = json.load(f)["fingerprint"]
    if previous != fingerprint:
      raise ShardingError(f"{config.output_dir}: holds shards of a different run (other data or "
                          "options); use a new --output_dir or delete it")
    if os.path.exists(manifest_path):
      logging.info("%s is already complete (same data and options): nothing to do",
                   config.output_dir)
      with open(manifest_path) as f:
        return json.load(f)
  atomic_write_json(plan_path, {"fingerprint": fingerprint, "options": config.to_json()})
  for name in os.listdir(config.output_dir):
    if name.endswith(TMP_SUFFIX) and _OWN_NAME.match(name[:-len(TMP_SUFFIX)]):
      os.remove(os.path.join(config.output_dir, name))  # leftovers of a killed run
  image_shape = _image_shape(images, config)
  spec = ({"attribute_names": facts["attribute_names"], "has_identity": facts["has_identity"],
           "has_landmarks": facts["has_landmarks"], "image_shape": image_shape}
          if config.source == "celeba" else
          {"class_names": facts["class_names"], "image_shape": image_shape})
  jobs = [ShardJob(_shard_path(config, p),
                   tuple((i.record.path, i.record.features, i.orientation) for i in p.images),
                   spec, config.source, config.image_size, config.jpeg_quality)
          for p in plans if not os.path.exists(_shard_path(config, p))]
  done = len(plans) - len(jobs)
  if done:
    logging.info("resuming: %d of %d shards already complete", done, len(plans))
  todo_images = sum(len(j.images) for j in jobs)
  workers = _worker_count(config, len(jobs), todo_images)
  logging.info("writing %d images into %d shards with %d worker(s)", todo_images, len(jobs), workers)
  _run_jobs(jobs, workers, Progress(todo_images))
  _write_tfds_metadata(config, build_features(config.source, spec), plans)
  manifest = _manifest(config, facts, plans, images, skipped, image_shape,
                       time.perf_counter() - start, todo_images)
  atomic_write_json(manifest_path, manifest)
  logging.info("wrote %s: %s", manifest_path,
               ", ".join(f"{s} {v['num_examples']}" for s, v in manifest["splits"].items()))
  return manifest
