"""How it is trained: the custom loop under a tf.distribute strategy.

One host call runs `steps_per_loop` steps inside a single tf.function (a tf.while_loop
over the distributed iterator), each step being the small per-replica function from
task.py, compiled with XLA when `jit_compile` resolves on. Between host calls the loop
logs, evaluates, checkpoints and asks the hooks what to do next.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time

import keras
import numpy as np
import tensorflow as tf

from engine.data import integrity, pipeline
from engine.models import build_model
from engine.monitor import DeviceSampler
from engine.train import hooks as hooks_lib
from engine.train import memory, precision, strategy as strategy_lib
from engine.train.checkpoint import RunCheckpoint, atomic_write_json, remove_worker_directory
from engine.train.config import MONITOR_MODES, ExperimentConfig
from engine.train.evaluation import Evaluator
from engine.train.optim import LearningRate, exclude_from_decay, make_optimizer
from engine.train.run_dir import prepare_run_dir
from engine.train.run_lock import RunLock
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


def _train(run: _Run, started: float) -> dict:
  config = run.config
  summaries = RunSummaries(config.train.model_dir, enabled=run.chief)
  evaluator = Evaluator(config, run.model, run.spec, run.ema)
  mode = MONITOR_MODES[config.train.monitor]
  early = hooks_lib.EarlyStopping(config.train.early_stopping_patience, mode)
  best = hooks_lib.BestExporter(mode)
  plateau = (hooks_lib.PlateauLR(run.schedule.scale, config.train.plateau_patience,
                                 config.train.plateau_factor, mode)
             if config.train.schedule == "plateau" else None)
  state = run.checkpoint.restore()
  for name, hook in (("early", early), ("best", best), ("plateau", plateau)):
    if hook is not None:
      hook.load_state(state.get(name, {}))
  step = int(run.checkpoint.step.numpy())
  # Time spent by earlier processes of this run, up to the checkpoint resumed from.
  before = {"wall_seconds": 0.0, "train_step_seconds": 0.0, "images": 0, "processes": 0,
            **state.get("timing", {})}

  def timing():
    wall, images = time.perf_counter() - started, images_seen
    return {"wall_seconds": before["wall_seconds"] + wall,
            "train_step_seconds": before["train_step_seconds"] + step_seconds,
            "images": before["images"] + images, "processes": before["processes"] + 1,
            "this_process_wall_seconds": wall}

  def hook_state():
    return {"early": early.state(), "best": best.state(),
            **({"plateau": plateau.state()} if plateau else {}),
            "timing": {k: v for k, v in timing().items() if k != "this_process_wall_seconds"}}

  if step == 0:
    summaries.hparams(_hparams(config, run))
  iterator = iter(_train_dataset(run, skip_steps=step))
  train_loop = _make_train_loop(run)
  sync_statistics = _make_sync_statistics(run)
  meter = hooks_lib.ThroughputMeter(config.input.global_batch_size)
  run.checkpoint.handle_sigterm()
  boundaries = _Boundaries(config, run.steps_per_epoch, run.total_steps)
  last_metrics, stopped_by = {}, "completed"
  step_seconds, images_seen = 0.0, 0
  sampler = DeviceSampler(interval_s=1.0)
  sampler.start()
  logging.info("training %s from step %d to %d (%d steps/epoch, global batch %d)",
               config.model.backbone, step, run.total_steps, run.steps_per_epoch,
               config.input.global_batch_size)
  try:
    while step < run.total_steps:
      n = boundaries.next_chunk(step)
      if config.train.profile_steps and step == config.train.profile_steps[0]:
        summaries.start_profile()
      start = time.perf_counter()
      try:
        sums, wait_sec, first_bad, done = train_loop(iterator, tf.constant(n, tf.int32))
      except tf.errors.DataLossError as e:
        raise integrity.corrupt_record_error(config.input.data_dir, run.manifest,
                                             config.input.split, e) from e
      seconds = time.perf_counter() - start
      hooks_lib.check_finite(int(first_bad), step, run.checkpoint.manager.latest_checkpoint)
      step += int(done)
      step_seconds += seconds
      images_seen += int(done) * config.input.global_batch_size
      if config.train.profile_steps and step >= config.train.profile_steps[1]:
        summaries.stop_profile()
      logs = _train_logs(run, sums, float(wait_sec), seconds, meter, step)
      _log_progress(step, run, logs)
      summaries.scalars("train", step, {**logs, **{f"system/{k}": v
                                                   for k, v in sampler.latest().items()
                                                   if isinstance(v, (int, float))}})
      if boundaries.is_eval(step) or boundaries.is_checkpoint(step):
        sync_statistics()
      if boundaries.is_eval(step):
        last_metrics = evaluator.run(step, summaries)
        value = last_metrics[config.train.monitor]
        if best.update(value, step) and run.chief:
          evaluator.export_best(step, last_metrics)
        if plateau is not None:
          plateau.update(value)
        if early.update(value):
          stopped_by = f"early stopping: no {config.train.monitor} improvement in " \
                       f"{early.patience} evaluations"
      if boundaries.is_checkpoint(step) or stopped_by != "completed" or \
          run.checkpoint.stop_requested:
        run.checkpoint.save(step, hook_state())
      meter.reset()
      if run.checkpoint.stop_requested:
        stopped_by = "SIGTERM"
      if stopped_by != "completed":
        logging.info("stopping at step %d: %s", step, stopped_by)
        break
  finally:
    sampler.stop()
    summaries.stop_profile()
    summaries.flush()
  total = timing()
  total["train_images_per_sec"] = (total["images"] / total["train_step_seconds"]
                                   if total["train_step_seconds"] else None)
  return _finish(run, step, stopped_by, last_metrics, best, sampler.summary(), total)


def _setup(config: ExperimentConfig) -> _Run:
  train_config = config.train.validate()
  strategy_lib.configure_devices(train_config.cpu_devices, train_config.gpu_memory_limit_mb)
  keras.utils.set_random_seed(train_config.seed)
  if train_config.deterministic:
    tf.config.experimental.enable_op_determinism()
  strategy = strategy_lib.make_strategy(train_config.strategy)
  policy, why = precision.resolve_precision(train_config.precision)
  logging.info("precision: %s (%s)", policy, why)
  use_jit, jit_why = strategy_lib.resolve_jit(train_config.jit_compile, strategy)
  logging.info("XLA: %s (%s)", "on" if use_jit else "off", jit_why)
  precision.apply_precision(policy)
  manifest = pipeline.read_manifest(config.input.data_dir)
  classes = pipeline.num_classes(manifest, config.input.task, config.input.label_attribute)
  config.check_monitor(classes, _eval_classes_present(config, manifest))
  num_outputs = 1 if config.input.task == "attribute" else classes
  config = dataclasses.replace(config, model=dataclasses.replace(config.model,
                                                                 num_outputs=num_outputs))
  with strategy.scope():
    model = build_model(config.model)
  estimate = memory.estimate_memory(model)
  config = _resolve_batch(config, strategy, estimate, policy, use_jit)
  logging.info(estimate.describe(config.input.global_batch_size))
  config.input.validate(manifest)
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
  weights = (tuple(pipeline.class_weights(manifest, config.input.task,
                                          config.input.label_attribute).values())
             if train_config.class_weighting else None)
  spec = TaskSpec(config.input.task, num_outputs, train_config.label_smoothing, weights)
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


def _eval_classes_present(config: ExperimentConfig, manifest: dict) -> int | None:
  """How many classes occur in the eval split, where the manifest counts them."""
  if config.eval_split not in manifest["splits"] or (
      manifest["source"] == "celeba" and config.input.task != "attribute"):
    return None
  counts = pipeline.class_counts(manifest, config.input.task, config.input.label_attribute,
                                 config.eval_split)
  return sum(count > 0 for count in counts)


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
  model = build_model(config.model)
  train_config = config.train
  schedule = LearningRate(train_config.learning_rate, 1, kind="constant")
  optimizer = make_optimizer(train_config, schedule, precision.needs_loss_scaling(policy))
  optimizer.build(model.trainable_variables)
  ema = WeightAverage(model, train_config.ema_decay) if train_config.ema_decay else None
  spec = TaskSpec(config.input.task, config.model.num_outputs)
  step = make_train_step(spec, model, optimizer, per_replica_batch, ema)
  images = tf.zeros([per_replica_batch, *config.model.image_size, 3], config.input.output_dtype)
  labels = (tf.zeros([per_replica_batch, config.model.num_outputs], tf.float32)
            if config.input.task == "attributes" else tf.zeros([per_replica_batch], tf.int32))
  compiled = tf.function(step, jit_compile=use_jit)
  logging.info("batch_size=auto: trial step at %d per replica (%s, %s, XLA %s)",
               per_replica_batch, type(optimizer).__name__, policy, "on" if use_jit else "off")
  float(compiled(images, labels)["loss_sum"])  # waits for the device


def _train_dataset(run: _Run, skip_steps: int):
  batches_per_pipeline = (run.strategy.num_replicas_in_sync //
                          strategy_lib.num_input_pipelines(run.strategy))
  return run.strategy.distribute_datasets_from_function(
      lambda context: pipeline.make_dataset(run.config.input, context,
                                            skip_batches=skip_steps * batches_per_pipeline))


def _make_train_loop(run: _Run):
  step_fn = make_train_step(run.spec, run.model, run.optimizer,
                            run.config.input.global_batch_size, run.ema)
  # Input wait = time blocked in get_next, read with tf.timestamp, which TensorFlow
  # refuses under op determinism: deterministic runs do not measure it.
  measure_wait = not run.config.train.deterministic
  if not measure_wait:
    logging.info("deterministic: input-wait fraction not measured (tf.timestamp is disabled)")
  return make_train_loop(run.strategy, step_fn, run.use_jit, measure_wait)


def make_train_loop(strategy: tf.distribute.Strategy, step_fn, use_jit: bool,
                    measure_wait: bool = True):
  """One tf.function running up to n steps of `step_fn` over a distributed iterator.

  Returns train_loop(iterator, n) -> (sums of the step's outputs, seconds blocked on
  input, index of the first non-finite loss or -1, steps done).
  """
  if use_jit:
    step_fn = tf.function(step_fn, jit_compile=True)
  sum_op = tf.distribute.ReduceOp.SUM

  @tf.function
  def train_loop(iterator, num_steps):
    totals = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
    wait = tf.constant(0.0, tf.float64)
    first_bad, done = tf.constant(-1), tf.constant(0)
    for i in tf.range(num_steps):
      if measure_wait:
        before = tf.timestamp()
        with tf.control_dependencies([before]):
          images, labels = next(iterator)
        arrived = tf.nest.flatten(strategy.experimental_local_results((images, labels)))
        with tf.control_dependencies(arrived):
          wait += tf.timestamp() - before
      else:
        images, labels = next(iterator)
      out = strategy.run(step_fn, args=(images, labels))
      out = {k: strategy.reduce(sum_op, v, axis=None) for k, v in out.items()}
      totals = {k: totals[k] + out[k] for k in totals}
      done = i + 1
      if not tf.math.is_finite(out["loss_sum"]):
        first_bad = i
        break
    return totals, wait, first_bad, done

  return train_loop


def _make_sync_statistics(run: _Run):
  """Averages the non-trainable variables (batch-norm moving statistics) over replicas.

  Gradients are all-reduced, so trainable weights agree on every replica; the moving
  statistics are updated from each replica's own batches and drift apart. Averaging
  them before each evaluation, checkpoint and at the end gives every replica (and
  every worker) the same, better-estimated statistics: what tf.keras' ON_READ/MEAN
  variables returned when read.
  """
  strategy = run.strategy
  variables = run.model.non_trainable_variables
  if strategy.num_replicas_in_sync == 1 or not variables:
    return lambda: None

  def replica_fn():
    context = tf.distribute.get_replica_context()
    means = context.all_reduce(tf.distribute.ReduceOp.MEAN,
                               [tf.identity(v.value) for v in variables])
    for variable, mean in zip(variables, means):
      variable.assign(mean)

  @tf.function
  def sync():
    strategy.run(replica_fn)

  return sync


class _Boundaries:
  """Where the host loop must stop: logging, evaluation, checkpoints, profiling, the end."""

  def __init__(self, config: ExperimentConfig, steps_per_epoch: int, total_steps: int):
    t = config.train
    self.total = total_steps
    self.eval_every = t.eval_every or steps_per_epoch
    self.checkpoint_every = t.checkpoint_every or steps_per_epoch
    self.log_every = t.log_every or t.steps_per_loop
    self.steps_per_loop = t.steps_per_loop
    self.profile = t.profile_steps

  def next_chunk(self, step: int) -> int:
    stops = [self.total, _next_multiple(step, self.eval_every),
             _next_multiple(step, self.checkpoint_every), _next_multiple(step, self.log_every)]
    stops += [p for p in self.profile if p > step]
    return max(1, min(min(stops) - step, self.steps_per_loop))

  def is_eval(self, step: int) -> bool:
    return step % self.eval_every == 0 or step >= self.total

  def is_checkpoint(self, step: int) -> bool:
    return step % self.checkpoint_every == 0 or step >= self.total


def _next_multiple(step: int, every: int) -> int:
  return (step // every + 1) * every


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
  summary = {"step": step, "total_steps": run.total_steps, "stopped_by": stopped_by, **timing,
             "final_metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
             "best": best.state(), "precision": run.policy, "jit_compile": run.use_jit,
             "replicas": run.strategy.num_replicas_in_sync,
             "weights_sha256": weights_fingerprint(run.model), "system": system}
  out_dir = run.worker_dir or run.config.train.model_dir
  os.makedirs(out_dir, exist_ok=True)
  atomic_write_json(os.path.join(out_dir, "summary.json"), summary)
  if run.worker_dir:
    remove_worker_directory(os.path.join(run.worker_dir, "checkpoints"))
  return summary
