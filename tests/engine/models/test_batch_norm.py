import keras
import numpy as np
import pytest
import tensorflow as tf

from engine import precision

from engine.models.batch_norm import FusedBatchNorm, batch_norm_layer

X = np.random.default_rng(0).normal(2.0, 3.0, (8, 5, 5, 6)).astype("float32")
TOLERANCE = {"float32": 1e-5, "mixed_bfloat16": 0.05, "mixed_float16": 5e-3}


@pytest.fixture
def policy(request):
  with precision.policy(request.param):
    yield request.param


def _pair(momentum=0.9):
  stock, fused = keras.layers.BatchNormalization(momentum=momentum), FusedBatchNorm(momentum=momentum)
  stock.build(X.shape)
  fused.build(X.shape)
  rng = np.random.default_rng(1)
  weights = [rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in stock.get_weights()]
  stock.set_weights(weights)
  fused.set_weights(weights)
  return stock, fused


@pytest.mark.parametrize("policy", list(TOLERANCE), indirect=True)
def test_matches_keras_in_training_and_inference(policy):
  stock, fused = _pair()
  for _ in range(3):  # three updates of the moving statistics
    y_stock, y_fused = stock(X, training=True), fused(X, training=True)
  assert y_fused.dtype == y_stock.dtype
  np.testing.assert_allclose(tf.cast(y_fused, tf.float32), tf.cast(y_stock, tf.float32),
                             atol=TOLERANCE[policy] * 10)
  # Moving statistics follow Keras (biased variance), to float32 rounding.
  np.testing.assert_allclose(fused.moving_mean.numpy(), stock.moving_mean.numpy(), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(fused.moving_variance.numpy(), stock.moving_variance.numpy(), rtol=1e-5)
  np.testing.assert_allclose(tf.cast(fused(X, training=False), tf.float32),
                             tf.cast(stock(X, training=False), tf.float32), atol=TOLERANCE[policy] * 10)


def test_moving_average_uses_biased_batch_variance():
  layer = FusedBatchNorm(momentum=0.0)  # moving stats become the last batch's
  layer(X, training=True)
  np.testing.assert_allclose(layer.moving_mean.numpy(), X.mean(axis=(0, 1, 2)), rtol=1e-5)
  np.testing.assert_allclose(layer.moving_variance.numpy(), X.var(axis=(0, 1, 2)), rtol=1e-4)


def test_frozen_layer_runs_in_inference_mode():
  layer = FusedBatchNorm()
  layer.build(X.shape)
  layer.trainable = False
  before = layer.moving_mean.numpy().copy()
  out = layer(X, training=True)
  np.testing.assert_array_equal(layer.moving_mean.numpy(), before)
  np.testing.assert_allclose(out, X / np.sqrt(1 + layer.epsilon), rtol=1e-5)  # mean 0, var 1


def test_rank_two_inputs_and_gradients():
  layer = FusedBatchNorm()
  x = tf.constant(X.reshape(8, -1)[:, :6])
  with tf.GradientTape() as tape:
    tape.watch(x)
    loss = tf.reduce_sum(layer(x, training=True) ** 2 * tf.range(6, dtype=tf.float32))
  grads = tape.gradient(loss, [x] + layer.trainable_weights)
  assert all(g is not None and np.isfinite(g.numpy()).all() for g in grads)


def test_unknown_kind_is_named():
  with pytest.raises(ValueError, match="unknown batch_norm 'batch'; known: fused, keras"):
    batch_norm_layer("batch")
