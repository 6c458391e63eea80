"""Fine-tuning policies: which backbone variables train.

- scratch / full: everything trains (scratch starts from random init).
- frozen: the backbone is not trainable; its BN layers run in inference mode (Keras'
  `trainable=False` semantics, which FusedBatchNorm keeps).
- last_n: the last N backbone layers train, except batch norms, which stay frozen so
  their ImageNet statistics are not disturbed by small fine-tuning batches.
The head always trains.
"""

from __future__ import annotations

import keras

from engine.models.batch_norm import FusedBatchNorm


def _is_batch_norm(layer) -> bool:
  return isinstance(layer, (keras.layers.BatchNormalization, FusedBatchNorm))


def apply_finetune(backbone: keras.Model, policy: str, last_n: int = 20) -> None:
  """Sets `trainable` on the backbone's layers in place."""
  if policy in ("scratch", "full"):
    backbone.trainable = True
    return
  if policy == "frozen":
    backbone.trainable = False
    return
  if policy != "last_n":
    raise ValueError(f"unknown finetune policy {policy!r}; known: frozen, last_n, full, scratch")
  if last_n < 1:
    raise ValueError(f"finetune_last_n must be >= 1, got {last_n}")
  backbone.trainable = True
  layers = backbone.layers
  for index, layer in enumerate(layers):
    layer.trainable = index >= len(layers) - last_n and not _is_batch_norm(layer)
