"""Per-backbone input scaling, in-graph, so exported models take raw pixels in [0, 255]."""

from __future__ import annotations

import keras
import numpy as np

# mode -> (per-channel mean, per-channel std, reverse channels to BGR)
_MODES = {
    "caffe": (np.array([103.939, 116.779, 123.68]), np.array([1.0, 1.0, 1.0]), True),
    "torch": (np.array([0.485, 0.456, 0.406]) * 255, np.array([0.229, 0.224, 0.225]) * 255, False),
    "tf": (np.array([127.5] * 3), np.array([127.5] * 3), False),  # [-1, 1]
    "unit": (np.zeros(3), np.array([255.0] * 3), False),           # [0, 1]
    "raw": (np.zeros(3), np.ones(3), False),                       # the model scales itself
}
MODES = tuple(_MODES)


@keras.saving.register_keras_serializable(package="facetrain")
class Preprocess(keras.layers.Layer):
  """Scales pixels in [0, 255] the way a backbone's ImageNet weights expect."""

  def __init__(self, mode: str, **kwargs):
    super().__init__(**kwargs)
    if mode not in _MODES:
      raise ValueError(f"unknown preprocessing {mode!r}; known: {', '.join(MODES)}")
    self.mode = mode
    mean, std, self._bgr = _MODES[mode]
    self._offset = (-mean / std).astype("float32")
    self._scale = (1.0 / std).astype("float32")

  def call(self, images):
    x = keras.ops.cast(images, self.compute_dtype)
    if self._bgr:
      x = x[..., ::-1]
    return x * keras.ops.cast(self._scale, x.dtype) + keras.ops.cast(self._offset, x.dtype)

  def get_config(self):
    return {**super().get_config(), "mode": self.mode}
