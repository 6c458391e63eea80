"""The sharder's typed configuration."""

from __future__ import annotations

import dataclasses

SOURCES = ("celeba", "folder")
BAD_IMAGE_POLICIES = ("error", "skip")


class ShardingError(ValueError):
  """Bad input to the sharder; the message names the file (and line)."""


@dataclasses.dataclass(frozen=True)
class ShardConfig:
  """What to shard and how.

  Attributes:
    source: "celeba" (CelebA's own files) or "folder" (one sub-folder per class).
    data_dir: the source directory.
    output_dir: where shards, TFDS metadata and manifest.json are written.
    num_shards: shards per split; None derives it from `target_shard_mb`.
    target_shard_mb: target shard size when `num_shards` is None.
    image_size: (height, width) to resize and re-encode to; None keeps the bytes.
    jpeg_quality: quality when re-encoding.
    max_examples: keep at most this many examples overall (seeded choice).
    balance_by: with max_examples, an attribute (celeba) or "label" (folder) to
      balance: equal numbers of each value, as far as the data allows.
    seed: drives subset choice, folder splits and the shuffle across shards.
    validation_fraction: folder source without split sub-folders.
    test_fraction: folder source without split sub-folders.
    workers: parallel shard writers; 0 picks by core count and data size.
    on_bad_image: "error" stops naming the file; "skip" counts, logs and reports.
  """

  source: str
  data_dir: str
  output_dir: str
  num_shards: int | None = None
  target_shard_mb: float = 64.0
  image_size: tuple[int, int] | None = None
  jpeg_quality: int = 95
  max_examples: int | None = None
  balance_by: str | None = None
  seed: int = 0
  validation_fraction: float = 0.1
  test_fraction: float = 0.1
  workers: int = 0
  on_bad_image: str = "error"

  def validate(self) -> "ShardConfig":
    """Raises ShardingError on contradictory or out-of-range options."""
    if self.source not in SOURCES:
      raise ShardingError(f"unknown source {self.source!r}; known: {', '.join(SOURCES)}")
    if self.on_bad_image not in BAD_IMAGE_POLICIES:
      raise ShardingError(f"on_bad_image must be one of {BAD_IMAGE_POLICIES}, got {self.on_bad_image!r}")
    if self.num_shards is not None and self.num_shards < 1:
      raise ShardingError(f"num_shards must be >= 1, got {self.num_shards}")
    if self.target_shard_mb <= 0:
      raise ShardingError(f"target_shard_mb must be > 0, got {self.target_shard_mb}")
    if self.max_examples is not None and self.max_examples < 1:
      raise ShardingError(f"max_examples must be >= 1, got {self.max_examples}")
    if self.balance_by and self.max_examples is None:
      raise ShardingError("balance_by needs max_examples (the size of the balanced subset)")
    if self.image_size is not None and (len(self.image_size) != 2 or min(self.image_size) < 1):
      raise ShardingError(f"image_size must be two positive ints H,W, got {self.image_size}")
    if not 0 <= self.validation_fraction + self.test_fraction < 1:
      raise ShardingError("validation_fraction + test_fraction must be in [0, 1)")
    if self.workers < 0:
      raise ShardingError(f"workers must be >= 0, got {self.workers}")
    return self

  def to_json(self) -> dict:
    return dataclasses.asdict(self)
