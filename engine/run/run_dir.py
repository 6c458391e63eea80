"""The run directory: the resolved config is written before step 0, and a rerun must match."""

from __future__ import annotations

import json
import logging
import os

from engine.atomic_write import atomic_write_json
from engine.config import ExperimentConfig

# Fields a resumed run may change without becoming a different run. input.augment_on: host
# and device apply the same draws (a run begun on a CPU may go on on a GPU; runs from before
# the field hold its default, auto, where the trainer now writes what auto resolved to).
_RESUMABLE_CHANGES = {"train.epochs", "train.train_steps", "train.log_every", "train.profile_steps",
                      "train.early_stopping_patience", "train.checkpoint_every",
                      "train.keep_checkpoints", "input.tf_data_service", "input.verify_shards",
                      "input.augment_on"}


class RunConfigMismatchError(ValueError):
  """model_dir holds a run made with another configuration; names what differs."""


def _flatten(d: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in d.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      out.update(_flatten(value, f"{name}."))
    else:
      out[name] = value
  return out


def prepare_run_dir(config: ExperimentConfig, chief: bool) -> None:
  """Creates model_dir and writes config.json, or checks it against an existing run.

  Raises:
    RunConfigMismatchError: model_dir holds a run made with a different configuration (resuming it
      with other settings would silently mix two experiments).
  """
  model_dir = config.train.model_dir
  path = os.path.join(model_dir, "config.json")
  payload = json.loads(config.to_json())
  if os.path.exists(path):
    with open(path) as f:
      # Through the config class, so a field added since the run began counts at its default.
      old = _flatten(json.loads(ExperimentConfig.from_dict(json.load(f)).to_json()))
    new = _flatten(payload)
    changed = sorted(k for k in set(old) | set(new)
                     if old.get(k) != new.get(k) and k not in _RESUMABLE_CHANGES)
    if changed:
      details = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:8])
      raise RunConfigMismatchError(f"{path}: this directory holds a run with a different configuration "
                       f"({details}); use a new --model_dir or the original flags")
    logging.info("%s: existing run, resuming", model_dir)
  if chief:
    os.makedirs(model_dir, exist_ok=True)
    atomic_write_json(path, payload)
