"""Builders of small CelebA/folder trees for the sharder's tests."""

from __future__ import annotations

import os
import shutil

import numpy as np
import tensorflow as tf


def copy_tree(src: str, dst) -> str:
  dst = str(dst)
  shutil.copytree(src, dst)
  return dst


def replace_line(path: str, line_number: int, text: str) -> None:
  with open(path) as f:
    lines = f.read().splitlines()
  lines[line_number - 1] = text
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")


def mark_partition(celeba_dir: str, code: str) -> None:
  """Rewrites list_eval_partition.txt so that every image is in partition `code`."""
  path = os.path.join(celeba_dir, "list_eval_partition.txt")
  names = [line.split()[0] for line in open(path).read().splitlines() if line.strip()]
  with open(path, "w") as f:
    f.write("".join(f"{name} {code}\n" for name in names))


def write_jpeg(path: str, seed: int, size=(20, 16)) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  pixels = np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)
  with open(path, "wb") as f:
    f.write(tf.io.encode_jpeg(pixels).numpy())


def shard_bytes(out_dir: str) -> dict[str, bytes]:
  """Every shard and TFDS metadata file's bytes (not the manifest: it records timing)."""
  names = sorted(n for n in os.listdir(out_dir)
                 if ".tfrecord-" in n or n in ("features.json",))
  return {n: open(os.path.join(out_dir, n), "rb").read() for n in names}
