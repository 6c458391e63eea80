"""build_model: pixels in [0, 255] -> preprocessing -> backbone -> head -> float32 logits."""

from __future__ import annotations

import keras

from engine.models import registry
from engine.models.config import ModelConfig
from engine.models.preprocessing import Preprocess


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
  backbone = spec.build((*config.image_size, 3), config.batch_norm)
  features = backbone(x)
  outputs = head(features, config.num_outputs, config.dropout)
  return keras.Model(inputs, outputs, name=f"{config.backbone}_{config.head}")
