"""Will it fit? A training-memory estimate per backbone/size/precision, and --batch_size=auto.

The estimate counts what training keeps alive: float32 weights, their gradients and
optimizer slots, plus every layer's activations saved for the backward pass (compute
dtype). It is an estimate (workspace and allocator slack come on top), printed at start
so an 8 GB card is not discovered to be too small after an hour of data loading.
"""

from __future__ import annotations

import dataclasses
import logging

import keras
import numpy as np
import tensorflow as tf

from engine.models.builder import leaf_layers

MAX_AUTO_BATCH = 256


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
  params: int
  weights_mb: float          # weights + gradients + optimizer slots
  activations_mb_per_image: float

  def total_mb(self, batch_size: int) -> float:
    return self.weights_mb + batch_size * self.activations_mb_per_image

  def describe(self, batch_size: int) -> str:
    return (f"memory estimate: {self.params / 1e6:.1f}M params -> {self.weights_mb:.0f} MB "
            f"(weights, gradients, optimizer); activations {self.activations_mb_per_image:.1f} "
            f"MB/image -> {self.total_mb(batch_size) / 1024:.2f} GB at batch {batch_size}")


def estimate_memory(model: keras.Model, optimizer_slots: int = 2) -> MemoryEstimate:
  """Counts weights (4 bytes each, x (2 + slots)) and per-image activations."""
  params = int(sum(np.prod(v.shape) for v in model.trainable_variables))
  compute_bytes = 2 if model.compute_dtype in ("float16", "bfloat16") else 4
  activations = 0
  for layer in leaf_layers(model):
    try:
      shapes = layer.output.shape if not isinstance(layer.output, (list, tuple)) else None
    except (AttributeError, ValueError):
      continue
    if shapes is not None:
      activations += int(np.prod([d for d in shapes[1:] if d]))
  weights_mb = params * 4 * (2 + optimizer_slots) / 2**20
  return MemoryEstimate(params, weights_mb, activations * compute_bytes / 2**20)


def device_memory_mb(gpu_memory_limit_mb: int = 0) -> float | None:
  """Memory of the first GPU (its cap when set), or None on CPU."""
  gpus = tf.config.list_physical_devices("GPU")
  if not gpus:
    return None
  if gpu_memory_limit_mb:
    return float(gpu_memory_limit_mb)
  try:
    import pynvml
    pynvml.nvmlInit()
    return pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(0)).total / 2**20
  except Exception as e:  # NVML missing: no estimate-based cap, the trial steps decide
    logging.info("GPU memory unknown (%s)", e)
    return None


def find_batch_size(try_step, start: int, minimum: int = 1) -> int:
  """Largest batch from `start` down (halving) for which `try_step(batch)` runs.

  `try_step` runs one training step at that batch and raises
  tf.errors.ResourceExhaustedError when it does not fit.
  """
  batch = start
  while batch >= minimum:
    try:
      try_step(batch)
      logging.info("batch_size=auto: %d fits", batch)
      return batch
    except tf.errors.ResourceExhaustedError as e:
      logging.warning("batch_size=auto: %d does not fit (%s); halving", batch,
                      str(e).splitlines()[0][:120])
      batch //= 2
  raise RuntimeError(f"batch_size=auto: not even batch {minimum} fits on this device")


def starting_batch(estimate: MemoryEstimate, memory_mb: float | None, num_replicas: int) -> int:
  """The largest power of two (per replica) the estimate allows, times the replicas."""
  if memory_mb is None:  # CPU: no device limit worth probing; a well-tested default
    return 64 * num_replicas
  batch = MAX_AUTO_BATCH
  while batch > 1 and estimate.total_mb(batch) > 0.9 * memory_mb:
    batch //= 2
  return batch * num_replicas
