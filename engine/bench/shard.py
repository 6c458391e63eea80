"""Sharding throughput: images/s of `shard_dataset`, with and without re-encoding."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time

from engine.data.sharding import ShardConfig, shard_dataset
from engine.data.synthetic import SyntheticConfig, write_synthetic_celeba


@dataclasses.dataclass(frozen=True)
class ShardBenchConfig:
  """Attributes: data_dir (CelebA format; None generates `num_images` CelebA-size faces),
  workers (0 = auto), reencode_size (also time a run with --image_size), repeats."""

  data_dir: str | None = None
  num_images: int = 6000
  workers: int = 0
  reencode_size: tuple[int, int] | None = (128, 128)
  repeats: int = 2
  output_json: str | None = None


def _time_run(data_dir: str, work_dir: str, workers: int, image_size) -> dict:
  out = tempfile.mkdtemp(dir=work_dir)
  start = time.perf_counter()
  manifest = shard_dataset(ShardConfig("celeba", data_dir, out, workers=workers,
                                       image_size=image_size))
  seconds = time.perf_counter() - start
  images = sum(s["num_examples"] for s in manifest["splits"].values())
  shutil.rmtree(out)
  return {"images": images, "seconds": round(seconds, 3),
          "images_per_sec": round(images / seconds, 1)}


def run_shard_benchmark(config: ShardBenchConfig) -> dict:
  """Times whole sharding runs (parse, check, serialize, write, checksum, metadata)."""
  work_dir = tempfile.mkdtemp(prefix="facetrain-shard-bench-")
  try:
    data_dir = config.data_dir
    if data_dir is None:
      n = config.num_images
      data_dir = write_synthetic_celeba(SyntheticConfig(
          os.path.join(work_dir, "celeba"), image_size=(218, 178), num_identities=500,
          num_examples={"train": n * 8 // 10, "validation": n // 10, "test": n - n * 9 // 10}))
    variants = {"copy_bytes": None}
    if config.reencode_size:
      variants[f"reencode_{config.reencode_size[0]}x{config.reencode_size[1]}"] = config.reencode_size
    results = {}
    for name, size in variants.items():
      runs = [_time_run(data_dir, work_dir, config.workers, size) for _ in range(config.repeats)]
      results[name] = max(runs, key=lambda r: r["images_per_sec"])  # best of N: least noise
    report = {"data_dir": config.data_dir or "synthetic", "cpu_count": os.cpu_count(),
              "workers": config.workers or "auto", "results": results}
  finally:
    shutil.rmtree(work_dir, ignore_errors=True)
  if config.output_json:
    with open(config.output_json, "w") as f:
      json.dump(report, f, indent=2)
  return report
