"""Timing inference calls: the matmul peak, interleaved batch-1 rounds, batch-N throughput."""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable

import numpy as np
import tensorflow as tf

from engine.bench.runtimes import Variant
from engine.monitor import DeviceSampler


def matmul_peak_gflops(dtype: str, size: int = 2048, repeats: int = 8) -> float:
  """Best-of-`repeats` GFLOP/s of one compiled size x size matmul (2 FLOPs a multiply-add)."""
  a = tf.cast(tf.random.stateless_uniform([size, size], seed=(1, 2)), dtype)
  b = tf.cast(tf.random.stateless_uniform([size, size], seed=(3, 4)), dtype)
  matmul = tf.function(tf.matmul).get_concrete_function(a, b)
  for _ in range(3):  # kernel selection, and AMX's first-use setup
    matmul(a, b).numpy()
  best_s = min(_timed_call(matmul, (a, b)) for _ in range(repeats))
  return 2 * size**3 / best_s / 1e9


def _timed_call(fn: Callable, args: tuple) -> float:
  start = time.perf_counter()
  tf.nest.flatten(fn(*args))[0].numpy()  # a frozen function returns a list
  return time.perf_counter() - start


def latency_stats_ms(seconds: list[float]) -> dict[str, float]:
  ms = np.asarray(seconds) * 1e3
  p50, p90, p99 = np.percentile(ms, [50, 90, 99])
  return {"p50": round(float(p50), 3), "p90": round(float(p90), 3),
          "p99": round(float(p99), 3), "mean": round(float(ms.mean()), 3),
          "min": round(float(ms.min()), 3)}


def timed(variant: Variant, pixels: np.ndarray) -> float:
  """Seconds of one call, the result in host memory."""
  start = time.perf_counter()
  variant.run(pixels)
  return time.perf_counter() - start


def other_processes_cpu_pct(device: dict) -> float:
  """Host CPU used by others: host/cpu_pct averages all logical CPUs, process_cpu_pct
  counts 100 a core."""
  ours_pct = (device["host/process_cpu_pct_mean"] or 0.0) / (os.cpu_count() or 1)
  return round(max((device["host/cpu_pct_mean"] or 0.0) - ours_pct, 0.0), 1)


def interleaved_latency(variants: list[Variant], single: np.ndarray, iterations: int,
                        rounds: int, warmup: int, sample_interval_s: float
                        ) -> tuple[dict[str, list[float]], dict]:
  """Batch-1 seconds per variant (`iterations` each, after `warmup`), timed in `rounds`
  interleaved rounds; and the DeviceSampler's summary of that window."""
  for variant in variants:
    for _ in range(warmup):
      timed(variant, single)
  per_round = math.ceil(iterations / rounds)
  seconds = {v.name: [] for v in variants}
  with DeviceSampler(sample_interval_s) as sampler:
    for _ in range(rounds):
      for variant in variants:
        seconds[variant.name].extend(timed(variant, single) for _ in range(per_round))
  return seconds, sampler.summary()


def throughput(variant: Variant, batch: np.ndarray, batches: int, warmup: int,
               sample_interval_s: float) -> dict[str, Any]:
  """images/s over `batches` timed calls on `batch`, with the DeviceSampler's summary."""
  for _ in range(warmup):
    timed(variant, batch)
  with DeviceSampler(sample_interval_s) as sampler:
    batch_s = sum(timed(variant, batch) for _ in range(batches))
  device = sampler.summary()
  return {"images_per_sec": round(batches * len(batch) / batch_s, 2),
          "other_processes_cpu_pct": other_processes_cpu_pct(device), "device": device}
