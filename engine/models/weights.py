"""Where weights come from: Keras' ImageNet files (offline) or our own saved weights."""

from __future__ import annotations

import os

import keras

from engine.models.registry import BACKBONES, BackboneSpec


def keras_cache_dir() -> str:
  """Keras' download cache: $KERAS_HOME/models, default ~/.keras/models."""
  return os.path.join(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")), "models")


def find_imagenet_weights(spec: BackboneSpec, weights_path: str | None) -> str:
  """Returns a local ImageNet weights file for `spec`, or raises saying where to put one.

  No network: this machine (and many training clusters) cannot download, so the file
  must be given with `weights_path` or already sit in the Keras cache.
  """
  if not spec.imagenet_weights:
    with_weights = [n for n in BACKBONES.names() if BACKBONES.get(n).imagenet_weights]
    raise ValueError(f"Keras publishes no ImageNet weights for {spec.name}; backbones with "
                     f"weights: {', '.join(with_weights)} (or train with --finetune=scratch)")
  if weights_path:
    if not os.path.exists(weights_path):
      raise FileNotFoundError(f"{weights_path}: ImageNet weights file not found")
    return weights_path
  cached = os.path.join(keras_cache_dir(), spec.keras_weights_file)
  if os.path.exists(cached):
    return cached
  raise FileNotFoundError(
      f"ImageNet weights for {spec.name} are not available offline: put Keras' file "
      f"{spec.keras_weights_file!r} (the include_top=False file keras.applications downloads) "
      f"at {cached}, or pass --weights_path=FILE")


def load_our_weights(model: keras.Model, path: str) -> None:
  """Loads weights we saved (`.weights.h5`, or a whole `.keras` model's weights)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: weights file not found")
  if path.endswith(".keras"):
    model.set_weights(keras.saving.load_model(path, compile=False).get_weights())
  elif path.endswith(".weights.h5"):
    model.load_weights(path)
  else:
    raise ValueError(f"{path}: expected a .weights.h5 or .keras file")
