"""Loading a trained model back from its run directory (evaluation, prediction, export).

A restore is exact or it fails: every variable of the rebuilt model is read from the
checkpoint by name, and a variable the checkpoint lacks, one it has that the model does
not, or a shape that differs is an error naming it. Nothing is left at its random
initial value without saying so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re

import h5py
import keras
import numpy as np
import tensorflow as tf

from engine import precision
from engine.models import build_model
from engine.models.builder import variables_by_name
from engine.models.matmul_conv import MatmulGradConv2D
from engine.run.checkpoint import EMA_KEY, MODEL_KEY
from engine.run.locate import read_config, resolve_checkpoint  # noqa: F401 (callers' import)
from engine.config import ExperimentConfig

_VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
_NAMED = "/by_name/"   # NamedVariables' attribute in the checkpoint's object graph
_LEGACY = "/items/"    # checkpoints written before variables were saved by name
_LISTED = 5            # names listed in a mismatch message


class CheckpointMismatchError(ValueError):
  """The checkpoint does not hold exactly the variables of the run's model."""


@dataclasses.dataclass(frozen=True)
class CheckpointSource:
  """Which weights a restored model holds.

  Attributes:
    path: the `.weights.h5` file or tf.train checkpoint prefix that was read.
    step: the training step those weights are from; None for a weights file from elsewhere.
    ema: True when the moving averages replaced the trained weights (runs with ema_decay).
  """

  path: str
  step: int | None
  ema: bool


def load_model(model_dir: str, checkpoint: str = "best"
               ) -> tuple[keras.Model, ExperimentConfig, CheckpointSource]:
  """Rebuilds the run's model in float32 and loads exactly the weights that were saved.

  Args:
    model_dir: a directory written by the trainer.
    checkpoint: "best" (best/model.weights.h5, EMA weights when the run kept them),
      "latest" (the newest training checkpoint), a step number ("1200": checkpoints/ckpt-1200),
      a tf.train checkpoint prefix, or a path to a .weights.h5 file.

  Raises:
    FileNotFoundError: no such checkpoint (the message says which exist).
    CheckpointMismatchError: the checkpoint is of another model; names what differs.
  """
  config = read_config(model_dir)
  with precision.policy("float32"):  # the reference precision, whatever the run trained in
    model = build_model(dataclasses.replace(config.model, weights="none", weights_path=None,
                                            finetune="scratch"))
  kind, path = resolve_checkpoint(model_dir, checkpoint)
  if kind == "h5":
    _load_weights_file(model, path)
    source = CheckpointSource(path, _best_step(model_dir, path), config.train.ema_decay > 0)
  else:
    step, ema = _restore_by_name(model, path)
    source = CheckpointSource(path, step, ema)
  return model, config, source


def is_best_weights(model_dir: str, path: str) -> bool:
  """Whether `path` is the run's own best weights (in model_dir/best/), which the trainer
  chose by its monitor on its evaluation split."""
  return os.path.dirname(os.path.abspath(path)) == os.path.abspath(os.path.join(model_dir, "best"))


def _best_step(model_dir: str, path: str) -> int | None:
  """The step of the run's own best weights (best/metrics.json); None for other files."""
  metrics_path = os.path.join(model_dir, "best", "metrics.json")
  if not is_best_weights(model_dir, path) or not os.path.exists(metrics_path):
    return None
  with open(metrics_path) as f:
    return int(json.load(f)["step"])


def _load_weights_file(model: keras.Model, path: str) -> None:
  """model.load_weights, plus the check Keras leaves out: the file holds no extra weights.

  Keras files a layer's weights under its class name in snake case, counted per class in
  layer order ("conv2d_3"). Runs saved before the conv layers became `MatmulGradConv2D`
  (same variables and config) hold "conv2d_N" where the model now has
  "matmul_grad_conv2d_N"; such a file is read with the conv layers filed as `Conv2D`,
  which gives back exactly the names, and order, they were saved under.
  """
  with h5py.File(path, "r") as f:
    saved = []
    f.visititems(lambda name, obj: saved.append(name) if isinstance(obj, h5py.Dataset)
                 and name.split("/")[-2] == "vars" else None)
  if len(saved) != len(model.weights):
    raise CheckpointMismatchError(
        f"{path}: holds {len(saved)} weights, the model ({model.name}) has {len(model.weights)}; "
        "it was saved from another backbone or head")
  filed_as_conv2d = not any(
      part.startswith("matmul_grad_conv2d") for name in saved for part in name.split("/"))
  try:
    with _filed_as_conv2d() if filed_as_conv2d else contextlib.nullcontext():
      model.load_weights(path)
  except ValueError as e:
    raise CheckpointMismatchError(f"{path}: does not fit {model.name}: {e}") from None


@contextlib.contextmanager
def _filed_as_conv2d():
  """Keras' weights file names `MatmulGradConv2D` layers as `Conv2D` ones inside."""
  name = MatmulGradConv2D.__name__
  MatmulGradConv2D.__name__ = keras.layers.Conv2D.__name__
  try:
    yield
  finally:
    MatmulGradConv2D.__name__ = name


def _restore_by_name(model: keras.Model, prefix: str) -> tuple[int | None, bool]:
  """Assigns every model variable from the checkpoint; EMA averages replace the trainable
  weights when the checkpoint holds them. Returns (step, whether EMA was used)."""
  reader = tf.train.load_checkpoint(prefix)
  shapes = reader.get_variable_to_shape_map()
  expected = variables_by_name(model)
  if any(k.startswith(MODEL_KEY + _LEGACY) for k in shapes):
    values, ema = _legacy_values(model, reader, shapes)
  else:
    values = _named_values(reader, shapes, MODEL_KEY, expected, prefix)
    trainable_ids = {id(v) for v in model.trainable_variables}
    trainable = {name: v for name, v in expected.items() if id(v) in trainable_ids}
    ema = any(k.startswith(EMA_KEY + _NAMED) for k in shapes)
    if ema:
      values.update(_named_values(reader, shapes, EMA_KEY, trainable, prefix))
  for name, variable in expected.items():
    value = values[name]
    if tuple(value.shape) != tuple(variable.shape):
      raise CheckpointMismatchError(f"{prefix}: {name} has shape {tuple(value.shape)} in the "
                                    f"checkpoint, {tuple(variable.shape)} in the model")
    variable.assign(value.astype(variable.dtype))
  step_key = "step" + _VALUE_SUFFIX
  step = int(reader.get_tensor(step_key)) if step_key in shapes else None
  return step, ema


def _named_values(reader, shapes: dict, key: str, expected: dict, prefix: str) -> dict:
  """{variable name: saved value} for the NamedVariables saved under `key`; every expected
  name present and no other."""
  start = key + _NAMED
  saved = {_unescape(k[len(start):-len(_VALUE_SUFFIX)]): k for k in shapes
           if k.startswith(start) and k.endswith(_VALUE_SUFFIX)}
  missing = sorted(set(expected) - set(saved))
  extra = sorted(set(saved) - set(expected))
  if missing or extra:
    parts = []
    if missing:
      parts.append(f"{len(missing)} model variables missing from it ({', '.join(missing[:_LISTED])})")
    if extra:
      parts.append(f"{len(extra)} variables the model does not have ({', '.join(extra[:_LISTED])})")
    hint = "Was it written by another backbone or head?"
    if extra and all(name.endswith("_conv/bias") for name in extra) and not missing:
      hint = ("From-scratch keras.applications ResNets have had no conv bias in front of batch "
              "norm since issue 17; this checkpoint was written before, by a build with them "
              "(an ImageNet-weights run keeps them; a from-scratch run of an older facetrain "
              "can still read it).")
    raise CheckpointMismatchError(f"{prefix}: the {key} variables do not match the model: "
                                  f"{'; '.join(parts)}. {hint}")
  return {name: np.asarray(reader.get_tensor(k)) for name, k in saved.items()}


def _legacy_values(model: keras.Model, reader, shapes: dict) -> tuple[dict, bool]:
  """Checkpoints from before names: model.variables and the EMA of the trainable weights,
  each a list in the trainer's order. Read by position, with the count checked."""
  def items(key: str, count: int) -> list[np.ndarray]:
    found = sorted((int(k.split("/")[2]), k) for k in shapes
                   if k.startswith(key + _LEGACY) and k.endswith(_VALUE_SUFFIX))
    if [i for i, _ in found] != list(range(count)):
      raise CheckpointMismatchError(f"checkpoint holds {len(found)} {key} variables, the model "
                                    f"has {count}; was it written by another backbone or head?")
    return [np.asarray(reader.get_tensor(k)) for _, k in found]

  name_of = {id(v): name for name, v in variables_by_name(model).items()}
  values = {name_of[id(v)]: value
            for v, value in zip(model.variables, items(MODEL_KEY, len(model.variables)))}
  ema = any(k.startswith(EMA_KEY + _LEGACY) for k in shapes)
  if ema:
    trainable = model.trainable_variables
    values.update({name_of[id(v)]: value
                   for v, value in zip(trainable, items(EMA_KEY, len(trainable)))})
  return values, ema


def _unescape(name: str) -> str:
  """Undoes the checkpoint's escaping of object names ('/' -> '.S', '.' -> '..')."""
  return re.sub(r"\.(.)", lambda m: {"S": "/", ".": "."}[m.group(1)], name)
