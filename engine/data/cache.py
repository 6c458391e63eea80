"""Which cache an input pipeline keeps: decoded images, encoded bytes, a file, or none."""

from __future__ import annotations

import logging

import psutil
import tensorflow as tf

from engine.config import InputConfig

# Encoded shards up to this size are cached in memory (CelebA-dev: 38 MB; all of CelebA: 1.4 GB).
MEMORY_CACHE_BUDGET_BYTES = 2 * 2**30
# Decoded images up to this size (and 1/8 of RAM) are cached instead (CelebA-dev's 4,024 face
# crops: 366 MB; all of CelebA at 218x178: 18 GB, so encoded).
DECODED_CACHE_MAX_BYTES = 2 * 2**30


def choose_cache(config: InputConfig, manifest: dict, decoded_hw) -> str:
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
  return min(DECODED_CACHE_MAX_BYTES, psutil.virtual_memory().total // 8)
