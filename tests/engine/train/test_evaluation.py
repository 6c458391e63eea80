"""predict_padded: the one eval loop shared by training-time validation and launch.evaluate."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from engine.eval.inference import make_predict_fn, predict_padded


def _column_model():
  """Logit = mean of the left half minus the right half: mirroring negates it."""
  inputs = keras.Input((4, 6, 3))
  x = keras.layers.Lambda(lambda t: tf.reduce_mean(t[:, :, :3], [1, 2, 3])
                          - tf.reduce_mean(t[:, :, 3:], [1, 2, 3]))(inputs)
  return keras.Model(inputs, keras.layers.Reshape((1,))(x))


def _batches(masks):
  images = tf.random.stateless_uniform([len(masks) * 3, 4, 6, 3], [1, 2], 0, 255)
  labels = tf.range(len(masks) * 3)
  return tf.data.Dataset.from_tensor_slices(
      (images, labels, tf.constant(np.concatenate(masks), tf.float32))).batch(3), images


def test_drops_padding_keeps_order_and_keeps_first_images():
  dataset, images = _batches([[1, 1, 1], [1, 0, 0]])
  result = predict_padded(make_predict_fn(_column_model(), flip_tta=False), dataset, 2)
  np.testing.assert_array_equal(result.labels, [0, 1, 2, 3])
  assert result.logits.shape == (4, 1) and result.logits.dtype == np.float32
  np.testing.assert_array_equal(result.first_images, images.numpy()[:2])


def test_flip_tta_averages_the_mirror_image():
  dataset, _ = _batches([[1, 1, 1]])
  plain = predict_padded(make_predict_fn(_column_model(), flip_tta=False), dataset)
  tta = predict_padded(make_predict_fn(_column_model(), flip_tta=True), dataset)
  assert np.abs(plain.logits).max() > 0.1
  np.testing.assert_allclose(tta.logits, 0.0, atol=1e-4)  # x and -x average to 0


def test_padding_between_real_examples_is_refused():
  dataset, _ = _batches([[1, 0, 1]])
  with pytest.raises(RuntimeError, match="padding only at the end"):
    predict_padded(make_predict_fn(_column_model(), flip_tta=False), dataset)
