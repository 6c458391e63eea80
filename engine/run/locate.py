"""A run directory's files, found without TensorFlow: its config, and the checkpoint a name means.

engine.run.restore loads weights through these, and the launchers call them before
TensorFlow's import starts (seconds), so a model_dir that is not a run, or a checkpoint
name it does not have, is answered at once, with the same message either way.

"latest" and the list of kept checkpoints come from `checkpoints/checkpoint`, the text
proto tf.train.CheckpointManager keeps (`model_checkpoint_path: "ckpt-1148"`, then one
`all_model_checkpoint_paths: "..."` line per kept checkpoint). Only those two fields are
read; the tests compare the answers with tf.train.latest_checkpoint and
tf.train.get_checkpoint_state on a real run.
"""

from __future__ import annotations

import json
import os
import re

from engine.config import ExperimentConfig

CHECKPOINT_STATE = "checkpoint"
_STATE_FIELD = re.compile(r'^\s*(model_checkpoint_path|all_model_checkpoint_paths):\s*"(.*)"\s*$')


def read_config(model_dir: str) -> ExperimentConfig:
  """The run's resolved configuration (`config.json`, written before step 0).

  Raises:
    FileNotFoundError: model_dir has no config.json (the message says so).
  """
  path = os.path.join(model_dir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: missing; is {model_dir} a training run directory?")
  with open(path) as f:
    return ExperimentConfig.from_dict(json.load(f))


def resolve_checkpoint(model_dir: str, checkpoint: str) -> tuple[str, str]:
  """("h5", file) or ("tf", prefix) for a checkpoint named as restore.load_model accepts.

  Raises:
    FileNotFoundError: no such checkpoint; the message says which ones the run has.
  """
  checkpoints_dir = os.path.join(model_dir, "checkpoints")
  if checkpoint == "best":
    path = os.path.join(model_dir, "best", "model.weights.h5")
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path}: no best checkpoint yet (it is written after the first "
                              f"evaluation); {_available(checkpoints_dir)}")
    return "h5", path
  if checkpoint.endswith(".weights.h5"):
    if not _exists(checkpoint):
      raise FileNotFoundError(f"{checkpoint}: weights file not found")
    return "h5", checkpoint
  if checkpoint == "latest":
    prefix = latest_checkpoint(checkpoints_dir)
    if not prefix:
      raise FileNotFoundError(f"{checkpoints_dir}: no training checkpoint yet")
    return "tf", prefix
  prefix = (os.path.join(checkpoints_dir, f"ckpt-{checkpoint}") if checkpoint.isdigit()
            else checkpoint)
  if not _exists(f"{prefix}.index"):
    raise FileNotFoundError(f"{prefix}: no such checkpoint ({prefix}.index is missing); "
                            f"{_available(checkpoints_dir)}")
  return "tf", prefix


def _exists(path: str) -> bool:
  """os.path.exists, or TensorFlow's filesystems for a path with a scheme (gs://, s3://,
  ram://): only such a path, named explicitly, costs the TensorFlow import here."""
  if "://" not in path:
    return os.path.exists(path)
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  return tf.io.gfile.exists(path)


def latest_checkpoint(checkpoints_dir: str) -> str | None:
  """The newest checkpoint's prefix, if its index file is there (tf.train.latest_checkpoint)."""
  newest = _checkpoint_state(checkpoints_dir).get("model_checkpoint_path")
  return newest[-1] if newest and os.path.exists(f"{newest[-1]}.index") else None


def kept_checkpoints(checkpoints_dir: str) -> list[str]:
  """The prefixes the checkpoint manager keeps, oldest first."""
  return _checkpoint_state(checkpoints_dir).get("all_model_checkpoint_paths", [])


def _checkpoint_state(checkpoints_dir: str) -> dict[str, list[str]]:
  """The state file's path fields, made absolute the way TensorFlow does (relative to
  checkpoints_dir); {} when there is no state file."""
  try:
    with open(os.path.join(checkpoints_dir, CHECKPOINT_STATE)) as f:
      lines = f.read().splitlines()
  except FileNotFoundError:
    return {}
  fields: dict[str, list[str]] = {}
  for line in lines:
    match = _STATE_FIELD.match(line)
    if match:
      fields.setdefault(match[1], []).append(os.path.join(checkpoints_dir, match[2]))
  return fields


def _available(checkpoints_dir: str) -> str:
  """What a user could name instead, for an error message."""
  steps = [prefix.rsplit("-", 1)[-1] for prefix in kept_checkpoints(checkpoints_dir)]
  return (f"checkpoints kept: steps {', '.join(steps)} (or 'latest')" if steps
          else f"{checkpoints_dir} holds no training checkpoint")
