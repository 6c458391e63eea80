"""Images/s a tf.data service delivers with 1 and 2 local workers vs the local pipeline.

All contenders yield the training batches of `augment_on=device` (decoded, cropped,
batched; the step would augment), read by this process:
  local_cached    the local pipeline as a one-process run uses it (cache=auto: the decoded
                  images after the first epoch)
  local           the local pipeline decoding every image (cache=none): the work a
                  service worker does
  service_1, service_2  through a tf.data service on this machine, 1 or 2 workers, each
                  its own process (engine.data.local_service)
Persistent iterators, interleaved turns of `seconds_per_turn` in a rotated order; a ratio
is the median of the rounds' ratios. On a 2-core machine the workers compete with the
consumer for the same cores: this shows the service's overhead, not a speed-up.
Then each service's sharding: every training file name of one epoch read through it,
counted (examples, distinct, the most any one was produced).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import statistics
import tempfile
import time

from engine.config import AugmentConfig, InputConfig
from engine.data import pipeline, service
from engine.data.local_service import LocalService
from engine.data.manifest import read_manifest
from engine.monitor import machine_description

WORKER_COUNTS = (1, 2)


@dataclasses.dataclass(frozen=True)
class DataServiceBenchConfig:
  data_dir: str
  image_size: tuple[int, int] = (112, 112)
  batch_size: int = 64
  crop_box: tuple[float, float, float, float] | None = (0.09, 0.0, 0.82, 1.0)
  rounds: int = 3
  seconds_per_turn: float = 4.0
  warmup_batches: int = 8
  output_json: str | None = None


def _input(config: DataServiceBenchConfig, **changes) -> InputConfig:
  return dataclasses.replace(InputConfig(
      config.data_dir, image_size=config.image_size, global_batch_size=config.batch_size,
      augment=AugmentConfig(flip=True, rotation_deg=10, zoom=0.1, translate=0.08,
                            erasing_prob=0.25),
      augment_on="device", crop_box=config.crop_box), **changes)


def _timed_rate(iterator, config: DataServiceBenchConfig) -> float:
  start, images = time.perf_counter(), 0
  while time.perf_counter() - start < config.seconds_per_turn:
    (pixels, _), _ = next(iterator)
    images += int(pixels.shape[0])
  return images / (time.perf_counter() - start)


def _epoch_counts(config: DataServiceBenchConfig, target: str) -> dict:
  names = service.distribute(pipeline.train_file_names(_input(config), epochs=1), target, None)
  counts = collections.Counter(names.as_numpy_iterator())
  return {"examples": sum(counts.values()), "distinct": len(counts),
          "max_per_example": max(counts.values())}


def run_data_service_benchmark(config: DataServiceBenchConfig) -> dict:
  expected = read_manifest(config.data_dir)["splits"]["train"]["num_examples"]
  with tempfile.TemporaryDirectory() as logs:
    services = {f"service_{n}": LocalService(os.path.join(logs, str(n)), n).__enter__()
                for n in WORKER_COUNTS}
    try:
      datasets = {"local_cached": pipeline.make_dataset(_input(config)),
                  "local": pipeline.make_dataset(_input(config, cache="none"))}
      for name, local in services.items():
        datasets[name] = pipeline.make_dataset(_input(config, tf_data_service=local.target),
                                               service_job=f"bench-{name}")
      iterators = {name: iter(ds) for name, ds in datasets.items()}
      epoch_batches = expected // config.batch_size + 1
      for name, iterator in iterators.items():  # fills the decoded cache; starts the jobs
        for _ in range(epoch_batches if name == "local_cached" else config.warmup_batches):
          next(iterator)
      names, rounds = list(iterators), []
      for r in range(config.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        rounds.append({name: _timed_rate(iterators[name], config) for name in order})
      counts = {name: _epoch_counts(config, local.target) for name, local in services.items()}
    finally:
      for local in services.values():
        local.stop()
  report = {
      "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "output_json"},
      "machine": machine_description(),
      "images_per_sec": {n: round(statistics.median(r[n] for r in rounds), 1) for n in names},
      "vs_local": {n: round(statistics.median(r[n] / r["local"] for r in rounds), 3)
                   for n in names},
      "rounds": [{n: round(v, 1) for n, v in r.items()} for r in rounds],
      "epoch_counts": {"expected_examples": expected, **counts},
  }
  if config.output_json:
    with open(config.output_json, "w") as f:
      json.dump(report, f, indent=2)
  return report
