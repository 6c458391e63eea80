"""What machine a number was measured on (every benchmark result carries it)."""

from __future__ import annotations

import os
import platform
from typing import Any

import keras
import numpy as np
import psutil
import pynvml
import tensorflow as tf

from engine.monitor.sampler import nvml_error_text

# CPU features that decide which kernels (and which precisions) are fast.
_CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                 "amx_tile", "amx_bf16", "amx_int8")


def cpuinfo(path: str = "/proc/cpuinfo") -> dict[str, str]:
  """The first processor's fields from /proc/cpuinfo ({} where it does not exist).

  The one reader of that file: `cpu_flags` (precision choices) and `machine_description`
  (benchmark reports) both go through it.
  """
  fields: dict[str, str] = {}
  try:
    with open(path) as f:
      for line in f:
        if not line.strip():
          break  # the first processor's block ends at a blank line
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
  except OSError:
    pass
  return fields


def cpu_flags() -> set[str]:
  """The CPU feature flags (avx2, avx512_bf16, amx_bf16, ...); empty where unknown."""
  return set(cpuinfo().get("flags", "").split())


def usable_cores() -> int:
  """Cores this process may run on (cgroup/affinity limits), not the machine's total."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    return os.cpu_count() or 1


def gpu_names() -> tuple[list[str], str, str | None]:
  """(GPU names, where they came from ("nvml" | "tensorflow"), why NVML was unavailable)."""
  try:
    pynvml.nvmlInit()
  except pynvml.NVMLError as error:
    names = [tf.config.experimental.get_device_details(d).get("device_name", d.name)
             for d in tf.config.list_physical_devices("GPU")]
    return names, "tensorflow", nvml_error_text(error)
  try:
    names = []
    for i in range(pynvml.nvmlDeviceGetCount()):
      name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
      names.append(name.decode() if isinstance(name, bytes) else name)  # bytes before v11
    return names, "nvml", None
  finally:
    pynvml.nvmlShutdown()


def machine_description() -> dict[str, Any]:
  """CPU model and cores, RAM, GPUs, and the software versions that shape the numbers."""
  fields = cpuinfo()
  flags = cpu_flags()
  gpus, gpu_source, nvml_reason = gpu_names()
  return {
      "cpu": fields.get("model name") or platform.processor() or platform.machine(),
      "cores": os.cpu_count(),
      "physical_cores": psutil.cpu_count(logical=False),
      "usable_cores": usable_cores(),
      "cpu_features": [f for f in _CPU_FEATURES if f in flags],
      "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
      "gpus": gpus,
      "gpu_source": gpu_source,
      "nvml_unavailable_reason": nvml_reason,
      "python": platform.python_version(),
      "tensorflow": tf.__version__,
      "keras": keras.__version__,
      "numpy": np.__version__,
      "platform": platform.platform(),
  }
