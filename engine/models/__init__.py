"""Backbone and head zoo: `build_model(engine.config.ModelConfig(...))`; registries list what exists."""

from engine.models import applications, googlenet, heads, resnet, vgg  # noqa: F401  (registration)
from engine.models.builder import build_model
from engine.models.registry import BACKBONES, HEADS, BackboneSpec

__all__ = ["BACKBONES", "HEADS", "BackboneSpec", "build_model"]
