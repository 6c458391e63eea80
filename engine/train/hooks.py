"""Small training hooks: each decides one thing from what the loop tells it.

State that must survive a restart (best value, patience counters) is exposed with
`state()` / `load_state()` and saved inside the training checkpoint.
"""

from __future__ import annotations

import logging
import math
import time


class NonFiniteLossError(RuntimeError):
  """Training produced a NaN/Inf loss; the message names the step."""


def check_finite(first_bad_step: int, step_before_loop: int, last_checkpoint: str | None) -> None:
  """Raises when a loop reported a non-finite loss (index of the first bad step, -1 if none).

  This holds under dynamic loss scaling too: an overflow in the scaled *gradients* is
  normal there (the optimizer skips that update and lowers the scale) and never reaches
  the loss, but a non-finite loss itself means the forward pass broke.
  """
  if first_bad_step < 0:
    return
  raise NonFiniteLossError(
      f"non-finite loss at step {step_before_loop + first_bad_step + 1}: stopping without "
      f"saving; the last good checkpoint is {last_checkpoint or 'none (none was written yet)'}. "
      "Lower --learning_rate, set --grad_clip_norm, or check the input data")


def _better(mode: str, value: float, best: float | None, min_delta: float = 0.0) -> bool:
  if best is None or math.isnan(best):
    return True
  return value > best + min_delta if mode == "max" else value < best - min_delta


class EarlyStopping:
  """Stops after `patience` evaluations without improvement of the monitored metric."""

  def __init__(self, patience: int, mode: str, min_delta: float = 0.0):
    self.patience, self.mode, self.min_delta = patience, mode, min_delta
    self.best, self.bad_evals = None, 0

  def update(self, value: float) -> bool:
    """Returns True when training should stop."""
    if _better(self.mode, value, self.best, self.min_delta):
      self.best, self.bad_evals = value, 0
      return False
    self.bad_evals += 1
    return bool(self.patience) and self.bad_evals >= self.patience

  def state(self) -> dict:
    return {"best": self.best, "bad_evals": self.bad_evals}

  def load_state(self, state: dict) -> None:
    self.best, self.bad_evals = state.get("best"), state.get("bad_evals", 0)


class PlateauLR:
  """Multiplies the learning-rate scale by `factor` after `patience` flat evaluations."""

  def __init__(self, scale_variable, patience: int, factor: float, mode: str, min_scale=1e-3):
    self.scale, self.patience, self.factor = scale_variable, patience, factor
    self.tracker = EarlyStopping(0, mode)
    self.min_scale = min_scale

  def update(self, value: float) -> bool:
    """Returns True when the rate was lowered."""
    self.tracker.update(value)
    if self.tracker.bad_evals < self.patience:
      return False
    self.tracker.bad_evals = 0
    new = max(float(self.scale.numpy()) * self.factor, self.min_scale)
    self.scale.assign(new)
    logging.info("reduce-on-plateau: learning-rate scale now %.4g", new)
    return True

  def state(self) -> dict:
    return self.tracker.state()

  def load_state(self, state: dict) -> None:
    self.tracker.load_state(state)


class BestExporter:
  """Keeps model_dir/best/model.weights.h5 + metrics.json for the best monitored value."""

  def __init__(self, mode: str):
    self.mode, self.best, self.best_step = mode, None, None

  def update(self, value: float, step: int) -> bool:
    """Returns True when `value` is a new best (the caller then writes the weights)."""
    if _better(self.mode, value, self.best):
      self.best, self.best_step = value, step
      return True
    return False

  def state(self) -> dict:
    return {"best": self.best, "best_step": self.best_step}

  def load_state(self, state: dict) -> None:
    self.best, self.best_step = state.get("best"), state.get("best_step")


class ThroughputMeter:
  """Images/s and step time over the last interval, and an ETA for the remaining steps."""

  def __init__(self, global_batch_size: int):
    self.global_batch_size = global_batch_size
    self._start = time.perf_counter()

  def lap(self, steps: int, remaining_steps: int) -> dict:
    now = time.perf_counter()
    seconds, self._start = now - self._start, now
    step_time = seconds / max(steps, 1)
    return {"images_per_sec": steps * self.global_batch_size / max(seconds, 1e-9),
            "step_time_ms": 1000.0 * step_time, "eta_sec": remaining_steps * step_time}

  def reset(self) -> None:
    """Restart the clock (after evaluation or checkpointing, which are not train steps)."""
    self._start = time.perf_counter()
