"""Damage to shards as disks and copies do it: flipped bytes, cut files, bad images."""

from __future__ import annotations

import os

import tensorflow as tf


def flip_byte(path: str, offset: int) -> None:
  """Flips the lowest bit of one byte in place: same size, different content."""
  with open(path, "r+b") as f:
    f.seek(offset)
    value = f.read(1)[0]
    f.seek(offset)
    f.write(bytes([value ^ 0x01]))


def record_starts(path: str) -> list[int]:
  """Byte offset of each record: TFRecord frames are length (8), CRC (4), data, CRC (4)."""
  starts, offset, size = [], 0, os.path.getsize(path)
  with open(path, "rb") as f:
    while offset < size:
      starts.append(offset)
      f.seek(offset)
      offset += 16 + int.from_bytes(f.read(8), "little")
  return starts


def replace_image(path: str, index: int, data: bytes) -> None:
  """Rewrites a shard with record `index` holding `data` as its image (valid CRCs)."""
  records = [r.numpy() for r in tf.data.TFRecordDataset(path)]
  example = tf.train.Example.FromString(records[index])
  example.features.feature["image"].bytes_list.value[:] = [data]
  records[index] = example.SerializeToString()
  with tf.io.TFRecordWriter(path) as writer:
    for record in records:
      writer.write(record)
