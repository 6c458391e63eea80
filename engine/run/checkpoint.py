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
import re
import shutil
import signal

import tensorflow as tf

from engine.models.builder import variables_by_name


MODEL_KEY, EMA_KEY = "model", "ema"


class NamedVariables(tf.Module):
  """Variables as one trackable, saved and restored by name (see `variables_by_name`), so a
  missing, extra or misplaced variable is an error naming it rather than a silent mix-up."""

  def __init__(self, variables: dict[str, tf.Variable]):
    super().__init__()
    self.by_name = dict(variables)


class VariableList(tf.Module):
  """A list of variables as one trackable, restored by position: the optimizer's slots,
  whose order is fixed by the model's (a resumed run must have the same config.json)."""

  def __init__(self, variables):
    super().__init__()
    self.items = list(variables)


class CheckpointWriteError(OSError):
  """A checkpoint could not be written (disk full, unwritable directory); the message names
  the directory and the newest complete checkpoint, which is left as it was."""


class RunCheckpoint:
  """Owns the training state that must survive a restart.

  Args:
    directory: model_dir/checkpoints (or a per-worker directory for non-chief workers).
    model: the model; its variables (BN statistics and RNG states included) are saved by name.
    optimizer_variables: the optimizer's variables, in their own order.
    ema_shadows: the moving averages, keyed by the name of the model variable each averages.
    max_to_keep: how many recent checkpoints to keep.
  """

  def __init__(self, directory: str, model, optimizer_variables,
               ema_shadows: dict[str, tf.Variable] | None = None, lr_scale=None,
               max_to_keep: int = 3):
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
    self.hook_state = tf.Variable("{}", dtype=tf.string, trainable=False, name="hook_state")
    items = {MODEL_KEY: NamedVariables(variables_by_name(model)),
             "optimizer": VariableList(optimizer_variables), "step": self.step,
             "hook_state": self.hook_state}
    if ema_shadows:
      items[EMA_KEY] = NamedVariables(ema_shadows)
    if lr_scale is not None:
      items["lr_scale"] = lr_scale
    self.directory = directory
    self.checkpoint = tf.train.Checkpoint(**items)
    self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=max_to_keep)
    self._stop_requested = False
    self._previous_sigterm = None

  def restore(self) -> dict:
    """Restores the newest checkpoint, if any; returns the saved hook state."""
    latest = self.manager.latest_checkpoint
    if latest:
      self.checkpoint.restore(latest).assert_existing_objects_matched()
      logging.info("resumed from %s at step %d", latest, int(self.step.numpy()))
    return json.loads(self.hook_state.numpy().decode())

  def save(self, step: int, hook_state: dict) -> str:
    """Writes checkpoint `step`; the index names it only once all its files are complete.

    Raises:
      CheckpointWriteError: the write failed; the previous checkpoint stays the newest.
    """
    self.step.assign(step)
    self.hook_state.assign(json.dumps(hook_state, sort_keys=True))
    try:
      path = self.manager.save(checkpoint_number=step)
    except (tf.errors.OpError, OSError) as e:
      self._remove_partial_files(step)
      previous = self.manager.latest_checkpoint or "none"
      reason = e.message if isinstance(e, tf.errors.OpError) else str(e)
      reason = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\]", "", reason)
      raise CheckpointWriteError(
          f"{self.directory}: cannot write the checkpoint of step {step} ({reason.strip()}); "
          f"the newest complete checkpoint is {previous}. Free space or fix the directory, "
          "then rerun the same command to resume from it") from None
    logging.info("checkpoint %s", path)
    return path

  def _remove_partial_files(self, step: int) -> None:
    """Deletes what a failed save of `step` left behind (its temporary or partial files)."""
    for name in tf.io.gfile.glob(os.path.join(self.directory, f"ckpt-{step}*")):
      try:
        if tf.io.gfile.isdir(name):
          tf.io.gfile.rmtree(name)
        else:
          tf.io.gfile.remove(name)
      except (tf.errors.OpError, OSError):
        logging.warning("%s: could not remove a partial checkpoint file", name)

  @property
  def stop_requested(self) -> bool:
    return self._stop_requested

  def handle_sigterm(self) -> None:
    """On SIGTERM: finish the current loop, save, and stop (the loop polls stop_requested).
    Until `restore_sigterm`: a process that goes on after training (a sweep's evaluation,
    the next run) must not swallow a SIGTERM meant for it."""
    def handler(signum, frame):
      del frame
      logging.warning("signal %d: saving a checkpoint and stopping", signum)
      self._stop_requested = True
    self._previous_sigterm = signal.signal(signal.SIGTERM, handler)

  def restore_sigterm(self) -> None:
    """Puts back the SIGTERM handler `handle_sigterm` replaced."""
    if self._previous_sigterm is not None:
      signal.signal(signal.SIGTERM, self._previous_sigterm)
      self._previous_sigterm = None


def remove_worker_directory(path: str) -> None:
  """Non-chief workers write throw-away checkpoints (MultiWorkerMirroredStrategy needs every
  worker to save); they are removed when the run ends."""
  shutil.rmtree(path, ignore_errors=True)
