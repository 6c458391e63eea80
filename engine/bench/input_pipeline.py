"""Input-pipeline throughput against the JPEG-decode ceiling and the seeds' pipelines.

All contenders read the same JPEGs on the same cores in one run:
  decode_ceiling   tf.data over the encoded bytes in memory: decode_jpeg + resize, nothing else
  facetrain        engine.data.pipeline training pipeline (shards, shuffle, augment, batch),
                   with the seeds' augmentation set, with flip/zoom/shift only, and without
  imagedatagen     tf_keras ImageDataGenerator.flow_from_directory (the seeds' pipeline)
  keras_from_dir   keras.utils.image_dataset_from_directory (a second baseline)
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time

import tensorflow as tf

from engine.data import pipeline
from engine.data.augment import AugmentConfig
from engine.data.sharding import ShardConfig, shard_dataset
from engine.data.synthetic import SyntheticConfig, write_synthetic_celeba

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
  batches: int = 30                 # timed batches per contender (after warm-up)
  seed_batches: int = 5             # ImageDataGenerator is slow: fewer batches
  output_json: str | None = None


def _rate(iterator, batches: int, batch_size: int, warmup: int = 3) -> float:
  for _ in range(warmup):
    next(iterator)
  start = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * batch_size / (time.perf_counter() - start)


def _encoded_images(shards_dir: str) -> list[bytes]:
  manifest = pipeline.read_manifest(shards_dir)
  files = [os.path.join(shards_dir, s["file"]) for s in manifest["splits"]["train"]["shards"]]
  spec = {"image": tf.io.FixedLenFeature([], tf.string), "attributes/Male": tf.io.FixedLenFeature([], tf.int64)}
  return [(ex["image"].numpy(), int(ex["attributes/Male"])) for ex in
          tf.data.TFRecordDataset(files).map(lambda s: tf.io.parse_single_example(s, spec))]


def _decode_ceiling(images, config) -> float:
  ds = tf.data.Dataset.from_tensor_slices([b for b, _ in images]).cache().repeat()
  ds = ds.map(lambda b: tf.image.resize(tf.io.decode_jpeg(b, channels=3), config.image_size),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
  ds = ds.batch(config.batch_size).prefetch(tf.data.AUTOTUNE)
  return _rate(iter(ds), config.batches, config.batch_size)


def _ours(shards_dir, config, augment: AugmentConfig) -> float:
  ds = pipeline.make_dataset(pipeline.InputConfig(
      shards_dir, image_size=config.image_size, global_batch_size=config.batch_size,
      augment=augment))
  return _rate(iter(ds), config.batches, config.batch_size)


def _folder_tree(images, root: str) -> str:
  for i, (data, male) in enumerate(images):
    d = os.path.join(root, "male" if male else "female")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"{i:06d}.jpg"), "wb") as f:
      f.write(data)
  return root


def _image_data_generator(tree, config) -> float:
  import tf_keras  # the seeds' Keras 2 stack (the `bench` extra)

  kwargs = SEED_AUGMENT if config.augment else {}
  gen = tf_keras.preprocessing.image.ImageDataGenerator(rescale=1.0, **kwargs)
  flow = gen.flow_from_directory(tree, target_size=config.image_size,
                                 batch_size=config.batch_size, class_mode="binary", seed=0)
  return _rate(iter(flow), config.seed_batches, config.batch_size, warmup=1)


def _keras_from_directory(tree, config) -> float:
  import keras

  ds = keras.utils.image_dataset_from_directory(
      tree, image_size=config.image_size, batch_size=config.batch_size, seed=0).repeat()
  return _rate(iter(ds.prefetch(tf.data.AUTOTUNE)), config.batches, config.batch_size)


def synthetic_shards(work_dir: str, num_images: int) -> str:
  """CelebA-size (218x178) synthetic faces sharded into work_dir/shards; returns that path."""
  celeba = write_synthetic_celeba(SyntheticConfig(
      os.path.join(work_dir, "celeba"), image_size=(218, 178), num_identities=200,
      num_examples={"train": num_images, "validation": 10}))
  shards = os.path.join(work_dir, "shards")
  shard_dataset(ShardConfig("celeba", celeba, shards, num_shards=8))
  return shards


def run_input_benchmark(config: InputBenchConfig) -> dict:
  with tempfile.TemporaryDirectory(prefix="facetrain-input-bench-") as work:
    shards = config.data_dir or synthetic_shards(work, config.num_images)
    images = _encoded_images(shards)
    tree = _folder_tree(images, os.path.join(work, "tree"))
    rates = {
        "decode_ceiling": _decode_ceiling(images, config),
        "facetrain": _ours(shards, config, OUR_AUGMENT if config.augment else AugmentConfig()),
        "facetrain_flip_zoom_shift": _ours(shards, config, AugmentConfig(
            flip=True, zoom=0.1, translate=0.1)),
        "facetrain_no_augment": _ours(shards, config, AugmentConfig()),
        "imagedatagen": _image_data_generator(tree, config),
        "keras_from_dir": _keras_from_directory(tree, config),
    }
  report = {
      "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "output_json"},
      "cpu_count": os.cpu_count(), "num_images": len(images),
      "images_per_sec": {k: round(v, 1) for k, v in rates.items()},
      "vs_decode_ceiling": {k: round(v / rates["decode_ceiling"], 3) for k, v in rates.items()},
      "vs_seed_pipeline": {k: round(v / rates["imagedatagen"], 2) for k, v in rates.items()},
  }
  if config.output_json:
    with open(config.output_json, "w") as f:
      json.dump(report, f, indent=2)
  return report
