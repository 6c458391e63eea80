"""Training checkpoints: model, optimizer, step, averages and hook state, resumable.

tf.train.CheckpointManager writes each checkpoint under a temporary name and renames
it when complete, and updates its index last, so a run killed at any moment (kill -9
included) restarts from the newest complete checkpoint. SIGTERM (a preempted cloud
VM, `kill`) saves first and then stops.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal

import tensorflow as tf


class VariableList(tf.Module):
  """A list of variables as one trackable: saved and restored by position."""

  def __init__(self, variables):
    super().__init__()
    self.items = list(variables)


class RunCheckpoint:
  """Owns the training state that must survive a restart.

  Args:
    directory: model_dir/checkpoints (or a per-worker directory for non-chief workers).
    model_variables / optimizer_variables / ema_variables: what to save.
    max_to_keep: how many recent checkpoints to keep.
  """

  def __init__(self, directory: str, model_variables, optimizer_variables, ema_variables=None,
               lr_scale=None, max_to_keep: int = 3):
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    self.hook_state = tf.Variable("{}", dtype=tf.string, trainable=False, name="hook_state")
    items = {"model": VariableList(model_variables), "optimizer": VariableList(optimizer_variables),
             "step": self.step, "hook_state": self.hook_state}
    if ema_variables:
      items["ema"] = VariableList(ema_variables)
    if lr_scale is not None:
      items["lr_scale"] = lr_scale
    self.checkpoint = tf.train.Checkpoint(**items)
    self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=max_to_keep)
    self._stop_requested = False

  def restore(self) -> dict:
    """Restores the newest checkpoint, if any; returns the saved hook state."""
    latest = self.manager.latest_checkpoint
    if latest:
      self.checkpoint.restore(latest).assert_existing_objects_matched()
      logging.info("resumed from %s at step %d", latest, int(self.step.numpy()))
    return json.loads(self.hook_state.numpy().decode())

  def save(self, step: int, hook_state: dict) -> str:
    self.step.assign(step)
    self.hook_state.assign(json.dumps(hook_state, sort_keys=True))
    path = self.manager.save(checkpoint_number=step)
    logging.info("checkpoint %s", path)
    return path

  @property
  def stop_requested(self) -> bool:
    return self._stop_requested

  def handle_sigterm(self) -> None:
    """On SIGTERM: finish the current loop, save, and stop (the loop polls stop_requested)."""
    def handler(signum, frame):
      del frame
      logging.warning("signal %d: saving a checkpoint and stopping", signum)
      self._stop_requested = True
    signal.signal(signal.SIGTERM, handler)


def remove_worker_directory(path: str) -> None:
  """Non-chief workers write throw-away checkpoints (MultiWorkerMirroredStrategy needs every
  worker to save); they are removed when the run ends."""
  shutil.rmtree(path, ignore_errors=True)


def atomic_write_json(path: str, payload: dict) -> None:
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(payload, f, indent=2, sort_keys=True)
  os.replace(tmp, path)
