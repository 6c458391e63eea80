"""Writes one shard: read bytes, optionally re-encode, serialize, temp file, rename.

JPEG bytes are stored as they are, unless a size is asked for, the file is another
format, or its EXIF orientation says the pixels are stored sideways (phone photos): those
are decoded, turned upright and re-encoded, since tf.io.decode_jpeg ignores EXIF.

A shard's bytes depend only on its plan and the options, so any number of worker
processes produce the same files, and a killed run leaves only whole shards under
final names (plus `.tmp` files that the next run deletes).
"""

from __future__ import annotations

import dataclasses
import os

import tensorflow as tf
from tensorflow_datasets.core import example_serializer

from engine.data import schema
from engine.data.sharding.jpeg import upright

TMP_SUFFIX = ".tmp"


@dataclasses.dataclass(frozen=True)
class ShardJob:
  """Everything a worker process needs to write one shard (picklable)."""

  path: str
  images: tuple[tuple[str, dict, int], ...]  # (image path, non-image features, EXIF orientation)
  features_spec: dict                   # kwargs of the schema's feature builder
  source: str
  image_size: tuple[int, int] | None
  jpeg_quality: int


def build_features(source: str, spec: dict):
  """The TFDS FeaturesDict for a source and its facts."""
  if source == "celeba":
    return schema.celeba_features(**spec)
  return schema.folder_features(**spec)


def _reencode(data: bytes, image_size: tuple[int, int] | None, quality: int,
              orientation: int = 1) -> bytes:
  image = tf.io.decode_image(data, channels=3, expand_animations=False)
  if orientation != 1:  # decoders ignore EXIF: store the pixels the way people see them
    image = tf.constant(upright(image.numpy(), orientation))
  if image_size:
    image = tf.image.resize(image, image_size, method="area", antialias=True)
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
  return tf.io.encode_jpeg(image, quality=quality, chroma_downsampling=False).numpy()


def write_shard(job: ShardJob) -> tuple[str, int]:
  """Writes `job.path` atomically; returns (path, number of examples)."""
  features = build_features(job.source, job.features_spec)
  serializer = example_serializer.ExampleSerializer(features.get_serialized_info())
  tmp = job.path + TMP_SUFFIX
  with tf.io.TFRecordWriter(tmp) as writer:
    for image_path, example, orientation in job.images:
      with open(image_path, "rb") as f:
        data = f.read()
      is_jpeg = image_path.lower().endswith((".jpg", ".jpeg"))
      if job.image_size or not is_jpeg or orientation != 1:
        try:
          data = _reencode(data, job.image_size, job.jpeg_quality, orientation)
        except tf.errors.InvalidArgumentError as e:
          os.remove(tmp)
          raise ValueError(f"{image_path}: cannot decode image: {e.message}") from None
      encoded = features.encode_example({**example, schema.IMAGE: data})
      # deterministic=True sorts the feature map: protobuf otherwise orders it by a
      # per-process hash seed, and shards would differ between runs and workers.
      proto = serializer.get_tf_example(encoded)
      writer.write(proto.SerializeToString(deterministic=True))
  os.replace(tmp, job.path)
  return job.path, len(job.images)
