"""build_model: pixels in [0, 255] -> preprocessing -> backbone -> head -> float32 logits."""

from __future__ import annotations

import re

import keras

from engine.models import registry
from engine.config import ModelConfig
from engine.models.finetune import apply_finetune
from engine.models.preprocessing import Preprocess
from engine.models.weights import find_imagenet_weights, load_our_weights


def build_model(config: ModelConfig) -> keras.Model:
  """Builds the configured model under the current Keras dtype policy."""
  config.validate()
  spec = registry.BACKBONES.get(config.backbone)
  head = registry.HEADS.get(config.head)
  if min(config.image_size) < spec.min_image_size:
    raise ValueError(f"{config.backbone} needs images of at least {spec.min_image_size} px, "
                     f"got {config.image_size}")
  inputs = keras.Input((*config.image_size, 3), name="pixels")
  x = Preprocess(spec.preprocessing, name="preprocess")(inputs)
  shape = (*config.image_size, 3)
  if config.weights == "imagenet":
    backbone = spec.build(shape, config.batch_norm,
                          weights=find_imagenet_weights(spec, config.weights_path))
  else:
    backbone = spec.build(shape, config.batch_norm)
  apply_finetune(backbone, config.finetune, config.finetune_last_n)
  features = backbone(x)
  outputs = head(features, config.num_outputs, config.dropout)
  model = keras.Model(inputs, outputs, name=f"{config.backbone}_{config.head}")
  if config.bn_momentum:
    for layer in leaf_layers(model):
      if isinstance(layer, keras.layers.BatchNormalization):
        layer.momentum = config.bn_momentum
  if config.weights not in ("none", "", "imagenet"):
    load_our_weights(model, config.weights)
  return model


def leaf_layers(model: keras.Model):
  """Every layer of the model, descending into nested models (a backbone inside the model)."""
  for _, layer in _walk(model, ()):
    yield layer


def variables_by_name(model: keras.Model) -> dict[str, keras.Variable]:
  """Every variable of `model` (weights, batch-norm statistics, RNG states) under a name that
  is the same in every process that builds the same configuration.

  The name is the layer path through nested models plus the variable's own name, e.g.
  `resnet18/stage1_block1_1_conv/kernel`. Layers built without a name get Keras' counter
  names (`conv2d_406`), which depend on what the process built before; those are replaced
  by their order among the same kind in their model (`conv2d#0`), so a checkpoint written
  by the trainer reads back by name in a fresh process.

  Raises:
    RuntimeError: two variables map to one name, or a model variable is owned by no layer
      (either would make restoring by name ambiguous).
  """
  named = {}
  for path, layer in _walk(model, ()):
    for variable in layer.variables:
      own = variable.path
      own = own[len(layer.name) + 1:] if own.startswith(layer.name + "/") else variable.name
      key = "/".join((*path, own))
      if key in named and named[key] is not variable:
        raise RuntimeError(f"{model.name}: two variables are both named {key!r}")
      named[key] = variable
  owned = {id(v) for v in named.values()}
  orphans = [v.path for v in model.variables if id(v) not in owned]
  if orphans:
    raise RuntimeError(f"{model.name}: variables outside any layer: {orphans[:5]}")
  return named


def _walk(model: keras.Model, prefix: tuple[str, ...]):
  """(path of names, leaf layer) for every layer under `model`, nested models expanded."""
  for name, layer in zip(_stable_names(model.layers), model.layers):
    if isinstance(layer, keras.Model):
      yield from _walk(layer, (*prefix, name))
    else:
      yield (*prefix, name), layer


def _stable_names(layers) -> list[str]:
  """Layer names, with Keras' process-wide counter names replaced by a per-model ordinal."""
  seen: dict[str, int] = {}
  names = []
  for layer in layers:
    base = re.sub(r"_\d+$", "", layer.name)
    # A clone keeps the name Keras gave the original class (FusedBatchNorm from
    # BatchNormalization), so any class in the layer's ancestry counts.
    if base in {_snake_case(cls.__name__) for cls in type(layer).__mro__}:
      names.append(f"{base}#{seen.get(base, 0)}")
      seen[base] = seen.get(base, 0) + 1
    else:
      names.append(layer.name)
  return names


def _snake_case(class_name: str) -> str:
  """Keras' automatic layer-name prefix for a class (Conv2D -> conv2d)."""
  name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", class_name)
  return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()
