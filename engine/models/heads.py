"""Classification heads: the three the seeds used. The output layer is float32."""

from __future__ import annotations

import keras

from engine.models.registry import HEADS


def _output(x, num_outputs: int):
  # float32 logits under mixed precision: the loss and its gradients need the range.
  return keras.layers.Dense(num_outputs, dtype="float32", name="logits")(x)


@HEADS.register("linear")
def linear_head(features, num_outputs: int, dropout: float = 0.0):
  """Global average pooling + one Dense (seed ResNet50 "model 1")."""
  x = keras.layers.GlobalAveragePooling2D(name="gap")(features)
  if dropout:
    x = keras.layers.Dropout(dropout, name="dropout")(x)
  return _output(x, num_outputs)


@HEADS.register("deep")
def deep_head(features, num_outputs: int, dropout: float = 0.0, widths=(1024, 512, 256, 128)):
  """GAP + Dense layers narrowing gradually with ReLU (seed "model 2")."""
  x = keras.layers.GlobalAveragePooling2D(name="gap")(features)
  for i, width in enumerate(widths):
    x = keras.layers.Dense(width, activation="relu", name=f"dense{i + 1}")(x)
    if dropout:
      x = keras.layers.Dropout(dropout, name=f"dropout{i + 1}")(x)
  return _output(x, num_outputs)


@HEADS.register("mlp")
def mlp_head(features, num_outputs: int, dropout: float = 0.5):
  """GAP + Dropout + Dense(128) + Dropout + Dense(64) + output (seed with callbacks)."""
  rate = dropout or 0.5
  x = keras.layers.GlobalAveragePooling2D(name="gap")(features)
  x = keras.layers.Dropout(rate, name="dropout1")(x)
  x = keras.layers.Dense(128, activation="relu", name="dense1")(x)
  x = keras.layers.Dropout(rate, name="dropout2")(x)
  x = keras.layers.Dense(64, activation="relu", name="dense2")(x)
  return _output(x, num_outputs)
