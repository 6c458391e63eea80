"""build_model: pixels in [0, 255] -> preprocessing -> backbone -> head -> float32 logits."""

from __future__ import annotations

import keras

from engine.models import registry
from engine.models.config import ModelConfig
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
  for layer in model.layers:
    if isinstance(layer, keras.Model):
      yield from leaf_layers(layer)
    else:
      yield layer
