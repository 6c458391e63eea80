"""tf.data input pipelines from the sharder's output to device-ready batches.

Stages: files -> (worker shard) -> interleave -> (cache encoded) -> shuffle -> repeat
-> parse + decode + augment (parallel) -> batch (static shapes) -> prefetch. Pixels leave
in [0, 255] (uint8 or the compute dtype); each backbone scales them inside the model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import tensorflow as tf

from engine.data import schema
from engine.data.augment import (AugmentConfig, augment, random_affine_batch,
                                 random_zoom_shift_resize)

TASKS = ("attribute", "identity", "attributes")
OUTPUT_DTYPES = ("uint8", "float32", "bfloat16", "float16")
# Encoded shards up to this size are cached in memory (CelebA-dev: 38 MB; all of CelebA: 1.4 GB).
MEMORY_CACHE_BUDGET_BYTES = 2 * 2**30
AUTOTUNE = tf.data.AUTOTUNE


def _needs_warp(augment_config: AugmentConfig) -> bool:
  """Rotation or shear: a full warp, done per batch by OpenCV (random_affine_batch)."""
  return bool(augment_config.rotation_deg or augment_config.shear_deg)


def _per_example_part(augment_config: AugmentConfig) -> AugmentConfig:
  """What remains per example: the affine part ran in _decode or runs per batch, and
  with a batch warp the flip folds into its matrix."""
  return dataclasses.replace(augment_config, rotation_deg=0.0, zoom=0.0, translate=0.0,
                             shear_deg=0.0,
                             flip=augment_config.flip and not _needs_warp(augment_config))


@dataclasses.dataclass(frozen=True)
class InputConfig:
  """One input pipeline; see docs/DESIGN.md for the fields' meaning."""

  data_dir: str
  split: str = "train"
  task: str = "attribute"
  label_attribute: str = "Male"
  image_size: tuple[int, int] = (128, 128)
  global_batch_size: int = 64
  training: bool = True
  augment: AugmentConfig = AugmentConfig()
  shuffle_buffer: int = 4096
  seed: int = 0
  deterministic: bool = False
  cache: str = "auto"
  output_dtype: str = "uint8"
  balance: str = "none"
  tf_data_service: str | None = None
  crop_box: tuple[float, float, float, float] | None = None

  def validate(self, manifest: dict) -> "InputConfig":
    if self.task not in TASKS:
      raise ValueError(f"unknown task {self.task!r}; known: {', '.join(TASKS)}")
    if self.split not in manifest["splits"]:
      raise ValueError(f"{self.data_dir}: no split {self.split!r}; has {sorted(manifest['splits'])}")
    if self.output_dtype not in OUTPUT_DTYPES:
      raise ValueError(f"output_dtype must be one of {OUTPUT_DTYPES}, got {self.output_dtype!r}")
    if self.global_batch_size < 1:
      raise ValueError(f"global_batch_size must be >= 1, got {self.global_batch_size}")
    if self.balance not in ("none", "resample"):
      raise ValueError(f"balance must be none or resample, got {self.balance!r}")
    num_classes(manifest, self.task, self.label_attribute)  # raises on a bad label source
    if self.crop_box is not None:
      top, left, height, width = self.crop_box
      if not (len(self.crop_box) == 4 and 0 <= top and 0 <= left and height > 0 and width > 0
              and top + height <= 1 and left + width <= 1):
        raise ValueError(f"crop_box must be top,left,height,width fractions inside the image, "
                         f"got {self.crop_box}")
      if self.augment.random_resized_crop:
        raise ValueError("crop_box and random_resized_crop both choose the crop; use one")
    return self


def read_manifest(data_dir: str) -> dict:
  path = os.path.join(data_dir, schema.MANIFEST)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: missing; shard the data first (python -m tfrecords.shard)")
  with open(path) as f:
    return json.load(f)


def num_classes(manifest: dict, task: str, label_attribute: str = "Male") -> int:
  """2 for a binary attribute, K identities/classes, A attributes for multi-label."""
  if manifest["source"] == "folder":
    if task == "attributes":
      raise ValueError("task=attributes needs CelebA shards (folder sets have one label)")
    if task == "attribute" and len(manifest["class_names"]) != 2:
      raise ValueError(f"task=attribute needs 2 classes; this set has {manifest['class_names']}")
    return len(manifest["class_names"])
  if task == "attribute":
    if label_attribute not in manifest["attribute_names"]:
      raise ValueError(f"unknown attribute {label_attribute!r}; known: "
                       f"{', '.join(manifest['attribute_names'])}")
    return 2
  if task == "identity":
    if not manifest.get("has_identity"):
      raise ValueError("task=identity needs identity_CelebA.txt in the sharded CelebA set")
    return len(manifest["identities"])
  return len(manifest["attribute_names"])


def class_counts(manifest: dict, task: str, label_attribute: str, split: str = "train") -> list[int]:
  counts = manifest["splits"][split]["class_counts"]
  if manifest["source"] == "folder":
    return [counts[name] for name in manifest["class_names"]]
  if task != "attribute":
    raise ValueError("class counts are kept for binary attributes and folder classes only")
  return [counts[label_attribute]["0"], counts[label_attribute]["1"]]


def class_weights(manifest: dict, task: str, label_attribute: str = "Male",
                  split: str = "train") -> dict[int, float]:
  """Weights n / (K * n_c), so that every class contributes equally to the loss."""
  counts = class_counts(manifest, task, label_attribute, split)
  total = sum(counts)
  return {c: total / (len(counts) * n) for c, n in enumerate(counts) if n}


def _files(config: InputConfig, manifest: dict) -> list[str]:
  return [os.path.join(config.data_dir, s["file"]) for s in manifest["splits"][config.split]["shards"]]


def _parse_spec(config: InputConfig, manifest: dict) -> dict:
  spec = {schema.IMAGE: tf.io.FixedLenFeature([], tf.string)}
  if manifest["source"] == "folder":
    spec[schema.LABEL] = tf.io.FixedLenFeature([], tf.int64)
  elif config.task == "attribute":
    spec[schema.flat_key(schema.ATTRIBUTES, config.label_attribute)] = tf.io.FixedLenFeature([], tf.int64)
  elif config.task == "identity":
    spec[schema.IDENTITY] = tf.io.FixedLenFeature([], tf.int64)
  else:
    for name in manifest["attribute_names"]:
      spec[schema.flat_key(schema.ATTRIBUTES, name)] = tf.io.FixedLenFeature([], tf.int64)
  return spec


def _label_fn(config: InputConfig, manifest: dict):
  """Returns parsed-features -> label for the task."""
  if manifest["source"] == "folder":
    return lambda f: tf.cast(f[schema.LABEL], tf.int32)
  if config.task == "attribute":
    key = schema.flat_key(schema.ATTRIBUTES, config.label_attribute)
    return lambda f: tf.cast(f[key], tf.int32)
  if config.task == "identity":
    table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        tf.constant(manifest["identities"], tf.int64),
        tf.range(len(manifest["identities"]), dtype=tf.int32)), default_value=-1)
    return lambda f: table.lookup(f[schema.IDENTITY])
  keys = [schema.flat_key(schema.ATTRIBUTES, n) for n in manifest["attribute_names"]]
  return lambda f: tf.cast(tf.stack([f[k] for k in keys]), tf.float32)


def _decode_ratio(config: InputConfig, manifest: dict) -> int:
  """JPEG DCT scaling (1/2/4/8) when stored images are much larger than the target."""
  shape = manifest.get("image_shape")
  if not shape or config.crop_box is not None or config.augment.random_resized_crop and \
      config.training:
    return 1
  ratio = 1
  while ratio < 8 and min(shape[0] / (ratio * 2) / config.image_size[0],
                          shape[1] / (ratio * 2) / config.image_size[1]) >= 1.0:
    ratio *= 2
  return ratio


def crop_window(image_shape, crop_box) -> tf.Tensor:
  """[top, left, height, width] pixels of `crop_box` (fractions) in an image of image_shape.

  Shared by the pipeline (fused decode_and_crop_jpeg) and prediction (crop of a decoded
  image), so both cut exactly the same pixels.
  """
  h, w = tf.cast(image_shape[0], tf.float32), tf.cast(image_shape[1], tf.float32)
  top, left, height, width = crop_box
  window = tf.round(tf.stack([top * h, left * w, height * h, width * w]))
  return tf.maximum(tf.cast(window, tf.int32), [0, 0, 1, 1])


def _decode_jpeg(encoded, config: InputConfig, ratio: int):
  if config.crop_box is not None:  # fused: only the face box is decoded
    window = crop_window(tf.image.extract_jpeg_shape(encoded), config.crop_box)
    return tf.io.decode_and_crop_jpeg(encoded, window, channels=3)
  return tf.io.decode_jpeg(encoded, channels=3, ratio=ratio)


def _decode(encoded, seed, config: InputConfig, ratio: int):
  """Encoded JPEG -> float32 [H, W, 3] at config.image_size, in [0, 255]."""
  if config.training and config.augment.random_resized_crop:
    shape = tf.image.extract_jpeg_shape(encoded)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, tf.zeros([1, 0, 4]), seed=seed, min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3), area_range=config.augment.crop_scale,
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    image = tf.io.decode_and_crop_jpeg(encoded, window, channels=3)  # fused: decodes only the crop
  elif config.training and config.augment.affine and not _needs_warp(config.augment):
    # zoom/shift only: a random crop_and_resize box does augmentation and resize at once
    image = _decode_jpeg(encoded, config, ratio)
    image = random_zoom_shift_resize(image, seed, config.image_size, config.augment)
    image.set_shape([*config.image_size, 3])
    return image
  else:
    image = _decode_jpeg(encoded, config, ratio)
  # Bilinear without antialiasing: CelebA's 218x178 -> 128 px is a mild downscale, and
  # the antialiased kernel costs 50% more than the decode-ceiling's plain resize.
  image = tf.image.resize(image, config.image_size, method="bilinear")
  image.set_shape([*config.image_size, 3])
  return image


def _cache_choice(config: InputConfig, manifest: dict) -> str:
  if config.cache != "auto":
    return config.cache
  size = sum(s["bytes"] for s in manifest["splits"][config.split]["shards"])
  return "memory" if size <= MEMORY_CACHE_BUDGET_BYTES else "none"


def _records(config: InputConfig, manifest: dict, input_context) -> tf.data.Dataset:
  files = _files(config, manifest)
  ds = tf.data.Dataset.from_tensor_slices(files)
  shard_by_data = False
  if input_context and input_context.num_input_pipelines > 1:
    n, i = input_context.num_input_pipelines, input_context.input_pipeline_id
    if len(files) >= n:
      logging.info("input pipeline %d/%d: sharding by FILE (%d files)", i, n, len(files))
      ds = ds.shard(n, i)
    else:
      logging.info("input pipeline %d/%d: only %d files, sharding by DATA (every pipeline "
                   "reads all files and keeps 1/%d of the examples)", i, n, len(files), n)
      shard_by_data = True
  if config.training:
    ds = ds.shuffle(len(files), seed=config.seed, reshuffle_each_iteration=True)
  if config.training:
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                       num_parallel_calls=AUTOTUNE, deterministic=config.deterministic)
  else:  # eval reads files in order: a fixed example order for reports
    ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=1)
  if shard_by_data:
    ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
  cache = _cache_choice(config, manifest)
  logging.info("%s/%s: cache=%s (encoded JPEG bytes)", config.data_dir, config.split, cache)
  if cache == "memory":
    ds = ds.cache()
  elif cache != "none":
    ds = ds.cache(cache)
  return ds


def make_dataset(config: InputConfig, input_context: tf.distribute.InputContext | None = None,
                 skip_batches: int = 0) -> tf.data.Dataset:
  """Builds the pipeline; training yields (images, labels), eval (images, labels, mask).

  Args:
    config: what to read and how.
    input_context: this input pipeline's place among the replicas (tf.distribute).
    skip_batches: training only: start after this many batches, as if they had been
      read. A resumed run passes the batches it already trained on; with
      `deterministic` it then sees exactly the batches an uninterrupted run would.
      The skip happens before decoding (encoded records only), so it is cheap.
  """
  manifest = read_manifest(config.data_dir)
  config.validate(manifest)
  batch = (input_context.get_per_replica_batch_size(config.global_batch_size)
           if input_context else config.global_batch_size)
  spec, label_fn = _parse_spec(config, manifest), _label_fn(config, manifest)
  ratio = _decode_ratio(config, manifest)
  out_dtype = tf.as_dtype(config.output_dtype)

  def to_example(serialized, seed):
    features = tf.io.parse_single_example(serialized, spec)
    decode_seed, augment_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = _decode(features[schema.IMAGE], decode_seed, config, ratio)
    if config.training:  # the affine part already ran in _decode
      image = augment(image, augment_seed, _per_example_part(config.augment))
    if out_dtype == tf.uint8:
      image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    else:
      image = tf.cast(image, out_dtype)
    return image, label_fn(features)

  ds = _records(config, manifest, input_context)
  if config.training:
    ds = ds.shuffle(config.shuffle_buffer, seed=config.seed, reshuffle_each_iteration=True).repeat()
    seeds = tf.data.Dataset.random(seed=config.seed).batch(2).map(lambda s: tf.cast(s, tf.int32))
    ds = tf.data.Dataset.zip((ds, seeds))
    if skip_batches and config.balance == "none":
      ds = ds.skip(skip_batches * batch)
    ds = ds.map(to_example, num_parallel_calls=AUTOTUNE, deterministic=config.deterministic)
    if config.balance == "resample":
      ds = _balanced(ds, num_classes(manifest, config.task, config.label_attribute), config.seed)
    ds = ds.batch(batch, drop_remainder=True)
    if skip_batches and config.balance != "none":  # resampling decides after decoding
      ds = ds.skip(skip_batches)
    if _needs_warp(config.augment):
      batch_seeds = tf.data.Dataset.random(seed=config.seed + 1).batch(2).map(
          lambda s: tf.cast(s, tf.int32)).skip(skip_batches)
      ds = tf.data.Dataset.zip((ds, batch_seeds)).map(
          lambda example, seed: (random_affine_batch(example[0], seed, config.augment), example[1]),
          num_parallel_calls=AUTOTUNE, deterministic=config.deterministic)
  else:
    ds = ds.map(lambda s: to_example(s, tf.zeros([2], tf.int32)), num_parallel_calls=AUTOTUNE,
                deterministic=True)
    ds = _pad_and_mask(ds, batch)
  options = tf.data.Options()
  options.deterministic = config.deterministic or not config.training
  options.autotune.enabled = True
  # We shard files ourselves (above); tf.distribute must not shard again.
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
  ds = ds.with_options(options).prefetch(AUTOTUNE)
  if config.tf_data_service:
    ds = ds.apply(tf.data.experimental.service.distribute(
        processing_mode="parallel_epochs", service=config.tf_data_service,
        job_name=f"facetrain-{config.split}" if config.training else None))
  return ds


def _balanced(ds: tf.data.Dataset, k: int, seed: int) -> tf.data.Dataset:
  """Samples the k classes equally often (binary/multi-class tasks)."""
  per_class = [ds.filter(lambda image, label, c=c: tf.equal(label, c)) for c in range(k)]
  return tf.data.Dataset.sample_from_datasets(per_class, weights=[1.0 / k] * k, seed=seed)


def _pad_and_mask(ds: tf.data.Dataset, batch: int) -> tf.data.Dataset:
  """Adds mask=1 per example and pads the last batch with mask=0 examples.

  With batch - 1 padding examples appended, drop_remainder keeps exactly ceil(n / batch)
  static-shape batches, each starting with a real example: every example once.
  """
  ds = ds.map(lambda image, label: (image, label, tf.constant(1.0)))
  padding = ds.take(1).map(lambda image, label, mask: (
      tf.zeros_like(image), tf.zeros_like(label), tf.constant(0.0))).repeat(batch - 1)
  return ds.concatenate(padding).batch(batch, drop_remainder=True)
