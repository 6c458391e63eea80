"""What the zoo holds: per backbone, its size, parameters, FLOPs and weights."""

from __future__ import annotations

import numpy as np

from engine.models.builder import build_model
from engine.config import ModelConfig
from engine.models.flops import count_flops
from engine.models.registry import BACKBONES, HEADS


def _count(weights) -> int:
  return int(sum(np.prod(w.shape) for w in weights))


def describe_backbone(name: str, image_size: tuple[int, int] | None = None) -> dict:
  """Builds `name` (linear head, 1 output) and reports what a user compares."""
  spec = BACKBONES.get(name)
  size = tuple(image_size or spec.default_image_size)
  model = build_model(ModelConfig(name, "linear", image_size=size))
  backbone = model.layers[2]
  imagenet_params = None
  if spec.imagenet_weights:
    # The published layout (what the weight file holds), without loading the file: it
    # keeps the conv biases in front of batch norm that from-scratch builds drop.
    imagenet_params = _count(spec.build((*size, 3), "keras").trainable_weights)
  return {
      "backbone": name,
      "image_size": list(size),
      "default_image_size": list(spec.default_image_size),
      "trainable_params": _count(backbone.trainable_weights),
      "imagenet_trainable_params": imagenet_params,
      "total_params": _count(backbone.weights),
      "gflops": round(count_flops(model) / 1e9, 3),
      "preprocessing": spec.preprocessing,
      "imagenet_weights": spec.imagenet_weights,
      "keras_weights_file": spec.keras_weights_file,
  }


def describe_zoo(names: list[str] | None = None,
                 image_size: tuple[int, int] | None = None) -> dict:
  return {"backbones": [describe_backbone(n, image_size) for n in (names or BACKBONES.names())],
          "heads": HEADS.names()}
