"""Learning-rate schedules and optimizers (Keras 3), built from TrainConfig."""

from __future__ import annotations

import logging
import math

import keras
import tensorflow as tf

from engine.config import TrainConfig
from engine.train.fused_adam import FusedAdam, FusedAdamW


class LearningRate(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warmup, then constant / cosine to zero / step decay, times `scale`.

  `scale` is a variable the reduce-on-plateau hook lowers (schedule=plateau); it is
  checkpointed with the run, so a resumed run keeps the reduced rate.
  """

  def __init__(self, base: float, total_steps: int, warmup_steps: int = 0, kind: str = "cosine",
               decay_steps: tuple[int, ...] = (), decay_factor: float = 0.1, scale=None):
    self.base, self.total_steps, self.warmup_steps = base, max(total_steps, 1), warmup_steps
    self.kind, self.decay_steps, self.decay_factor = kind, tuple(decay_steps), decay_factor
    self.scale = scale

  def __call__(self, step):
    step = tf.cast(step, tf.float32)
    warmup = float(max(self.warmup_steps, 1))
    if self.kind == "cosine":
      progress = tf.clip_by_value((step - self.warmup_steps) /
                                  max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0)
      rate = 0.5 * self.base * (1.0 + tf.cos(math.pi * progress))
    elif self.kind == "step":
      drops = tf.add_n([tf.cast(step >= s, tf.float32) for s in self.decay_steps]) \
          if self.decay_steps else 0.0
      rate = self.base * tf.pow(self.decay_factor, drops)
    else:  # constant, plateau
      rate = tf.constant(self.base, tf.float32)
    if self.warmup_steps:
      rate = rate * tf.minimum(1.0, (step + 1.0) / warmup)
    if self.scale is not None:
      rate = rate * tf.cast(self.scale, tf.float32)
    return rate

  def get_config(self):
    return {"base": self.base, "total_steps": self.total_steps, "warmup_steps": self.warmup_steps,
            "kind": self.kind, "decay_steps": self.decay_steps, "decay_factor": self.decay_factor}


def make_optimizer(config: TrainConfig, schedule: LearningRate, loss_scaling: bool):
  """The configured optimizer; wrapped in a dynamic LossScaleOptimizer for float16.

  Adam and AdamW are Keras' own with the fused per-variable update (engine.train.fused_adam).
  """
  common = {"learning_rate": schedule}
  if config.grad_clip_norm:
    common["global_clipnorm"] = config.grad_clip_norm
  if config.grad_accum_steps > 1:
    # Keras averages the accumulated gradients and updates every N steps.
    common["gradient_accumulation_steps"] = config.grad_accum_steps
  if config.optimizer == "adamw":
    optimizer = FusedAdamW(weight_decay=config.weight_decay or 0.0, **common)
  elif config.optimizer == "sgd":
    optimizer = keras.optimizers.SGD(momentum=config.momentum, nesterov=True,
                                     weight_decay=config.weight_decay or None, **common)
  elif config.optimizer == "adamax":
    optimizer = keras.optimizers.Adamax(weight_decay=config.weight_decay or None, **common)
  else:
    optimizer = FusedAdam(weight_decay=config.weight_decay or None, **common)
  logging.info("optimizer %s%s", type(optimizer).__name__,
               " (one ResourceApplyAdam kernel per variable)"
               if isinstance(optimizer, (FusedAdam, FusedAdamW)) else "")
  if loss_scaling:
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer


def exclude_from_decay(optimizer, model: keras.Model) -> None:
  """No weight decay on biases and batch-norm parameters (the usual practice)."""
  inner = getattr(optimizer, "inner_optimizer", optimizer)
  vectors = [v for v in model.trainable_variables if len(v.shape) <= 1]
  if vectors:
    inner.exclude_from_weight_decay(var_list=vectors)
