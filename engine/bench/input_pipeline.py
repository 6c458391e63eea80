"""Input-pipeline throughput against the JPEG-decode ceiling and the seeds' pipelines.

All contenders read the same JPEGs on the same cores in one run:
  decode_ceiling           tf.data over the encoded bytes in memory: decode_jpeg + resize,
                           parallel, nothing else
  facetrain                our training pipeline (shards, shuffle, seeds' augmentation,
                           batch) decoding every image every epoch (cache=memory: encoded)
  facetrain_no_augment     the same without augmentation
  facetrain_decoded_cache  our default for a set this size (cache=auto: decoded images),
                           after its first epoch
  imagedatagen             tf_keras ImageDataGenerator.flow_from_directory (the seeds')
  keras_from_dir           keras.utils.image_dataset_from_directory (a second baseline)

This VM's speed drifts by up to 2x within minutes, so contenders take turns: `rounds`
rounds, each timing every contender for `seconds_per_turn` in a rotated order. Every turn
starts a fresh iterator, so no pipeline gains from buffers it filled while another was
timed. A ratio is the median over rounds of the ratio within a round.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import tempfile
import time
from typing import Callable, Iterator

import tensorflow as tf

from engine.data import pipeline, schema
from engine.data.manifest import read_manifest, split_files
from engine.config import AugmentConfig, InputConfig
from engine.data.sharding import ShardConfig, shard_dataset
from engine.data.synthetic import SyntheticConfig, write_synthetic_celeba
from engine.monitor.machine import machine_description

# The seeds' ImageDataGenerator settings (seed 004: rotation, shifts, shear, zoom, flip).
SEED_AUGMENT = {"rotation_range": 20, "width_shift_range": 0.1, "height_shift_range": 0.1,
                "shear_range": 10, "zoom_range": 0.1, "horizontal_flip": True}
OUR_AUGMENT = AugmentConfig(flip=True, rotation_deg=20, translate=0.1, shear_deg=10, zoom=0.1)


@dataclasses.dataclass(frozen=True)
class InputBenchConfig:
  data_dir: str | None = None       # shards; None: synthetic CelebA-size faces
  num_images: int = 2000
  image_size: tuple[int, int] = (128, 128)
  batch_size: int = 64
  augment: bool = True
  rounds: int = 3
  seconds_per_turn: float = 2.0     # timed per contender per round (after warm-up)
  warmup_batches: int = 8           # per turn, untimed: thread start-up and autotuning
  output_json: str | None = None


@dataclasses.dataclass(frozen=True)
class _Contender:
  start: Callable[[], Iterator]      # a fresh iterator over batches
  warmup_batches: int


def _timed_rate(contender: _Contender, config: InputBenchConfig) -> float:
  iterator = contender.start()
  for _ in range(contender.warmup_batches):
    next(iterator)
  batches, start = 0, time.perf_counter()
  while True:
    next(iterator)
    batches += 1
    elapsed = time.perf_counter() - start
    if elapsed >= config.seconds_per_turn and batches >= 2:
      return batches * config.batch_size / elapsed


def _encoded_images(shards_dir: str) -> list[tuple[bytes, int]]:
  manifest = read_manifest(shards_dir)
  files = split_files(shards_dir, manifest, "train")
  male = schema.flat_key(schema.ATTRIBUTES, "Male")
  spec = {schema.IMAGE: tf.io.FixedLenFeature([], tf.string),
          male: tf.io.FixedLenFeature([], tf.int64)}
  return [(ex[schema.IMAGE].numpy(), int(ex[male])) for ex in
          tf.data.TFRecordDataset(files).map(lambda s: tf.io.parse_single_example(s, spec))]


def _decode_ceiling(images, config) -> tf.data.Dataset:
  ds = tf.data.Dataset.from_tensor_slices([b for b, _ in images]).repeat()
  ds = ds.map(lambda b: tf.image.resize(tf.io.decode_jpeg(b, channels=3), config.image_size),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
  return ds.batch(config.batch_size).prefetch(tf.data.AUTOTUNE)


def _ours(shards_dir, config, augment: AugmentConfig, cache: str) -> tf.data.Dataset:
  return pipeline.make_dataset(InputConfig(
      shards_dir, image_size=config.image_size, global_batch_size=config.batch_size,
      augment=augment, cache=cache))


def _folder_tree(images, root: str) -> str:
  for i, (data, male) in enumerate(images):
    d = os.path.join(root, "male" if male else "female")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"{i:06d}.jpg"), "wb") as f:
      f.write(data)
  return root


def _image_data_generator(tree, config):
  import tf_keras  # the seeds' Keras 2 stack (the `bench` extra)

  kwargs = SEED_AUGMENT if config.augment else {}
  gen = tf_keras.preprocessing.image.ImageDataGenerator(rescale=1.0, **kwargs)
  return gen.flow_from_directory(tree, target_size=config.image_size,
                                 batch_size=config.batch_size, class_mode="binary", seed=0)


def _keras_from_directory(tree, config) -> tf.data.Dataset:
  import keras

  ds = keras.utils.image_dataset_from_directory(
      tree, image_size=config.image_size, batch_size=config.batch_size, seed=0).repeat()
  return ds.prefetch(tf.data.AUTOTUNE)


def synthetic_shards(work_dir: str, num_images: int) -> str:
  """CelebA-size (218x178) synthetic faces sharded into work_dir/shards; returns that path."""
  celeba = write_synthetic_celeba(SyntheticConfig(
      os.path.join(work_dir, "celeba"), image_size=(218, 178), num_identities=200,
      num_examples={"train": num_images, "validation": 10}))
  shards = os.path.join(work_dir, "shards")
  shard_dataset(ShardConfig("celeba", celeba, shards, num_shards=8))
  return shards


def _contenders(images, shards, tree, config) -> dict[str, _Contender]:
  augment = OUR_AUGMENT if config.augment else AugmentConfig()
  epoch_batches = -(-len(images) // config.batch_size)
  datasets = {
      "decode_ceiling": _decode_ceiling(images, config),
      "facetrain": _ours(shards, config, augment, cache="memory"),
      "facetrain_no_augment": _ours(shards, config, AugmentConfig(), cache="memory"),
      "facetrain_decoded_cache": _ours(shards, config, augment, cache="decoded"),
      "keras_from_dir": _keras_from_directory(tree, config),
  }
  contenders = {name: _Contender(ds.__iter__, config.warmup_batches)
                for name, ds in datasets.items()}
  # The decoded cache fills during the first epoch (one pass decodes every image); a
  # fresh iterator over the same dataset object then replays it. Warm up through it once.
  first = iter(datasets["facetrain_decoded_cache"])
  for _ in range(epoch_batches + 1):
    next(first)
  del first
  flow = _image_data_generator(tree, config)
  contenders["imagedatagen"] = _Contender(lambda: iter(flow), 1)
  return contenders


def _median_ratios(rounds: list[dict], base: str) -> dict[str, float]:
  return {name: round(statistics.median(r[name] / r[base] for r in rounds), 3)
          for name in rounds[0]}


def run_input_benchmark(config: InputBenchConfig) -> dict:
  with tempfile.TemporaryDirectory(prefix="facetrain-input-bench-") as work:
    shards = config.data_dir or synthetic_shards(work, config.num_images)
    images = _encoded_images(shards)
    tree = _folder_tree(images, os.path.join(work, "tree"))
    contenders = _contenders(images, shards, tree, config)
    names = list(contenders)
    rounds = []
    for r in range(config.rounds):
      order = names[r % len(names):] + names[:r % len(names)]  # rotate: drift hits all alike
      rounds.append({name: _timed_rate(contenders[name], config) for name in order})
  report = {
      "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "output_json"},
      "machine": machine_description(), "num_images": len(images),
      "images_per_sec": {n: round(statistics.median(r[n] for r in rounds), 1) for n in names},
      "vs_decode_ceiling": _median_ratios(rounds, "decode_ceiling"),
      "vs_seed_pipeline": _median_ratios(rounds, "imagedatagen"),
      "rounds": [{n: round(v, 1) for n, v in r.items()} for r in rounds],
  }
  if config.output_json:
    with open(config.output_json, "w") as f:
      json.dump(report, f, indent=2)
  return report
