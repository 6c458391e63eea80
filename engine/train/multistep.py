"""The compiled multi-step loop and where it must stop.

One host call runs up to N training steps inside a single tf.function (a tf.while_loop
over the distributed iterator); between calls the host logs, evaluates and checkpoints at
the boundaries below.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from engine.config import ExperimentConfig


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


def make_sync_statistics(strategy: tf.distribute.Strategy, model: keras.Model):
  """Averages the non-trainable variables (batch-norm moving statistics) over replicas.

  Gradients are all-reduced, so trainable weights agree on every replica; the moving
  statistics are updated from each replica's own batches and drift apart. Averaging
  them before each evaluation, checkpoint and at the end gives every replica (and
  every worker) the same, better-estimated statistics: what tf.keras' ON_READ/MEAN
  variables returned when read.
  """
  variables = model.non_trainable_variables
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


class Boundaries:
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
