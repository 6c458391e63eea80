"""tf.data input pipelines from the sharder's output to device-ready batches.

Assembled from parts: manifest.py (what the shards hold), decode.py (JPEG -> pixels),
cache.py (what to keep in memory), augment.py (per-batch augmentation), the task
(engine.tasks: which features are the label); make_dataset reads as a train branch and an
eval branch over them.

Training: files -> (worker shard) -> interleave -> cache -> shuffle -> repeat -> parse +
decode (parallel) -> batch (static shapes) -> one warp per batch (resize + flip + affine)
-> photometric ops -> prefetch. The cache holds encoded bytes, or the decoded images when
they fit (then the decode runs before it, once). Pixels leave in [0, 255] (uint8 or the
compute dtype); each backbone scales them inside the model.

With augmentation on the device the training pipeline ends at the batch (no Python in it)
and the per-image augmentation values ride along with it; through a tf.data service
(engine/data/service.py) that pipeline runs on the service's workers and the values are
attached here, after it.
"""

from __future__ import annotations

import dataclasses
import logging

import tensorflow as tf

from engine.config import InputConfig
from engine.data import decode, integrity, schema, service
from engine.data.augment import augment, augment_params
from engine.data.cache import choose_cache
from engine.data.manifest import read_manifest, require_split, split_files
from engine.tasks import TASKS, Task

AUTOTUNE = tf.data.AUTOTUNE


def _records(config: InputConfig, manifest: dict, input_context) -> tf.data.Dataset:
  files = split_files(config.data_dir, manifest, config.split)
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


def train_file_names(config: InputConfig, epochs: int = 1) -> tf.data.Dataset:
  """The file_name of every training example for `epochs` epochs, read from the files as
  training reads them (same file list, file shuffle and interleave; no decode).

  Through a tf.data service this shows how the service shards the training files: the
  dispatcher splits this same file list (benchmarks.data_service counts per epoch).
  """
  spec = {schema.FILE_NAME: tf.io.FixedLenFeature([], tf.string)}
  ds = _records(dataclasses.replace(config, training=True), read_manifest(config.data_dir), None)
  return ds.repeat(epochs).map(lambda s: tf.io.parse_single_example(s, spec)[schema.FILE_NAME])


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
                 skip_batches: int = 0, service_job: str | None = None) -> tf.data.Dataset:
  """Builds the pipeline; training yields (images, labels), eval (images, labels, mask).

  With `augment_on=device` a training element is ((uint8 pixels at the decoded size, their
  augment_params), labels): the train step augments (engine/data/device_augment.py).

  Args:
    config: what to read and how.
    input_context: this input pipeline's place among the replicas (tf.distribute).
    skip_batches: training only: start after this many batches, as if they had been
      read. A resumed run passes the batches it already trained on; with
      `deterministic` it then sees exactly the batches an uninterrupted run would.
      The skip happens before decoding (or on cached decoded images), so it is cheap.
      Before the decode it counts records, so images that on_bad_record=skip drops
      shift the resumed batches (not bit-exact then). Through a tf.data service only
      the seeds skip (the service hands out files dynamically, nothing to replay).
    service_job: training through `config.tf_data_service`: the job name every trainer
      of one run shares (they then split the job's batches between them).
  """
  config.validate()
  if config.training and config.tf_data_service:  # evaluation stays local
    ds = service.distribute(service_source(config, input_context), config.tf_data_service,
                            service_job)
    return with_augment_params(ds, config, skip_batches)
  ds = _batched(config, input_context, skip_batches)
  if config.training and config.augment_on == "device":
    ds = with_augment_params(ds, config, skip_batches)
  return ds


def _batched(config: InputConfig, input_context, skip_batches: int) -> tf.data.Dataset:
  """Records -> batches, augmented unless the device does it; prefetched."""
  parts = _Parts.of(config, read_manifest(config.data_dir), input_context)
  ds = _cached(_records(config, parts.manifest, input_context), parts)
  ds = _train_batches(ds, parts, skip_batches) if config.training else _eval_batches(ds, parts)
  options = tf.data.Options()
  options.deterministic = config.deterministic or not config.training
  options.autotune.enabled = True
  # We shard files ourselves (_records); tf.distribute must not shard again.
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
  return ds.with_options(options).prefetch(AUTOTUNE)


def service_source(config: InputConfig, input_context=None) -> tf.data.Dataset:
  """What a tf.data service worker runs: every file, decoded and batched, not augmented.

  Pure TensorFlow ops (augmentation on the device; no numpy_function), batches of this
  trainer's per-replica size, no skip (the service hands out files dynamically, there is
  nothing to replay), no file shard (the service shards), no cache: a worker's cache
  would replay its own first-epoch files and stop taking new ones from the dispatcher,
  so a lost worker would lose those files for the rest of the run.
  """
  batch = (input_context.get_per_replica_batch_size(config.global_batch_size)
           if input_context else config.global_batch_size)
  return _batched(dataclasses.replace(config, global_batch_size=batch, cache="none",
                                      augment_on="device"), None, 0)


def with_augment_params(ds: tf.data.Dataset, config: InputConfig,
                        skip_batches: int) -> tf.data.Dataset:
  """(pixels, labels) -> ((pixels, augment_params), labels), for augmentation on the device.

  The values are drawn from the seed the host path gives the same batch (see
  _train_batches), so both paths draw the same.
  """
  def attach(batch, seed):
    pixels, labels = batch
    params = augment_params(seed, pixels.shape[0], config.augment, config.image_size,
                            pixels.shape[1:3], decode.warp_window(config, pixels.shape[1:3]))
    return (pixels, params), labels

  seeds = _seeds(config.seed + 1).skip(skip_batches)
  return tf.data.Dataset.zip((ds, seeds)).map(attach).prefetch(AUTOTUNE)


@dataclasses.dataclass(frozen=True)
class _Parts:
  """What one pipeline is assembled from, decided once from the config and the manifest."""

  config: InputConfig
  manifest: dict
  batch: int                          # per replica
  task: Task
  ratio: int                          # JPEG DCT scaling
  decoded_hw: tuple[int, int] | None  # training: batched at the decoded size, warped after
  cache: str                          # none | memory | decoded | a file path

  @classmethod
  def of(cls, config: InputConfig, manifest: dict, input_context) -> "_Parts":
    require_split(config.data_dir, manifest, config.split)
    if config.global_batch_size < 1:
      raise ValueError(f"global_batch_size must be >= 1, got {config.global_batch_size} (0, "
                       "auto, is resolved by the trainer before a pipeline is built)")
    task = TASKS.get(config.task)
    task.num_classes(manifest, config.label_attribute)  # raises on a missing label source
    batch = (input_context.get_per_replica_batch_size(config.global_batch_size)
             if input_context else config.global_batch_size)
    ratio = decode.decode_ratio(config, manifest)
    decoded_hw = decode.decoded_size(config, manifest, ratio)
    if decode.warps_from_frame(config) and not decoded_hw:
      raise ValueError(f"{config.data_dir}: warp_from_frame needs shards of one image size "
                       "(manifest.json's image_shape), to warp every frame onto the same box")
    if config.on_bad_record == "skip":
      logging.warning("%s/%s: on_bad_record=skip: unreadable records and undecodable images "
                      "are dropped; an unreadable record also loses the rest of its shard "
                      "(TFRecord readers cannot resync)", config.data_dir, config.split)
      integrity.log_unreadable_records(config.data_dir, manifest, config.split)
    return cls(config, manifest, batch, task, ratio, decoded_hw,
               choose_cache(config, manifest, decoded_hw))

  def decode_map(self, ds: tf.data.Dataset) -> tf.data.Dataset:
    """serialized (or (serialized, seed)) -> (image, label), in parallel.

    Training: uint8 at the decoded size when that is one size (the batch warp resizes),
    else resized; eval: resized, in the output dtype.
    """
    config, out_dtype = self.config, tf.as_dtype(self.config.output_dtype)
    spec = {schema.IMAGE: tf.io.FixedLenFeature([], tf.string),
            **self.task.label_features(self.manifest, config.label_attribute)}
    label_fn = self.task.label_fn(self.manifest, config.label_attribute)

    def decode_example(serialized, seed=None):
      features = tf.io.parse_single_example(serialized, spec)
      if self.decoded_hw:
        image = tf.ensure_shape(decode.decode_jpeg(features[schema.IMAGE], config, self.ratio),
                                [*self.decoded_hw, 3])
      else:
        image = decode.to_output_dtype(
            decode.decode_resized(features[schema.IMAGE], seed, config, self.ratio),
            tf.uint8 if config.training else out_dtype)
      return image, label_fn(features)

    ds = ds.map(decode_example, num_parallel_calls=AUTOTUNE,
                deterministic=config.deterministic or not config.training)
    # skip: an undecodable image (or a record missing a feature) loses its example only.
    return ds.ignore_errors(log_warning=True) if config.on_bad_record == "skip" else ds


def _cached(ds: tf.data.Dataset, parts: _Parts) -> tf.data.Dataset:
  """The records, cached as the parts chose (decoded images: decoded before the cache)."""
  if parts.cache == "decoded":
    return parts.decode_map(ds).cache()
  if parts.cache == "memory":
    return ds.cache()
  return ds if parts.cache == "none" else ds.cache(parts.cache)


def _train_batches(ds: tf.data.Dataset, parts: _Parts, skip_batches: int) -> tf.data.Dataset:
  """Shuffle, repeat, skip what a resumed run trained on, decode, batch, augment per batch."""
  config, batch = parts.config, parts.batch
  ds = ds.shuffle(config.shuffle_buffer, seed=config.seed, reshuffle_each_iteration=True).repeat()
  if parts.cache != "decoded" and config.augment.random_resized_crop:  # a crop per example
    ds = tf.data.Dataset.zip((ds, _seeds(config.seed)))
  if skip_batches and config.balance == "none":
    ds = ds.skip(skip_batches * batch)
  if parts.cache != "decoded":
    ds = parts.decode_map(ds)
  if config.balance == "resample":
    ds = _balanced(ds, parts.task.num_classes(parts.manifest, config.label_attribute),
                   config.seed)
  ds = ds.batch(batch, drop_remainder=True)
  if skip_batches and config.balance != "none":  # resampling decides after decoding
    ds = ds.skip(skip_batches)
  if config.augment_on == "device":  # the step augments: ship uint8 at the decoded size
    return ds
  # One warp per batch: the resize from the decoded size (when batched at it), flip and
  # affine; then photometric ops and erasing.
  out_dtype = tf.as_dtype(config.output_dtype)
  window = decode.warp_window(config, parts.decoded_hw)
  return tf.data.Dataset.zip((ds, _seeds(config.seed + 1).skip(skip_batches))).map(
      lambda example, seed: (decode.to_output_dtype(
          augment(example[0], seed, config.augment, config.image_size, window), out_dtype),
          example[1]),
      num_parallel_calls=AUTOTUNE, deterministic=config.deterministic)


def _eval_batches(ds: tf.data.Dataset, parts: _Parts) -> tf.data.Dataset:
  """Decode (unless cached decoded), then padded batches with a mask: every example once."""
  if parts.cache != "decoded":
    ds = parts.decode_map(ds)
  return pad_and_mask(ds, parts.batch)


def _balanced(ds: tf.data.Dataset, k: int, seed: int) -> tf.data.Dataset:
  """Samples the k classes equally often (binary/multi-class tasks)."""
  per_class = [ds.filter(lambda image, label, c=c: tf.equal(label, c)) for c in range(k)]
  return tf.data.Dataset.sample_from_datasets(per_class, weights=[1.0 / k] * k, seed=seed)


def pad_and_mask(ds: tf.data.Dataset, batch: int) -> tf.data.Dataset:
  """Adds mask=1 per example and pads the last batch with mask=0 examples.

  With batch - 1 padding examples appended, drop_remainder keeps exactly ceil(n / batch)
  static-shape batches, each starting with a real example: every example once.
  """
  ds = ds.map(lambda image, label: (image, label, tf.constant(1.0)))
  padding = ds.take(1).map(lambda image, label, mask: (
      tf.zeros_like(image), tf.zeros_like(label), tf.constant(0.0))).repeat(batch - 1)
  return ds.concatenate(padding).batch(batch, drop_remainder=True)
