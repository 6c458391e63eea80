"""Devices, tf.distribute strategy and the XLA decision, made once before anything is built."""

from __future__ import annotations

import json
import logging
import os

import tensorflow as tf

from engine.config import ConfigError, TrainConfig
from engine.monitor.machine import cpu_flags


def configure_devices(cpu_devices: int = 0, gpu_memory_limit_mb: int = 0) -> None:
  """Splits the CPU into logical devices and/or caps GPU memory; call before TF runs ops.

  `gpu_memory_limit_mb=8192` on a larger GPU behaves like an 8 GB card (an RTX 3050),
  so batch sizes and out-of-memory behaviour can be checked before buying one.
  """
  gpus = tf.config.list_physical_devices("GPU")
  if gpu_memory_limit_mb:
    if not gpus:
      logging.info("no GPU: gpu_memory_limit_mb=%d has no effect", gpu_memory_limit_mb)
    for gpu in gpus:
      tf.config.set_logical_device_configuration(
          gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=gpu_memory_limit_mb)])
      logging.info("%s capped at %d MB", gpu.name, gpu_memory_limit_mb)
  elif gpus:
    for gpu in gpus:  # grow on demand: other processes (and NVML readings) see real use
      tf.config.experimental.set_memory_growth(gpu, True)
  if cpu_devices > 1:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices)


def _cluster_size() -> int:
  tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
  return sum(len(v) for k, v in tf_config.get("cluster", {}).items() if k in ("worker", "chief"))


def make_strategy(name: str) -> tf.distribute.Strategy:
  """auto: multi_worker when TF_CONFIG names several workers, mirrored on several GPUs,
  else the default strategy; mirrored without GPUs mirrors over the logical CPUs."""
  if name == "auto":
    if _cluster_size() > 1:
      name = "multi_worker"
    elif len(tf.config.list_logical_devices("GPU")) > 1:
      name = "mirrored"
    else:
      name = "one_device"
  if name == "multi_worker":
    if _cluster_size() < 1:
      raise ValueError("strategy=multi_worker needs TF_CONFIG with a cluster (see BUILD.md)")
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
  elif name == "mirrored":
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    strategy = tf.distribute.MirroredStrategy(devices)
  else:
    device = (tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU"))[0]
    strategy = tf.distribute.OneDeviceStrategy(device.name)
  logging.info("strategy: %s with %d replica(s)", type(strategy).__name__,
               strategy.num_replicas_in_sync)
  return strategy


def num_input_pipelines(strategy: tf.distribute.Strategy) -> int:
  """Input pipelines the strategy builds: one per worker under multi_worker, else one."""
  if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return max(_cluster_size(), 1)
  return 1


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Only the chief writes summaries, the best model and the canonical checkpoints."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                           and "chief" not in resolver.cluster_spec().as_dict())


def worker_id(strategy: tf.distribute.Strategy) -> int:
  resolver = getattr(strategy, "cluster_resolver", None)
  return int(resolver.task_id or 0) if resolver is not None and resolver.task_type else 0


def resolve_jit(jit_compile: str, strategy: tf.distribute.Strategy) -> tuple[bool, str]:
  """Returns (use XLA, why).

  auto: on for GPUs (fused kernels, fewer launches); off on CPUs: XLA cannot place
  variables mirrored over several logical CPU devices, and on one CPU device TF's
  oneDNN kernels are as fast or faster for these convnets (benchmarks.throughput).
  """
  on_gpu = bool(tf.config.list_logical_devices("GPU"))
  multi_cpu = not on_gpu and isinstance(strategy, tf.distribute.MirroredStrategy) and \
      strategy.num_replicas_in_sync > 1
  if jit_compile == "true":
    if multi_cpu:
      raise ValueError("jit_compile=true cannot run under strategy=mirrored over logical CPU "
                       "devices (XLA cannot use variables placed on several CPU devices); "
                       "use jit_compile=auto or false")
    return True, "requested"
  if jit_compile == "false":
    return False, "requested"
  if on_gpu:
    return True, "GPU: XLA fuses the step"
  if multi_cpu:
    return False, "mirrored over logical CPU devices: XLA cannot use their variables"
  return False, "CPU: oneDNN kernels without XLA are as fast for convnets here"


# CPU features that run float16 math natively (Sapphire Rapids and later); elsewhere
# TensorFlow emulates every float16 op on the CPU, far slower than float32.
_CPU_FP16_FLAGS = ("avx512_fp16", "amx_fp16")


def check_machine(train: TrainConfig) -> None:
  """Refuses settings this machine cannot honour (lists its physical devices).

  TrainConfig.validate() checks what contradicts itself on any machine; these depend on
  whether there is a GPU.

  Raises:
    ConfigError: naming the flag and what to use instead.
  """
  if tf.config.list_physical_devices("GPU"):
    return
  if train.precision == "mixed_float16" and not cpu_flags() & set(_CPU_FP16_FLAGS):
    raise ConfigError("--precision=mixed_float16 needs a GPU or a CPU with native float16 "
                     "(AVX512_FP16/AMX_FP16); this machine has neither, so every float16 op "
                     "would be emulated: use --precision=auto (mixed_bfloat16 or float32 here)")
  if train.strategy == "mirrored" and train.cpu_devices < 2:
    raise ConfigError(f"--strategy=mirrored without a GPU mirrors over logical CPU devices: "
                     f"--cpu_devices={train.cpu_devices} gives one replica; set "
                     f"--cpu_devices=2 or more, or use --strategy=one_device")
