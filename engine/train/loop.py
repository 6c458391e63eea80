"""How it is trained: the custom loop under a tf.distribute strategy.

One host call runs `steps_per_loop` steps inside a single tf.function (a tf.while_loop
over the distributed iterator), each step being the small per-replica function from
task.py, compiled with XLA when `jit_compile` resolves on. Between host calls the loop
logs, evaluates, checkpoints and asks the hooks what to do next.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time

import keras
import numpy as np
import tensorflow as tf

from engine import precision
from engine.config import ExperimentConfig, MONITOR_MODES
from engine.data import device_augment, integrity, pipeline, service
from engine.models import build_model
from engine.models.matmul_conv import log_weight_grad_choice
from engine.monitor import DeviceSampler
from engine.resolve import class_weights, read_run_manifest, resolve_experiment
from engine.atomic_write import atomic_write_json
from engine.run.checkpoint import RunCheckpoint, remove_worker_directory
from engine.run.lock import RunLock
from engine.run.run_dir import prepare_run_dir
from engine.tasks import TASKS
from engine.train import hooks as hooks_lib
from engine.train import memory, strategy as strategy_lib
from engine.train.evaluation import Evaluator
from engine.train.multistep import Boundaries, make_sync_statistics, make_train_loop
from engine.train.optim import LearningRate, exclude_from_decay, make_optimizer
from engine.train.summaries import RunSummaries
from engine.train.task import TaskSpec, WeightAverage, make_train_step


@dataclasses.dataclass
class _Run:
  """What the loop holds while it runs (built by _setup)."""

  config: ExperimentConfig
  strategy: tf.distribute.Strategy
  model: keras.Model
  optimizer: keras.optimizers.Optimizer
  schedule: LearningRate
  ema: WeightAverage | None
  checkpoint: RunCheckpoint
  spec: TaskSpec
  use_jit: bool
  policy: str
  chief: bool
  worker_dir: str | None
  steps_per_epoch: int
  total_steps: int
  lock: RunLock | None
  manifest: dict


def train(config: ExperimentConfig) -> dict:
  """Trains (or resumes) the configured run; returns the final summary (also summary.json).

  Raises:
    RunLockedError: another trainer is running on the same model_dir.
  """
  started = time.perf_counter()
  run = _setup(config)
  try:
    return _train(run, started)
  finally:
    if run.lock:
      run.lock.release()


class _Hooks:
  """Early stopping, best-weights export and reduce-on-plateau, with their saved state."""

  def __init__(self, run: _Run, state: dict):
    train = run.config.train
    mode = MONITOR_MODES[train.monitor]
    self.monitor = train.monitor
    self.early = hooks_lib.EarlyStopping(train.early_stopping_patience, mode)
    self.best = hooks_lib.BestExporter(mode)
    self.plateau = (hooks_lib.PlateauLR(run.schedule.scale, train.plateau_patience,
                                        train.plateau_factor, mode)
                    if train.schedule == "plateau" else None)
    for name, hook in self._named():
      hook.load_state(state.get(name, {}))

  def _named(self):
    return [(n, h) for n, h in (("early", self.early), ("best", self.best),
                                ("plateau", self.plateau)) if h is not None]

  def state(self) -> dict:
    return {name: hook.state() for name, hook in self._named()}

  def after_eval(self, metrics: dict, step: int, evaluator: Evaluator, chief: bool) -> str | None:
    """Exports a new best, lowers the rate on a plateau; returns why to stop, if so."""
    value = metrics[self.monitor]
    if self.best.update(value, step) and chief:
      evaluator.export_best(step, metrics)
    if self.plateau is not None:
      self.plateau.update(value)
    if self.early.update(value):
      return (f"early stopping: no {self.monitor} improvement in {self.early.patience} "
              "evaluations")
    return None


class _Timing:
  """Wall time, step time and images, summed over every process of the run."""

  def __init__(self, started: float, before: dict):
    # What earlier processes of this run spent, up to the checkpoint resumed from.
    self.started = started
    self.before = {"wall_seconds": 0.0, "train_step_seconds": 0.0, "images": 0,
                   "processes": 0, **before}
    self.step_seconds, self.images = 0.0, 0

  def add(self, seconds: float, images: int) -> None:
    self.step_seconds += seconds
    self.images += images

  def totals(self) -> dict:
    wall = time.perf_counter() - self.started
    return {"wall_seconds": self.before["wall_seconds"] + wall,
            "train_step_seconds": self.before["train_step_seconds"] + self.step_seconds,
            "images": self.before["images"] + self.images,
            "processes": self.before["processes"] + 1, "this_process_wall_seconds": wall}

  def saved(self) -> dict:
    """What the checkpoint carries for the next process."""
    return {k: v for k, v in self.totals().items() if k != "this_process_wall_seconds"}


def _train(run: _Run, started: float) -> dict:
  config = run.config
  summaries = RunSummaries(config.train.model_dir, enabled=run.chief)
  evaluator = Evaluator(config, run.model, run.ema, run.manifest)
  state = run.checkpoint.restore()
  hooks, timing = _Hooks(run, state), _Timing(started, state.get("timing", {}))
  step = int(run.checkpoint.step.numpy())
  if step == 0:
    summaries.hparams(_hparams(config, run))
  chunk = _ChunkRunner(run, iter(_train_dataset(run, skip_steps=step)), summaries)
  sync_statistics = make_sync_statistics(run.strategy, run.model)
  run.checkpoint.handle_sigterm()
  boundaries = Boundaries(config, run.steps_per_epoch, run.total_steps)
  last_metrics, stopped_by = {}, "completed"
  logging.info("training %s from step %d to %d (%d steps/epoch, global batch %d)",
               config.model.backbone, step, run.total_steps, run.steps_per_epoch,
               config.input.global_batch_size)
  try:
    while step < run.total_steps:
      step = chunk.run(step, boundaries.next_chunk(step), timing)
      if boundaries.is_eval(step) or boundaries.is_checkpoint(step):
        sync_statistics()
      if boundaries.is_eval(step):
        last_metrics = evaluator.run(step, summaries)
        stopped_by = hooks.after_eval(last_metrics, step, evaluator, run.chief) or stopped_by
      if boundaries.is_checkpoint(step) or stopped_by != "completed" or \
          run.checkpoint.stop_requested:
        run.checkpoint.save(step, {**hooks.state(), "timing": timing.saved()})
      chunk.meter.reset()
      if run.checkpoint.stop_requested:
        stopped_by = "SIGTERM"
      if stopped_by != "completed":
        logging.info("stopping at step %d: %s", step, stopped_by)
        break
  finally:
    run.checkpoint.restore_sigterm()
    chunk.sampler.stop()
    summaries.stop_profile()
    summaries.flush()
  total = timing.totals()
  total["train_images_per_sec"] = (total["images"] / total["train_step_seconds"]
                                   if total["train_step_seconds"] else None)
  return _finish(run, step, stopped_by, last_metrics, hooks.best, chunk.sampler.summary(), total)


class _ChunkRunner:
  """Runs the compiled multi-step loop up to the next boundary and logs what it did."""

  def __init__(self, run: _Run, iterator, summaries: RunSummaries):
    self.run_, self.iterator, self.summaries = run, iterator, summaries
    self.train_loop = _make_train_loop(run)
    self.meter = hooks_lib.ThroughputMeter(run.config.input.global_batch_size)
    self.sampler = DeviceSampler(interval_s=1.0)
    self.sampler.start()

  def run(self, step: int, n: int, timing: _Timing) -> int:
    """Runs up to n steps from `step`; returns the step reached.

    Raises:
      NonFiniteLossError: a loss was NaN/Inf (names the step and the last checkpoint).
      ShardIntegrityError: a record could not be read (names the shard and record).
    """
    run, config = self.run_, self.run_.config
    profile = config.train.profile_steps
    if profile and step == profile[0]:
      self.summaries.start_profile()
    start = time.perf_counter()
    try:
      sums, wait_sec, first_bad, done = self.train_loop(self.iterator, tf.constant(n, tf.int32))
    except tf.errors.DataLossError as e:
      raise integrity.corrupt_record_error(config.input.data_dir, run.manifest,
                                           config.input.split, e) from e
    seconds = time.perf_counter() - start
    hooks_lib.check_finite(int(first_bad), step, run.checkpoint.manager.latest_checkpoint)
    step += int(done)
    timing.add(seconds, int(done) * config.input.global_batch_size)
    if profile and step >= profile[1]:
      self.summaries.stop_profile()
    logs = _train_logs(run, sums, float(wait_sec), seconds, self.meter, step)
    _log_progress(step, run, logs)
    system = {f"system/{k}": v for k, v in self.sampler.latest().items()
              if isinstance(v, (int, float))}
    self.summaries.scalars("train", step, {**logs, **system})
    return step


def _setup(config: ExperimentConfig) -> _Run:
  manifest = read_run_manifest(config)
  config = resolve_experiment(config, manifest)
  if config.input.tf_data_service:  # a wrong address fails now, not after the model is built
    service.probe_dispatcher(config.input.tf_data_service)
  config = dataclasses.replace(config, input=device_augment.resolve_augment_on(config.input))
  train_config = config.train
  strategy_lib.configure_devices(train_config.cpu_devices, train_config.gpu_memory_limit_mb)
  keras.utils.set_random_seed(train_config.seed)
  if train_config.deterministic:
    tf.config.experimental.enable_op_determinism()
  strategy = strategy_lib.make_strategy(train_config.strategy)
  policy, why = precision.resolve_precision(train_config.precision)
  logging.info("precision: %s (%s)", policy, why)
  use_jit, jit_why = strategy_lib.resolve_jit(train_config.jit_compile, strategy)
  logging.info("XLA: %s (%s)", "on" if use_jit else "off", jit_why)
  with strategy.scope(), precision.policy(policy):
    model = build_model(config.model)
  log_weight_grad_choice(model)
  estimate = memory.estimate_memory(model)
  config = _resolve_batch(config, strategy, estimate, policy, use_jit)
  logging.info(estimate.describe(config.input.global_batch_size))
  integrity.check_shards(config.input.data_dir, manifest,
                         sorted({config.input.split, config.eval_split}), config.input.verify_shards)
  num_train = manifest["splits"][config.input.split]["num_examples"]
  steps_per_epoch = max(num_train // config.input.global_batch_size, 1)
  total_steps = train_config.train_steps or train_config.epochs * steps_per_epoch
  chief = strategy_lib.is_chief(strategy)
  # The chief alone writes model_dir; it locks it before writing anything there.
  lock = RunLock(train_config.model_dir).acquire() if chief else None
  try:
    return _build_run(config, strategy, model, policy, use_jit, chief, lock, manifest,
                      steps_per_epoch, total_steps)
  except BaseException:
    if lock:
      lock.release()
    raise


def _build_run(config: ExperimentConfig, strategy, model, policy: str, use_jit: bool,
               chief: bool, lock: RunLock | None, manifest: dict, steps_per_epoch: int,
               total_steps: int) -> _Run:
  """Writes the run directory's config and builds the training state (under the lock)."""
  train_config = config.train
  num_outputs = config.model.num_outputs
  prepare_run_dir(config, chief)
  spec = TaskSpec(TASKS.get(config.input.task), num_outputs, train_config.label_smoothing,
                  class_weights(config, manifest))
  with strategy.scope():
    scale = tf.Variable(1.0, trainable=False, name="lr_scale",
                        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
    warmup = int(train_config.warmup_epochs * steps_per_epoch)
    schedule = LearningRate(train_config.learning_rate, total_steps, warmup, train_config.schedule,
                            tuple(e * steps_per_epoch for e in train_config.step_decay_epochs),
                            train_config.step_decay_factor, scale)
    optimizer = make_optimizer(train_config, schedule, precision.needs_loss_scaling(policy))
    optimizer.build(model.trainable_variables)  # slots exist before the compiled step
    if train_config.weight_decay and train_config.optimizer != "sgd":
      exclude_from_decay(optimizer, model)
    ema = WeightAverage(model, train_config.ema_decay) if train_config.ema_decay else None
  worker_dir = None if chief else os.path.join(train_config.model_dir, "workers",
                                               f"worker_{strategy_lib.worker_id(strategy)}")
  checkpoint = RunCheckpoint(os.path.join(worker_dir or train_config.model_dir, "checkpoints"),
                             model, optimizer.variables, ema.shadows_by_name() if ema else None,
                             scale, train_config.keep_checkpoints)
  return _Run(config, strategy, model, optimizer, schedule, ema, checkpoint, spec, use_jit, policy,
              chief, worker_dir, steps_per_epoch, total_steps, lock, manifest)


def _resolve_batch(config: ExperimentConfig, strategy, estimate, policy: str,
                   use_jit: bool) -> ExperimentConfig:
  """global_batch_size 0 means auto: the largest batch that fits (see memory.py)."""
  if config.input.global_batch_size:
    return config
  replicas = strategy.num_replicas_in_sync
  start = memory.starting_batch(estimate, memory.device_memory_mb(
      config.train.gpu_memory_limit_mb), replicas)
  if tf.config.list_logical_devices("GPU"):
    batch = memory.find_batch_size(
        lambda b: trial_step(config, b // replicas, policy, use_jit), start, minimum=replicas)
  else:
    batch = start
    logging.info("batch_size=auto on CPU: %d (host memory is not the limit; no trial steps)", batch)
  return dataclasses.replace(config, input=dataclasses.replace(config.input,
                                                               global_batch_size=batch))


def trial_step(config: ExperimentConfig, per_replica_batch: int, policy: str,
               use_jit: bool) -> None:
  """One throw-away step of the real training step at `per_replica_batch` on one device:
  a separate copy of the model, the configured optimizer with its slots (and loss scaling),
  the EMA when kept, compiled with XLA when the run will be. So what fits here fits there.

  Raises:
    tf.errors.ResourceExhaustedError: the step does not fit the device's memory.
  """
  with precision.policy(policy):
    model = build_model(config.model)
  train_config = config.train
  schedule = LearningRate(train_config.learning_rate, 1, kind="constant")
  optimizer = make_optimizer(train_config, schedule, precision.needs_loss_scaling(policy))
  optimizer.build(model.trainable_variables)
  ema = WeightAverage(model, train_config.ema_decay) if train_config.ema_decay else None
  task = TASKS.get(config.input.task)
  step = make_train_step(TaskSpec(task, config.model.num_outputs), model, optimizer,
                         per_replica_batch, ema)
  images = tf.zeros([per_replica_batch, *config.model.image_size, 3], config.input.output_dtype)
  labels = task.zero_labels(per_replica_batch, config.model.num_outputs)
  compiled = tf.function(step, jit_compile=use_jit)
  logging.info("batch_size=auto: trial step at %d per replica (%s, %s, XLA %s)",
               per_replica_batch, type(optimizer).__name__, policy, "on" if use_jit else "off")
  float(compiled(images, labels)["loss_sum"])  # waits for the device


def _train_dataset(run: _Run, skip_steps: int):
  batches_per_pipeline = (run.strategy.num_replicas_in_sync //
                          strategy_lib.num_input_pipelines(run.strategy))
  return run.strategy.distribute_datasets_from_function(
      lambda context: pipeline.make_dataset(
          run.config.input, context, skip_batches=skip_steps * batches_per_pipeline,
          service_job=service.job_name_for(run.config.train.model_dir, run.config.input.split)))


def _make_train_loop(run: _Run):
  step_fn = make_train_step(run.spec, run.model, run.optimizer,
                            run.config.input.global_batch_size, run.ema,
                            device_augment.make_device_augment(run.config.input))
  # Input wait = time blocked in get_next, read with tf.timestamp, which TensorFlow
  # refuses under op determinism: deterministic runs do not measure it.
  measure_wait = not run.config.train.deterministic
  if not measure_wait:
    logging.info("deterministic: input-wait fraction not measured (tf.timestamp is disabled)")
  return make_train_loop(run.strategy, step_fn, run.use_jit, measure_wait)


def _train_logs(run: _Run, sums, wait_sec: float, seconds: float, meter, step: int) -> dict:
  count = max(float(sums["count"]), 1.0)
  rates = meter.lap(max(int(float(sums["count"])) // run.config.input.global_batch_size, 1),
                    run.total_steps - step)
  logs = {"loss": float(sums["loss_sum"]) / count, "accuracy": float(sums["correct"]) / count,
          "learning_rate": float(run.schedule(run.optimizer.iterations)),
          "images_per_sec": rates["images_per_sec"], "step_time_ms": rates["step_time_ms"],
          "input_wait_fraction": (None if run.config.train.deterministic
                                  else min(wait_sec / max(seconds, 1e-9), 1.0)),
          "epoch": step / run.steps_per_epoch, "eta_sec": rates["eta_sec"]}
  if isinstance(run.optimizer, keras.optimizers.LossScaleOptimizer):
    logs["loss_scale"] = float(run.optimizer.dynamic_scale.numpy())
  return logs


def _log_progress(step: int, run: _Run, logs: dict) -> None:
  eta = int(logs["eta_sec"])
  wait = logs["input_wait_fraction"]
  logging.info("step %d/%d epoch %.2f loss %.4f acc %.4f lr %.2e %.1f img/s input-wait %s "
               "ETA %d:%02d:%02d", step, run.total_steps, logs["epoch"], logs["loss"],
               logs["accuracy"], logs["learning_rate"], logs["images_per_sec"],
               "n/a" if wait is None else f"{100 * wait:.1f}%", eta // 3600, eta // 60 % 60,
               eta % 60)


def _hparams(config: ExperimentConfig, run: _Run) -> dict:
  values = {"backbone": config.model.backbone, "head": config.model.head,
            "image_size": config.model.image_size[0], "batch_size": config.input.global_batch_size,
            "precision": run.policy, "jit_compile": run.use_jit, "task": config.input.task}
  for field in ("optimizer", "learning_rate", "schedule", "weight_decay", "label_smoothing",
                "ema_decay", "epochs", "seed"):
    values[field] = getattr(config.train, field)
  return values


def weights_fingerprint(model: keras.Model) -> str:
  digest = hashlib.sha256()
  for weight in model.get_weights():
    digest.update(np.ascontiguousarray(weight).tobytes())
  return digest.hexdigest()


def _finish(run: _Run, step: int, stopped_by: str, metrics: dict, best, system: dict,
            timing: dict) -> dict:
  """Writes summary.json. Timing sums every process of the run (`processes`), each up to
  its last checkpoint; work a killed process did after that was redone, and counts once."""
  out_dir = run.worker_dir or run.config.train.model_dir
  path = os.path.join(out_dir, "summary.json")
  if not metrics and os.path.exists(path):  # a rerun that trained nothing keeps what was measured
    with open(path) as f:
      previous = json.load(f)
    if previous.get("step") == step:
      metrics = previous.get("final_metrics", {})
  summary = {"step": step, "total_steps": run.total_steps, "stopped_by": stopped_by, **timing,
             "final_metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
             "best": best.state(), "precision": run.policy, "jit_compile": run.use_jit,
             "replicas": run.strategy.num_replicas_in_sync,
             "weights_sha256": weights_fingerprint(run.model), "system": system}
  os.makedirs(out_dir, exist_ok=True)
  atomic_write_json(path, summary)
  if run.worker_dir:
    remove_worker_directory(os.path.join(run.worker_dir, "checkpoints"))
  return summary
