"""Running a model over evaluation batches: one compiled predict function, every example once.

Shared by validation during training (engine.train.evaluation), `launch.evaluate` and the
benchmarks, so all of them count the same examples the same way.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Predictions:
  logits: np.ndarray         # float32 [N, ...], file order, padding dropped
  labels: np.ndarray         # [N, ...]
  first_images: np.ndarray   # the first few real images, for TensorBoard


def make_predict_fn(model, flip_tta: bool):
  """A compiled images -> float32 logits; `flip_tta` averages each image's logits with its
  mirror image's (one vector per example; probabilities agree closely with averaging
  probabilities). `model` may be a list of models taking the same input (an ensemble):
  their logits are averaged the same way. Build it once: every new tf.function traces the
  model again."""
  models = list(model) if isinstance(model, (list, tuple)) else [model]

  @tf.function
  def predict(images):
    views = [images, tf.reverse(images, axis=[2])] if flip_tta else [images]
    logits = [tf.cast(member(view, training=False), tf.float32)
              for member in models for view in views]
    return tf.add_n(logits) / len(logits)

  return predict


def predict_padded(predict, dataset: tf.data.Dataset, keep_images: int = 0) -> Predictions:
  """Runs `predict` (make_predict_fn) over eval batches `(images, labels, mask)`.

  Used by validation during training and by `launch.evaluate`, so both count the same
  examples the same way: padding dropped, file order kept.

  Raises:
    RuntimeError: padding between real examples (the eval pipeline pads only at the end).
  """
  logits, labels, masks, first = [], [], [], None
  for images, batch_labels, mask in dataset:
    logits.append(predict(images).numpy())
    labels.append(batch_labels.numpy())
    masks.append(mask.numpy())
    if first is None:
      first = images.numpy()[mask.numpy() > 0][:keep_images]
  if not masks:
    raise RuntimeError("the evaluation split yielded no example (every record was skipped "
                       "as unreadable, or the split is empty)")
  real = np.concatenate(masks) > 0
  if not real[:real.sum()].all():
    raise RuntimeError("eval padding is interleaved with real examples; the pipeline broke "
                       "its contract (padding only at the end)")
  return Predictions(np.concatenate(logits)[real], np.concatenate(labels)[real], first)
