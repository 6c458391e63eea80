"""The backbone and head registries and what each entry declares about itself."""

from __future__ import annotations

import dataclasses
from typing import Callable

import keras

from engine.registry import Registry


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
  """A registered backbone.

  Attributes:
    name: registry name.
    build: (input_shape, batch_norm kind) -> keras.Model mapping preprocessed images to
      the last feature map (include_top=False, no pooling).
    default_image_size: (height, width) the architecture was designed for.
    preprocessing: how pixels in [0, 255] are scaled (see preprocessing.py).
    imagenet_weights: whether Keras publishes ImageNet weights for it.
    keras_weights_file: the file name Keras caches those weights under.
    min_image_size: the smallest input its downsampling allows.
  """

  name: str
  build: Callable[[tuple[int, int, int], str], keras.Model]
  default_image_size: tuple[int, int]
  preprocessing: str
  imagenet_weights: bool = False
  keras_weights_file: str | None = None
  min_image_size: int = 32


BACKBONES: Registry[BackboneSpec] = Registry("backbone")
HEADS: Registry[Callable] = Registry("head")


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
  return BACKBONES.add(spec.name, spec)
