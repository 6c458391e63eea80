"""Loading a trained model back from its run directory (evaluation, prediction, export)."""

from __future__ import annotations

import json
import os

import keras
import tensorflow as tf

from engine.models import build_model
from engine.train.config import ExperimentConfig


def read_config(model_dir: str) -> ExperimentConfig:
  path = os.path.join(model_dir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: missing; is {model_dir} a training run directory?")
  with open(path) as f:
    return ExperimentConfig.from_dict(json.load(f))


def load_model(model_dir: str, checkpoint: str = "best") -> tuple[keras.Model, ExperimentConfig]:
  """Rebuilds the run's model in float32 and loads its weights.

  Args:
    model_dir: a directory written by the trainer.
    checkpoint: "best" (best/model.weights.h5), "latest" (the newest training checkpoint,
      EMA weights when the run kept them), or a path to a .weights.h5 file or a
      tf.train checkpoint prefix.
  """
  config = read_config(model_dir)
  keras.config.set_dtype_policy("float32")
  model = build_model(config.model.__class__(
      **{**config.model.__dict__, "weights": "none", "weights_path": None,
         "finetune": "scratch"}))
  if checkpoint == "best":
    path = os.path.join(model_dir, "best", "model.weights.h5")
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path}: no best checkpoint yet (it is written after the first "
                              "evaluation); use checkpoint='latest'")
    model.load_weights(path)
  elif checkpoint.endswith(".weights.h5"):
    model.load_weights(checkpoint)
  else:
    prefix = (tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
              if checkpoint == "latest" else checkpoint)
    if not prefix:
      raise FileNotFoundError(f"{model_dir}/checkpoints: no checkpoint found")
    _restore_model_variables(model, prefix)
  return model, config


def _restore_model_variables(model: keras.Model, prefix: str) -> None:
  """Reads the model (or its EMA shadow, when saved) out of a training checkpoint."""
  names = {name for name, _ in tf.train.list_variables(prefix)}
  key = "ema" if any(n.startswith("ema/") for n in names) else "model"
  tf.train.Checkpoint(**{key: _VariableList(model.weights)}).read(prefix).expect_partial()


class _VariableList(tf.Module):
  """The model's weights as a trackable list, the same shape the trainer saves."""

  def __init__(self, variables):
    super().__init__()
    self.variables_list = list(variables)
