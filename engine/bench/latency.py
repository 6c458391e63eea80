"""Inference latency (batch 1) and throughput (batch N) of every deployable path, one run.

Per backbone, in one process, the paths of engine.bench.runtimes: our compiled
TensorFlow call (float32 and bf16 policies, XLA off and on, variables frozen into
constants), TFLite (XNNPACK), ONNX Runtime, OpenVINO float32 and bf16, and the baseline
`model.predict`. Batch-1 latency is timed in interleaved rounds (each round times every
path a few calls, round after round), so a busy moment on the machine lands on all paths
alike; every sample ends with the result in host memory. Throughput (images/s at batch
N) is timed per path under a DeviceSampler (NVML on a GPU, host CPU and RSS otherwise).

Baselines, measured in the same process:
  predict      `model.predict(x, verbose=0)` at batch 1, float32 (Keras' default path;
               its bf16 build is a row too). Timed after every other path, on fresh builds
               with the same weights: TensorFlow's oneDNN primitive cache does not key
               convolutions on whether their weights are constants, so once a
               live-weights graph (predict) has run a conv shape, the frozen graph reuses
               that primitive with plain-layout weights (measured: ResNet18 float32 batch
               1, 17.6 ms -> 24.5 ms). So predict is interleaved only with itself.
  flop floor   the model's FLOPs at batch 1 / the peak GFLOP/s of a large tf.matmul in the
               row's own precision (float32 rows against the float32 peak, bf16 rows
               against the bf16 peak), each peak timed before and after the rows (the
               higher counts).
With a trained run (`model_dir`), every path also reports its accuracy on the run's
validation split (no flip averaging), so a fast path cannot hide a broken export;
without one, the backbones have seeded random weights and each path reports its largest
logit difference from the float32 TensorFlow call instead.
"""

from __future__ import annotations

import csv
import dataclasses
import gc
import json
import logging
import tempfile
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from engine.bench.runtimes import (RUNTIMES, Variant, artifact_variants, predict_variant,
                                   tensorflow_variant)
from engine.bench.timing import (interleaved_latency, latency_stats_ms, matmul_peak_gflops,
                                 other_processes_cpu_pct, throughput)
from engine.config import ModelConfig
from engine.data.pipeline import make_dataset
from engine.models import BACKBONES, build_model
from engine.models.flops import count_flops
from engine.monitor import machine_description
from engine.precision import policy as precision_policy
from engine.precision import resolve_precision
from engine.run.restore import load_model
from engine.tasks import TASKS

# Training images OpenVINO's int8 quantisation calibrates on (a trained run only).
CALIBRATION_EXAMPLES = 300
# Registered for tests only (a few thousand parameters): not worth a default row.
TEST_BACKBONES = ("tiny_resnet",)


def default_backbones() -> tuple[str, ...]:
  return tuple(n for n in BACKBONES.names() if n not in TEST_BACKBONES)


@dataclasses.dataclass(frozen=True)
class LatencyConfig:
  """What to measure.

  Attributes:
    backbones: registered backbone names; None: every one except the test backbones
      (with model_dir: the run's backbone).
    image_size: (height, width); None: each backbone's default_image_size (the run's).
    batch_size: batch of the throughput measurement (and of the accuracy pass).
    iterations: timed batch-1 calls per path (also for the predict baseline).
    rounds: the batch-1 calls are interleaved in this many rounds.
    warmup: untimed batch-1 calls first (tracing, XLA compilation, allocation).
    throughput_batches: timed batches of `batch_size` for images/s.
    throughput_warmup: untimed batches first.
    precisions: float32 | mixed_bfloat16 | mixed_float16 | auto (resolve_precision);
      two that resolve to the same policy are measured once. The exported runtimes run
      the compute dtypes these resolve to where they offer them (OpenVINO: bf16).
    xla: jit_compile settings of the TensorFlow rows.
    freeze: fold variables into constants before compiling (see engine.bench.runtimes).
    runtimes: which of engine.bench.runtimes.RUNTIMES to measure.
    model_dir: a trained run: measure its model and report validation accuracy per path.
    checkpoint: which of the run's weights (see engine.run.restore.load_model).
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
  rounds: int = 5
  warmup: int = 10
  throughput_batches: int = 5
  throughput_warmup: int = 2
  precisions: tuple[str, ...] = ("float32", "auto")
  xla: tuple[bool, ...] = (False, True)
  freeze: bool = True
  runtimes: tuple[str, ...] = RUNTIMES
  model_dir: str | None = None
  checkpoint: str = "best"
  matmul_size: int = 2048
  intra_op_threads: int = 0
  inter_op_threads: int = 0
  sample_interval_s: float = 0.25
  output_json: str | None = None
  output_csv: str | None = None

  def validate(self) -> "LatencyConfig":
    for name in self.backbones or ():
      BACKBONES.get(name)  # raises, listing the known names
    if self.iterations < 1 or self.warmup < 0 or self.batch_size < 1 or self.rounds < 1:
      raise ValueError("iterations, rounds and batch_size must be >= 1, warmup >= 0")
    if self.throughput_batches < 1 or self.throughput_warmup < 0:
      raise ValueError("throughput_batches must be >= 1, throughput_warmup >= 0")
    if not self.precisions or not self.xla or not self.runtimes:
      raise ValueError("precisions, xla and runtimes must not be empty")
    unknown = set(self.runtimes) - set(RUNTIMES)
    if unknown:
      raise ValueError(f"unknown runtimes {sorted(unknown)}; known: {', '.join(RUNTIMES)}")
    if self.model_dir and self.backbones:
      raise ValueError("model_dir measures the run's own backbone; do not also give backbones")
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


def _release(*models: keras.Model) -> None:
  del models
  keras.backend.clear_session()
  gc.collect()


def _error_text(error: Exception, limit: int = 600) -> str:
  text = f"{type(error).__name__}: {getattr(error, 'message', None) or error}".strip()
  return text if len(text) <= limit else text[:limit] + " ..."


def _inputs(size: tuple[int, int], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  single = tf.random.stateless_uniform([1, *size, 3], seed=(0, 1), maxval=255.0)
  batch = tf.random.stateless_uniform([batch_size, *size, 3], seed=(0, 2), maxval=255.0)
  return single.numpy(), batch.numpy()


@dataclasses.dataclass
class _Subject:
  """The model a backbone's rows measure: float32, and one build per policy with its weights."""

  name: str
  size: tuple[int, int]
  models: dict[str, keras.Model]  # policy -> model
  task_name: str
  run_config: Any = None          # the trained run's ExperimentConfig, if any


def _subject(name: str | None, config: LatencyConfig, policies: list[str]) -> _Subject:
  """Builds (or restores from model_dir) the model under every policy, same weights."""
  if config.model_dir:
    model, run, _ = load_model(config.model_dir, config.checkpoint)
    models = {"float32": model}
    for policy in policies:
      if policy != "float32":
        with precision_policy(policy):
          models[policy] = build_model(dataclasses.replace(
              run.model, weights="none", weights_path=None, finetune="scratch"))
        models[policy].set_weights(model.get_weights())
    return _Subject(run.model.backbone, tuple(run.input.image_size), models, run.input.task, run)
  size = tuple(config.image_size or BACKBONES.get(name).default_image_size)
  return _Subject(name, size, {p: _build(name, size, p) for p in {"float32", *policies}},
                  "attribute")


def _compute_dtype(policy: str) -> str:
  return keras.DTypePolicy(policy).compute_dtype


def _variants(subject: _Subject, config: LatencyConfig, policies: list[str], folder: str,
              shapes) -> list[Variant]:
  """Every path but predict: TensorFlow rows per policy x XLA, then the exported runtimes."""
  variants = []
  if "tensorflow" in config.runtimes:
    for policy in policies:
      for xla in config.xla:
        precision = _compute_dtype(policy)
        try:
          variants.append(tensorflow_variant(subject.models[policy], precision, xla,
                                             config.freeze, shapes))
        except tf.errors.OpError as error:
          if not xla:
            raise
          variants.append(Variant("tensorflow", precision, xla, None,
                                  f"XLA failed: {_error_text(error)}"))
  wanted = {_compute_dtype(p) for p in policies} | {"int8"}
  calibration = (_images(subject.run_config, "train", CALIBRATION_EXAMPLES)
                 if subject.run_config else None)
  exported = artifact_variants(subject.models["float32"], TASKS.get(subject.task_name),
                               config.runtimes, folder, calibration)
  return variants + [v for v in exported if v.precision in wanted]


def _try_latency(variants, single, config) -> tuple[dict[str, list[float]], dict, list]:
  """interleaved_latency over the variants that run; an XLA failure at the first call
  (compilation happens then) becomes that variant's error."""
  while True:
    runnable = [v for v in variants if v.run is not None]
    try:
      seconds, device = interleaved_latency(runnable, single, config.iterations, config.rounds,
                                            config.warmup, config.sample_interval_s)
      return seconds, device, runnable
    except tf.errors.OpError as error:
      failing = next(v for v in runnable if v.xla and _fails(v, single))
      failing.run, failing.error = None, f"XLA failed: {_error_text(error)}"
      logging.warning("%s: %s", failing.name, failing.error)


def _fails(variant: Variant, single: np.ndarray) -> bool:
  try:
    variant.run(single)
    return False
  except tf.errors.OpError:
    return True


def _batches(run_config, split: str, batch_size: int):
  """A split of the run's data as evaluation reads it: (pixels, labels, mask) numpy batches."""
  input_config = dataclasses.replace(
      run_config.input, split=split, global_batch_size=batch_size,
      training=False, cache="none", balance="none", tf_data_service=None)
  for images, labels, mask in make_dataset(input_config):
    yield images.numpy().astype(np.float32), labels.numpy(), mask.numpy() > 0


def _validation_batches(run_config, batch_size: int) -> tuple[list, Any]:
  return (list(_batches(run_config, run_config.eval_split, batch_size)),
          TASKS.get(run_config.input.task))


def _images(run_config, split: str, count: int) -> np.ndarray:
  """The first `count` images of a split (calibration: never the validation split)."""
  images = []
  for pixels, _, mask in _batches(run_config, split, 32):
    images.extend(pixels[mask])
    if len(images) >= count:
      break
  return np.stack(images[:count])


def _accuracy(variant: Variant, batches: list, task) -> float:
  correct = []
  for pixels, labels, mask in batches:
    probabilities = np.asarray(task.probabilities(variant.run(pixels)[mask].astype(np.float64)))
    correct.append(task.correct(labels[mask], probabilities))
  return round(float(np.mean(np.concatenate(correct))), 4)


def _measure_backbone(name: str | None, config: LatencyConfig, policies: list[str]
                      ) -> tuple[list[dict[str, Any]], dict]:
  """Rows for every path but predict (measured later, see the module docstring)."""
  subject = _subject(name, config, policies)
  single, batch = _inputs(subject.size, config.batch_size)
  flops = count_flops(subject.models["float32"])
  params = subject.models["float32"].count_params()
  with tempfile.TemporaryDirectory(prefix="latency-artifacts-") as folder:
    variants = _variants(subject, config, policies, folder, [single.shape, batch.shape])
    seconds, window, runnable = _try_latency(variants, single, config)
    batches, task = (_validation_batches(subject.run_config, config.batch_size)
                     if subject.run_config else (None, None))
    reference = None
    rows = []
    for variant in variants:
      row = {"backbone": subject.name, "image_size": list(subject.size),
             "runtime": variant.runtime, "precision": variant.precision, "xla": variant.xla,
             "frozen": config.freeze if variant.runtime == "tensorflow" else None,
             "batch_size": config.batch_size, "params": params, "flops": flops,
             "error": variant.error, "accuracy": None, "max_abs_logit_difference": None}
      if variant in runnable:
        row["latency_ms"] = latency_stats_ms(seconds[variant.name])
        row.update(throughput(variant, batch, config.throughput_batches,
                              config.throughput_warmup, config.sample_interval_s))
        logits = variant.run(batch)
        reference = logits if reference is None else reference
        row["max_abs_logit_difference"] = float(f"{np.max(np.abs(logits - reference)):.3g}")
        if batches:
          row["accuracy"] = _accuracy(variant, batches, task)
      rows.append(row)
  _release(*subject.models.values())
  return rows, {"backbone": subject.name, "image_size": list(subject.size),
                "other_processes_cpu_pct": other_processes_cpu_pct(window), "device": window}


def _predict_rows(name: str | None, config: LatencyConfig, policies: list[str]
                  ) -> list[dict[str, Any]]:
  """model.predict at batch 1, float32 and each policy, on fresh builds, interleaved."""
  subject = _subject(name, config, policies)
  single, _ = _inputs(subject.size, 1)
  variants = [predict_variant(subject.models[p], _compute_dtype(p))
              for p in dict.fromkeys(["float32", *policies])]
  seconds, _ = interleaved_latency(variants, single, config.iterations, config.rounds,
                                   config.warmup, config.sample_interval_s)
  rows = [{"backbone": subject.name, "image_size": list(subject.size), "runtime": "predict",
           "precision": v.precision, "xla": bool(subject.models["float32"].jit_compile),
           "frozen": None, "batch_size": 1, "params": None, "flops": None, "error": None,
           "accuracy": None, "max_abs_logit_difference": None,
           "latency_ms": latency_stats_ms(seconds[v.name])} for v in variants]
  _release(*subject.models.values())
  return rows


def _add_baseline_ratios(rows: list[dict[str, Any]], peak_gflops: dict[str, float]) -> None:
  """Each row's FLOP floor (its own precision's peak) and the ratios to the baselines."""
  predict_ms = {r["backbone"]: r["latency_ms"]["p50"] for r in rows
                if r["runtime"] == "predict" and r["precision"] == "float32"}
  flops = {r["backbone"]: r["flops"] for r in rows if r["flops"]}
  for row in rows:
    p50 = row["latency_ms"]["p50"] if "latency_ms" in row else None
    peak = peak_gflops.get(row["precision"])  # no int8 peak: TF has no CPU int8 matmul
    floor_ms = flops[row["backbone"]] / (peak * 1e9) * 1e3 if peak else None
    row["flop_floor_ms"] = float(f"{floor_ms:.4g}") if peak else None  # tiny models too
    row["vs_flop_floor"] = round(p50 / floor_ms, 3) if p50 and peak else None
    row["predict_p50_ms"] = predict_ms.get(row["backbone"])
    row["speedup_vs_predict"] = (round(row["predict_p50_ms"] / p50, 3)
                                 if p50 and row["predict_p50_ms"] else None)


def fastest(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Per backbone, the deployable row (not predict) with the lowest batch-1 p50."""
  best = {}
  for row in rows:
    if row["runtime"] == "predict" or "latency_ms" not in row:
      continue
    current = best.get(row["backbone"])
    if current is None or row["latency_ms"]["p50"] < current["latency_ms"]["p50"]:
      best[row["backbone"]] = row
  return list(best.values())


def _notes(config: LatencyConfig, duplicate_notes: list[str]) -> list[str]:
  notes = list(duplicate_notes)
  if not config.model_dir:
    notes.append("accuracy needs a trained run (model_dir): these backbones have seeded random "
                 "weights, so each row reports its logit difference from the first row instead")
  if config.model_dir and "openvino" in config.runtimes:
    notes.append(f"openvino int8: calibrated on the first {CALIBRATION_EXAMPLES} training "
                 "images; no int8 FLOP floor (no int8 matmul peak is measured)")
  if not tf.config.list_physical_devices("GPU"):
    notes.append("TF-TRT/TensorRT: not measured, no NVIDIA GPU here")
  return notes


def run_latency_benchmark(config: LatencyConfig) -> dict[str, Any]:
  """Measures every backbone x path; returns (and writes) the report.

  Builds seed Keras' global random state (`keras.utils.set_random_seed(0)`), so every
  path of a backbone runs the same weights.
  """
  config.validate()
  threads = configure_threads(config.intra_op_threads, config.inter_op_threads)
  chosen, duplicate_notes = resolve_policies(config.precisions)
  for note in duplicate_notes:
    logging.info(note)
  policies = [p["policy"] for p in chosen]
  dtypes = sorted({"float32"} | {_compute_dtype(p) for p in policies})
  peaks_before = {d: matmul_peak_gflops(d, config.matmul_size) for d in dtypes}
  backbones = [None] if config.model_dir else list(config.backbones or default_backbones())
  rows, windows = [], []
  for name in backbones:
    backbone_rows, window = _measure_backbone(name, config, policies)
    rows.extend(backbone_rows)
    windows.append(window)
  if "predict" in config.runtimes:
    for name in backbones:
      rows.extend(_predict_rows(name, config, policies))
  peaks_after = {d: matmul_peak_gflops(d, config.matmul_size) for d in dtypes}
  # The peak is measured before and after the rows and the higher one sets the floors:
  # a busy moment (other processes, a cold AMX unit) must not make the floor generous.
  peaks = {d: max(peaks_before[d], peaks_after[d]) for d in dtypes}
  _add_baseline_ratios(rows, peaks)
  report = {
      "config": {k: v for k, v in dataclasses.asdict(config).items()
                 if k not in ("output_json", "output_csv")},
      "machine": machine_description(),
      "threads": threads,
      "matmul_peak_gflops": {d: round(v, 1) for d, v in peaks.items()},
      "matmul_peak_gflops_runs": {"before": {d: round(v, 1) for d, v in peaks_before.items()},
                                  "after": {d: round(v, 1) for d, v in peaks_after.items()}},
      "precisions": chosen,
      "notes": _notes(config, duplicate_notes),
      "latency_windows": windows,
      "results": rows,
      "fastest": [{k: r[k] for k in ("backbone", "runtime", "precision", "xla")}
                  for r in fastest(rows)],
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
           f"{'backbone':<20}{'runtime':<12}{'precision':<10}{'xla':<5}{'p50':>8}{'p90':>8}"
           f"{'p99':>8}{'img/s':>8}{'floor':>8}{'xfloor':>8}{'xpred':>7}{'acc':>8}"
           f"{'dlogit':>9}",
           f"(ms; img/s at batch {report['config']['batch_size']}; floor = FLOPs / matmul peak "
           "of the row's precision; xfloor = p50 / floor; xpred = float32 predict p50 / p50; "
           "acc = validation accuracy; dlogit = max |logit - first row's| at batch N)"]
  for r in report["results"]:
    xla = "-" if r["xla"] is None else ("on" if r["xla"] else "off")
    head = f"{r['backbone']:<20}{r['runtime']:<12}{r['precision']:<10}{xla:<5}"
    if "latency_ms" not in r:
      lines.append(f"{head}{(r['error'] or '')[:100]}")
      continue
    ms = r["latency_ms"]
    lines.append(
        f"{head}{ms['p50']:>8.2f}{ms['p90']:>8.2f}{ms['p99']:>8.2f}"
        f"{_cell(r.get('images_per_sec'), '.1f'):>8}{_cell(r['flop_floor_ms'], '.3g'):>8}"
        f"{_cell(r['vs_flop_floor'], '.2f'):>8}{_cell(r['speedup_vs_predict'], '.1f'):>7}"
        f"{_cell(r['accuracy'], '.4f'):>8}{_cell(r['max_abs_logit_difference'], '.2g'):>9}")
  return "\n".join(lines)


def _cell(value, spec: str) -> str:
  return "-" if value is None else format(value, spec)
