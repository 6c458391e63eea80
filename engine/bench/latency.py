"""Inference latency (batch 1) and throughput (batch N) against two baselines, one run.

For each backbone x precision x XLA setting the model is built under the precision's
Keras dtype policy and called through one compiled function,
`tf.function(lambda x: model(x, training=False), jit_compile=xla)`, as a concrete
function on a pre-made tf.Tensor; each timed call ends in `.numpy()`, so every sample
includes the wait for the result. With `freeze` the variables are first folded into
constants (`convert_variables_to_constants_v2`, the frozen graph TF inference deploys):
oneDNN then reorders each convolution's weights once into its blocked layout and keeps
them, where live weights are convolved in their plain layout by a slower kernel (most
costly on the large late layers; measured here at batch 1: ResNet50 float32 ~1.5x and
ResNet18 bfloat16 ~2x faster frozen).

Baselines, measured in the same process:
  predict      `model.predict(x, verbose=0)` batch-1 latency (Keras' default path) on the
               same input and a fresh build with the same weights (seeded), run after all
               compiled rows (see run_latency_benchmark for why the order matters)
  flop floor   the model's FLOPs at batch 1 / the peak GFLOP/s of a large tf.matmul, timed
               before and after the rows (the higher counts): float32 (`flop_floor_ms`), and
               the policy's compute dtype (`flop_floor_ms_same_dtype`; with AMX, bf16
               matmuls run ~4x float32, so a bf16 model can beat the float32 floor)
A DeviceSampler covers each timed window; its summary says how busy the host was
(`other_processes_cpu_pct`: CPU used by other processes, which distorts latency).
"""

from __future__ import annotations

import csv
import dataclasses
import gc
import json
import logging
import os
import time
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from engine.models import BACKBONES, build_model
from engine.config import ModelConfig
from engine.models.flops import count_flops
from engine.monitor import DeviceSampler, machine_description
from engine.precision import policy as precision_policy
from engine.precision import resolve_precision

# Registered for tests only (a few thousand parameters): not worth a default row.
TEST_BACKBONES = ("tiny_resnet",)


def default_backbones() -> tuple[str, ...]:
  return tuple(n for n in BACKBONES.names() if n not in TEST_BACKBONES)


@dataclasses.dataclass(frozen=True)
class LatencyConfig:
  """What to measure.

  Attributes:
    backbones: registered backbone names; None: every one except the test backbones.
    image_size: (height, width); None: each backbone's default_image_size.
    batch_size: batch of the throughput measurement.
    iterations: timed batch-1 calls (also for the predict baseline).
    warmup: untimed batch-1 calls first (tracing, XLA compilation, allocation).
    throughput_batches: timed batches of `batch_size` for images/s.
    throughput_warmup: untimed batches first.
    precisions: float32 | mixed_bfloat16 | mixed_float16 | auto (resolve_precision);
      two that resolve to the same policy are measured once.
    xla: jit_compile settings to measure.
    freeze: fold variables into constants before compiling (see the module docstring).
    matmul_size: n of the n x n matmul that measures peak GFLOP/s.
    intra_op_threads, inter_op_threads: TensorFlow thread pools; 0 keeps TF's default.
      They can only be set before TensorFlow runs its first op.
    sample_interval_s: DeviceSampler period.
    output_json, output_csv: where to write the report (optional).
  """

  backbones: tuple[str, ...] | None = None
  image_size: tuple[int, int] | None = None
  batch_size: int = 32
  iterations: int = 50
  warmup: int = 10
  throughput_batches: int = 5
  throughput_warmup: int = 2
  precisions: tuple[str, ...] = ("float32", "auto")
  xla: tuple[bool, ...] = (False, True)
  freeze: bool = True
  matmul_size: int = 2048
  intra_op_threads: int = 0
  inter_op_threads: int = 0
  sample_interval_s: float = 0.25
  output_json: str | None = None
  output_csv: str | None = None

  def validate(self) -> "LatencyConfig":
    for name in self.backbones or ():
      BACKBONES.get(name)  # raises, listing the known names
    if self.iterations < 1 or self.warmup < 0 or self.batch_size < 1:
      raise ValueError("iterations and batch_size must be >= 1, warmup >= 0")
    if self.throughput_batches < 1 or self.throughput_warmup < 0:
      raise ValueError("throughput_batches must be >= 1, throughput_warmup >= 0")
    if not self.precisions or not self.xla:
      raise ValueError("precisions and xla must not be empty")
    return self


def configure_threads(intra_op: int, inter_op: int) -> dict[str, int]:
  """Sets TF's thread pools (0: leave as is) and returns what is in effect (0 = TF default)."""
  threading = tf.config.threading
  for wanted, get, set_ in ((intra_op, threading.get_intra_op_parallelism_threads,
                             threading.set_intra_op_parallelism_threads),
                            (inter_op, threading.get_inter_op_parallelism_threads,
                             threading.set_inter_op_parallelism_threads)):
    if wanted and wanted != get():
      try:
        set_(wanted)
      except RuntimeError as error:  # TF already ran an op in this process
        raise RuntimeError(f"cannot change TensorFlow's thread pools now: {error}; set them "
                           "before anything else runs (the benchmark entry point does)") from error
  return {"intra_op": threading.get_intra_op_parallelism_threads(),
          "inter_op": threading.get_inter_op_parallelism_threads()}


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


def _compiled(model: keras.Model, spec: tf.TensorSpec, xla: bool, freeze: bool) -> Callable:
  """The model's inference call as one concrete function for inputs of `spec`."""
  forward = tf.function(lambda x: model(x, training=False))
  if not freeze:
    return tf.function(forward.python_function, jit_compile=xla).get_concrete_function(spec)
  frozen = convert_variables_to_constants_v2(forward.get_concrete_function(spec))
  if not xla:
    return frozen
  # Freezing drops a function's jit attribute, so compile the frozen graph afterwards.
  return tf.function(frozen, jit_compile=True).get_concrete_function(spec)


def _predict_p50_ms(name: str, size: tuple[int, int], policy: str, image: np.ndarray,
                    config: LatencyConfig) -> tuple[float, bool]:
  """(p50 ms of `model.predict` on one image, whether predict used XLA) for a fresh build."""
  model = _build(name, size, policy)
  for _ in range(config.warmup):
    model.predict(image, verbose=0)
  times = []
  for _ in range(config.iterations):
    start = time.perf_counter()
    model.predict(image, verbose=0)
    times.append(time.perf_counter() - start)
  jit = bool(model.jit_compile)
  _release(model)
  return latency_stats_ms(times)["p50"], jit


def _measure(model, single, batch, xla: bool, config: LatencyConfig) -> dict[str, Any]:
  """Batch-1 latency and batch-N images/s of one compiled variant, with device metrics."""
  one_fn = _compiled(model, tf.TensorSpec(single.shape, single.dtype), xla, config.freeze)
  batch_fn = _compiled(model, tf.TensorSpec(batch.shape, batch.dtype), xla, config.freeze)
  for _ in range(config.warmup):
    _timed_call(one_fn, (single,))
  for _ in range(config.throughput_warmup):
    _timed_call(batch_fn, (batch,))
  with DeviceSampler(config.sample_interval_s) as sampler:
    times = [_timed_call(one_fn, (single,)) for _ in range(config.iterations)]
    batch_s = sum(_timed_call(batch_fn, (batch,)) for _ in range(config.throughput_batches))
  device = sampler.summary()
  # host/cpu_pct averages all logical CPUs, process_cpu_pct counts 100 a core: the rest
  # of the host's use is other processes'.
  ours_pct = (device["host/process_cpu_pct_mean"] or 0.0) / (os.cpu_count() or 1)
  others_pct = max((device["host/cpu_pct_mean"] or 0.0) - ours_pct, 0.0)
  return {"latency_ms": latency_stats_ms(times),
          "images_per_sec": round(config.throughput_batches * config.batch_size / batch_s, 2),
          "other_processes_cpu_pct": round(others_pct, 1), "device": device}


def resolve_policies(precisions: tuple[str, ...]) -> tuple[list[dict[str, str]], list[str]]:
  """(one {requested, policy, reason} per distinct policy, notes on the duplicates dropped)."""
  chosen: list[dict[str, str]] = []
  notes = []
  for requested in precisions:
    policy, reason = resolve_precision(requested)
    same = next((c for c in chosen if c["policy"] == policy), None)
    if same is not None:
      notes.append(f"precision {requested!r} resolves to {policy} ({reason}), the same as "
                   f"{same['requested']!r}: measured once")
      continue
    chosen.append({"requested": requested, "policy": policy, "reason": reason})
  return chosen, notes


def _build(name: str, size: tuple[int, int], policy: str) -> keras.Model:
  """The backbone under `policy`, with the same weights every time (seeded)."""
  keras.utils.set_random_seed(0)
  with precision_policy(policy):
    return build_model(ModelConfig(name, image_size=size, num_outputs=1))


def _release(model: keras.Model) -> None:
  del model
  keras.backend.clear_session()
  gc.collect()


def _error_text(error: Exception, limit: int = 600) -> str:
  text = f"{type(error).__name__}: {getattr(error, 'message', None) or error}".strip()
  return text if len(text) <= limit else text[:limit] + " ..."


def _inputs(size: tuple[int, int], batch_size: int) -> tuple[tf.Tensor, tf.Tensor]:
  single = tf.random.stateless_uniform([1, *size, 3], seed=(0, 1), maxval=255.0)
  batch = tf.random.stateless_uniform([batch_size, *size, 3], seed=(0, 2), maxval=255.0)
  return single, batch


def _image_size(name: str, config: LatencyConfig) -> tuple[int, int]:
  return tuple(config.image_size or BACKBONES.get(name).default_image_size)


def _compiled_rows(name: str, config: LatencyConfig,
                   policies: list[dict[str, str]]) -> list[dict[str, Any]]:
  """One row per precision x XLA setting: the compiled call's latency and images/s."""
  size = _image_size(name, config)
  single, batch = _inputs(size, config.batch_size)
  flops = None
  rows = []
  for precision in policies:
    model = _build(name, size, precision["policy"])
    if flops is None:  # the same at every precision
      flops = count_flops(model)
    for xla in config.xla:
      row = {"backbone": name, "image_size": list(size), "precision": precision["requested"],
             "policy": precision["policy"], "xla": xla, "frozen": config.freeze,
             "batch_size": config.batch_size, "params": model.count_params(), "flops": flops,
             "error": None}
      try:
        row.update(_measure(model, single, batch, xla, config))
      except tf.errors.OpError as error:
        if not xla:
          raise
        row["error"] = f"XLA failed: {_error_text(error)}"
        logging.warning("%s %s: %s", name, precision["policy"], row["error"])
      rows.append(row)
    _release(model)
  return rows


def _add_baseline_ratios(row: dict[str, Any], peak_gflops: dict[str, float]) -> None:
  """FLOP floors (float32 and the policy's compute dtype) and the ratios to the baselines."""
  floor_ms = row["flops"] / (peak_gflops["float32"] * 1e9) * 1e3
  compute_dtype = keras.DTypePolicy(row["policy"]).compute_dtype
  floor_same_ms = row["flops"] / (peak_gflops[compute_dtype] * 1e9) * 1e3
  row["flop_floor_ms"] = float(f"{floor_ms:.4g}")  # significant digits: tiny models too
  row["flop_floor_ms_same_dtype"] = float(f"{floor_same_ms:.4g}")
  p50 = row["latency_ms"]["p50"] if not row["error"] else None
  row["vs_flop_floor"] = round(p50 / floor_ms, 3) if p50 else None
  row["vs_flop_floor_same_dtype"] = round(p50 / floor_same_ms, 3) if p50 else None
  row["speedup_vs_predict"] = round(row["predict_p50_ms"] / p50, 3) if p50 else None


def run_latency_benchmark(config: LatencyConfig) -> dict[str, Any]:
  """Measures every backbone x precision x XLA variant; returns (and writes) the report.

  Builds seed Keras' global random state (`keras.utils.set_random_seed(0)`), so a
  baseline's model has the weights of the one it is compared with.
  """
  config.validate()
  threads = configure_threads(config.intra_op_threads, config.inter_op_threads)
  policies, notes = resolve_policies(config.precisions)
  for note in notes:
    logging.info(note)
  dtypes = sorted({"float32"} | {keras.DTypePolicy(p["policy"]).compute_dtype for p in policies})
  peaks_before = {d: matmul_peak_gflops(d, config.matmul_size) for d in dtypes}
  backbones = config.backbones or default_backbones()
  rows = [row for name in backbones for row in _compiled_rows(name, config, policies)]
  # The predict baselines run after every compiled measurement, on fresh builds with the
  # same weights: TensorFlow's oneDNN primitive cache does not key convolutions on whether
  # their weights are constants, so once a live-weights graph (predict) has run a conv
  # shape, the frozen graph reuses that primitive with plain-layout weights (measured:
  # ResNet18 float32 batch 1, 17.6 ms -> 24.5 ms).
  predict = {}
  for name in backbones:
    size = _image_size(name, config)
    image = _inputs(size, 1)[0].numpy()
    for precision in policies:
      predict[name, precision["policy"]] = _predict_p50_ms(
          name, size, precision["policy"], image, config)
  for row in rows:
    row["predict_p50_ms"], row["predict_jit_compile"] = predict[row["backbone"], row["policy"]]
  peaks_after = {d: matmul_peak_gflops(d, config.matmul_size) for d in dtypes}
  # The peak is measured before and after the rows and the higher one sets the floors:
  # a busy moment (other processes, a cold AMX unit) must not make the floor generous.
  peaks = {d: max(peaks_before[d], peaks_after[d]) for d in dtypes}
  for row in rows:
    _add_baseline_ratios(row, peaks)
  report = {
      "config": {k: v for k, v in dataclasses.asdict(config).items()
                 if k not in ("output_json", "output_csv")},
      "machine": machine_description(),
      "threads": threads,
      "matmul_peak_gflops": {d: round(v, 1) for d, v in peaks.items()},
      "matmul_peak_gflops_runs": {"before": {d: round(v, 1) for d, v in peaks_before.items()},
                                  "after": {d: round(v, 1) for d, v in peaks_after.items()}},
      "precisions": policies,
      "notes": notes,
      "results": rows,
  }
  if config.output_json:
    with open(config.output_json, "w") as f:
      json.dump(report, f, indent=2)
  if config.output_csv:
    write_csv(report["results"], config.output_csv)
  return report


def _flatten(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  flat = {}
  for key, value in row.items():
    if isinstance(value, dict):
      flat.update(_flatten(value, f"{prefix}{key}."))
    elif isinstance(value, list):
      flat[prefix + key] = "x".join(str(v) for v in value)
    else:
      flat[prefix + key] = value
  return flat


def write_csv(rows: list[dict[str, Any]], path: str) -> None:
  """One line per result; nested fields become `latency_ms.p50`, `device.host/cpu_pct_mean`."""
  flat = [_flatten(r) for r in rows]
  columns = list(dict.fromkeys(k for r in flat for k in r))
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    writer.writerows(flat)


def format_table(report: dict[str, Any]) -> str:
  """The report as a console table (latencies in ms)."""
  machine = report["machine"]
  peaks = ", ".join(f"{d} {v:.0f}" for d, v in report["matmul_peak_gflops"].items())
  lines = [f"{machine['cpu']}, {machine['usable_cores']} cores, TF {machine['tensorflow']}, "
           f"threads {report['threads']}; matmul peak GFLOP/s: {peaks}",
           *[f"note: {n}" for n in report["notes"]],
           f"{'backbone':<20}{'policy':<16}{'xla':<5}{'p50':>8}{'p90':>8}{'p99':>8}{'mean':>8}"
           f"{'img/s':>8}{'predict':>9}{'floor':>8}{'xfloor':>8}{'xfl_dt':>8}{'xpred':>7}"
           f"{'others%':>8}",
           f"(ms; img/s at batch {report['config']['batch_size']}; floor = FLOPs / float32 matmul "
           "peak; xfloor = p50 / floor; xfl_dt = p50 / floor at the policy's compute dtype; "
           "xpred = predict p50 / p50; others% = host CPU used by other processes)"]
  for r in report["results"]:
    head = f"{r['backbone']:<20}{r['policy']:<16}{'on' if r['xla'] else 'off':<5}"
    if r["error"]:
      lines.append(f"{head}{r['error'][:100]}")
      continue
    ms = r["latency_ms"]
    lines.append(
        f"{head}{ms['p50']:>8.2f}{ms['p90']:>8.2f}{ms['p99']:>8.2f}{ms['mean']:>8.2f}"
        f"{r['images_per_sec']:>8.1f}{r['predict_p50_ms']:>9.2f}{r['flop_floor_ms']:>8.3g}"
        f"{r['vs_flop_floor']:>8.2f}{r['vs_flop_floor_same_dtype']:>8.2f}"
        f"{r['speedup_vs_predict']:>7.1f}{r['other_processes_cpu_pct']:>8.0f}")
  return "\n".join(lines)
