"""tf.data input pipelines from the sharder's output to device-ready batches.

Training: files -> (worker shard) -> interleave -> cache -> shuffle -> repeat -> parse +
decode (parallel) -> batch (static shapes) -> one warp per batch (resize + flip + affine)
-> photometric ops -> prefetch. The cache holds encoded bytes, or the decoded images when
they fit (then the decode runs before it, once). Pixels leave in [0, 255] (uint8 or the
compute dtype); each backbone scales them inside the model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import tensorflow as tf

from engine.data import integrity, schema
from engine.data.augment import AugmentConfig, augment

TASKS = ("attribute", "identity", "attributes")
OUTPUT_DTYPES = ("uint8", "float32", "bfloat16", "float16")
BAD_RECORD_POLICIES = ("error", "skip")
SHARD_CHECKS = ("fast", "full", "off")  # see integrity.verify_shards
# Encoded shards up to this size are cached in memory (CelebA-dev: 38 MB; all of CelebA: 1.4 GB).
MEMORY_CACHE_BUDGET_BYTES = 2 * 2**30
# Decoded images up to this size (and 1/8 of RAM) are cached instead (CelebA-dev's 4,024 face
# crops: 366 MB; all of CelebA at 218x178: 18 GB, so encoded).
DECODED_CACHE_MAX_BYTES = 2 * 2**30
AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class InputConfig:
  """One input pipeline; see docs/DESIGN.md for the fields' meaning.

  `on_bad_record`: "error" (default) stops at an unreadable record (DataLossError;
  `integrity.corrupt_record_error` names the shard and record) or an undecodable image.
  "skip" drops them and goes on, with a cost: TFRecordDataset cannot resync inside a
  file after a bad record (on any DataLossError it moves to the next file, even when
  only the record's data checksum failed), so the bad record AND THE REST OF ITS SHARD
  are lost; other shards are unaffected (a missing shard is skipped whole: run
  `integrity.verify_shards` first). An undecodable image loses only its example.
  TensorFlow logs each drop ("Error raised with error message ...", without the file);
  eval datasets then hold fewer examples than the manifest lists (count the mask).

  `verify_shards`: how the trainer and evaluator check the shards against manifest.json
  before reading them: "fast" (sizes and each file's first/last 64 KiB), "full" (SHA-256
  of every byte) or "off".
  """

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
  on_bad_record: str = "error"
  verify_shards: str = "fast"

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
    if self.on_bad_record not in BAD_RECORD_POLICIES:
      raise ValueError(f"on_bad_record must be one of {BAD_RECORD_POLICIES}, "
                       f"got {self.on_bad_record!r}")
    if self.verify_shards not in SHARD_CHECKS:
      raise ValueError(f"verify_shards must be one of {SHARD_CHECKS}, got {self.verify_shards!r}")
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
    if not manifest["identities"]:
      raise ValueError("task=identity: these shards have no training identities (the classes "
                       "are the train split's identities, and there is no train split)")
    return len(manifest["identities"])
  return len(manifest["attribute_names"])


def class_counts(manifest: dict, task: str, label_attribute: str, split: str = "train") -> list[int]:
  if split not in manifest["splits"]:
    raise ValueError(f"no split {split!r} to count classes in; has {sorted(manifest['splits'])}")
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
  """Encoded JPEG -> float32 [H, W, 3] at config.image_size, in [0, 255].

  The per-example resize, for images that cannot be batched at their decoded size
  (mixed sizes, a random resized crop) and for evaluation.
  """
  if config.training and config.augment.random_resized_crop:
    shape = tf.image.extract_jpeg_shape(encoded)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, tf.zeros([1, 0, 4]), seed=seed, min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3), area_range=config.augment.crop_scale,
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    image = tf.io.decode_and_crop_jpeg(encoded, window, channels=3)  # fused: decodes only the crop
  else:
    image = _decode_jpeg(encoded, config, ratio)
  # Bilinear without antialiasing: CelebA's 218x178 -> 128 px is a mild downscale, and
  # the antialiased kernel costs 50% more than the decode-ceiling's plain resize.
  image = tf.image.resize(image, config.image_size, method="bilinear")
  image.set_shape([*config.image_size, 3])
  return image


def _decoded_size(config: InputConfig, manifest: dict, ratio: int) -> tuple[int, int] | None:
  """The (H, W) every training image decodes to, if it is one size; else None.

  Such images are batched straight after the decode, and one warp per batch does the
  resize together with the geometric augmentation: cheaper than a per-example resize.
  """
  shape = manifest.get("image_shape")
  if not config.training or not shape or config.augment.random_resized_crop:
    return None
  if config.crop_box is not None:
    with tf.init_scope():  # the same rounding as the in-graph crop, computed once
      _, _, height, width = (int(v) for v in crop_window(shape, config.crop_box).numpy())
    return height, width
  return -(-shape[0] // ratio), -(-shape[1] // ratio)  # libjpeg rounds scaled sizes up


def to_output_dtype(image, dtype: tf.DType):
  """Pixels in [0, 255] -> `dtype`; uint8 rounds to the nearest level and clips."""
  if dtype == tf.uint8 and image.dtype != tf.uint8:
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
  return tf.cast(image, dtype)


def _cache_choice(config: InputConfig, manifest: dict, decoded_hw) -> str:
  """none | memory (encoded bytes) | decoded | a file path (encoded bytes), logged."""
  split = manifest["splits"][config.split]
  encoded_bytes = sum(s["bytes"] for s in split["shards"])
  height, width = decoded_hw or config.image_size
  pixel_bytes = 1 if config.training else tf.as_dtype(config.output_dtype).size
  decoded_bytes = split["num_examples"] * height * width * 3 * pixel_bytes
  can_cache_decoded = not (config.training and config.augment.random_resized_crop)
  budget = decoded_cache_budget_bytes()
  if config.cache == "decoded" and not can_cache_decoded:
    raise ValueError("cache=decoded stores decoded images, but random_resized_crop decodes a "
                     "new crop on every read; use cache=memory (encoded bytes)")
  if config.cache != "auto":
    choice, why = config.cache, "requested"
  elif can_cache_decoded and decoded_bytes <= budget:
    choice, why = "decoded", "decoded images fit the budget: later epochs skip the JPEG decode"
  elif encoded_bytes <= MEMORY_CACHE_BUDGET_BYTES:
    choice, why = "memory", "encoded bytes in memory: later epochs skip the file reads"
  else:
    choice, why = "none", "too large to cache in memory: read the files every epoch"
  logging.info("%s/%s: cache=%s (%s; encoded %.0f MB, decoded %.0f MB, decoded budget %.0f MB)",
               config.data_dir, config.split, choice, why, encoded_bytes / 2**20,
               decoded_bytes / 2**20, budget / 2**20)
  return choice


def decoded_cache_budget_bytes() -> int:
  """Decoded images are cached up to 1/8 of physical memory, at most 2 GiB."""
  try:
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
  except (ValueError, OSError, AttributeError):  # not Linux: the fixed cap alone
    physical = 16 * 2**30
  return min(DECODED_CACHE_MAX_BYTES, physical // 8)


def _records(config: InputConfig, manifest: dict, input_context) -> tf.data.Dataset:
  files = integrity.split_files(config.data_dir, manifest, config.split)
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
    ds = ds.interleave(_file_reader(config), cycle_length=min(len(files), 8),
                       num_parallel_calls=AUTOTUNE, deterministic=config.deterministic)
  else:  # eval reads files in order: a fixed example order for reports
    ds = ds.interleave(_file_reader(config), cycle_length=1)
  if shard_by_data:
    ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
  return ds


def eval_records(config: InputConfig, manifest: dict) -> tf.data.Dataset:
  """The serialized examples an eval pass reads, in its order and with its on_bad_record.

  For reading other features of the same examples (evaluation slices) without decoding
  images: with skip, the same bad records and the rest of their shards are left out.
  An image the eval pipeline drops as undecodable is still here; an alignment check
  against the eval labels notices that.
  """
  return _records(dataclasses.replace(config, training=False), manifest, None)


def _file_reader(config: InputConfig):
  """path -> its records; with on_bad_record=skip, a file ends at its first bad record.

  The skip sits on each file's own reader, so a bad record never ends another file.
  """
  if config.on_bad_record == "error":
    return tf.data.TFRecordDataset
  return lambda path: tf.data.TFRecordDataset(path).ignore_errors(log_warning=True)


def _seeds(seed: int) -> tf.data.Dataset:
  return tf.data.Dataset.random(seed=seed).batch(2).map(lambda s: tf.cast(s, tf.int32))


def make_dataset(config: InputConfig, input_context: tf.distribute.InputContext | None = None,
                 skip_batches: int = 0) -> tf.data.Dataset:
  """Builds the pipeline; training yields (images, labels), eval (images, labels, mask).

  Args:
    config: what to read and how.
    input_context: this input pipeline's place among the replicas (tf.distribute).
    skip_batches: training only: start after this many batches, as if they had been
      read. A resumed run passes the batches it already trained on; with
      `deterministic` it then sees exactly the batches an uninterrupted run would.
      The skip happens before decoding (or on cached decoded images), so it is cheap.
      Before the decode it counts records, so images that on_bad_record=skip drops
      shift the resumed batches (not bit-exact then).
  """
  manifest = read_manifest(config.data_dir)
  config.validate(manifest)
  batch = (input_context.get_per_replica_batch_size(config.global_batch_size)
           if input_context else config.global_batch_size)
  spec, label_fn = _parse_spec(config, manifest), _label_fn(config, manifest)
  ratio = _decode_ratio(config, manifest)
  decoded_hw = _decoded_size(config, manifest, ratio)
  out_dtype = tf.as_dtype(config.output_dtype)
  cache = _cache_choice(config, manifest, decoded_hw)
  if config.on_bad_record == "skip":
    logging.warning("%s/%s: on_bad_record=skip: unreadable records and undecodable images are "
                    "dropped; an unreadable record also loses the rest of its shard (TFRecord "
                    "readers cannot resync); integrity.locate_corrupt_record names it",
                    config.data_dir, config.split)

  def decode_example(serialized, seed=None):
    """-> image and label; training: uint8 at the decoded size if that is one size (the
    batch warp resizes), else resized; eval: resized, in the output dtype."""
    features = tf.io.parse_single_example(serialized, spec)
    if decoded_hw:
      image = tf.ensure_shape(_decode_jpeg(features[schema.IMAGE], config, ratio),
                              [*decoded_hw, 3])
    else:
      image = to_output_dtype(_decode(features[schema.IMAGE], seed, config, ratio),
                        tf.uint8 if config.training else out_dtype)
    return image, label_fn(features)

  def decode_map(ds):
    ds = ds.map(decode_example, num_parallel_calls=AUTOTUNE,
                deterministic=config.deterministic or not config.training)
    # skip: an undecodable image (or a record missing a feature) loses its example only.
    return ds.ignore_errors(log_warning=True) if config.on_bad_record == "skip" else ds

  ds = _records(config, manifest, input_context)
  if cache == "decoded":
    ds = decode_map(ds).cache()
  elif cache == "memory":
    ds = ds.cache()
  elif cache != "none":
    ds = ds.cache(cache)
  if config.training:
    ds = ds.shuffle(config.shuffle_buffer, seed=config.seed, reshuffle_each_iteration=True).repeat()
    if cache != "decoded" and config.augment.random_resized_crop:  # a crop per example
      ds = tf.data.Dataset.zip((ds, _seeds(config.seed)))
    if skip_batches and config.balance == "none":
      ds = ds.skip(skip_batches * batch)
    if cache != "decoded":
      ds = decode_map(ds)
    if config.balance == "resample":
      ds = _balanced(ds, num_classes(manifest, config.task, config.label_attribute), config.seed)
    ds = ds.batch(batch, drop_remainder=True)
    if skip_batches and config.balance != "none":  # resampling decides after decoding
      ds = ds.skip(skip_batches)
    # One warp per batch: the resize from the decoded size (when batched at it), flip
    # and affine; then photometric ops and erasing.
    ds = tf.data.Dataset.zip((ds, _seeds(config.seed + 1).skip(skip_batches))).map(
        lambda example, seed: (to_output_dtype(augment(example[0], seed, config.augment,
                                                        config.image_size), out_dtype),
                               example[1]),
        num_parallel_calls=AUTOTUNE, deterministic=config.deterministic)
  else:
    if cache != "decoded":
      ds = decode_map(ds)
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
