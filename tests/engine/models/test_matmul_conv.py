import keras
import numpy as np
import pytest
import tensorflow as tf

from engine.models import matmul_conv
from engine.models.applications import swap_batch_norm
from engine.models.batch_norm import FusedBatchNorm
from engine.models.matmul_conv import (
    MatmulGradConv2D, conv2d_matmul_weight_grad, log_weight_grad_choice, uses_matmul_weight_grad,
    weight_grads)

# Worst |difference| / max |TensorFlow's gradient|. float32: both sum the same products in
# another order (1e-5 is ~100 ulps of the largest entry). bfloat16: both accumulate in
# float32 inside oneDNN but round their bf16 output (8-bit mantissa: 2^-8 = 0.4%), so the
# two may differ by one bf16 ulp of the largest entry, and more on small ones.
TOLERANCE = {"float32": 1e-5, "bfloat16": 1e-2}

# (input NHWC, kernel HW, stride, padding): 1x1 and kxk, stride 1/2, odd and even sizes.
SHAPES = [((2, 8, 8, 5), (1, 1), 1, "same"), ((2, 9, 7, 5), (1, 1), 2, "same"),
          ((2, 8, 8, 5), (3, 3), 1, "same"), ((2, 9, 8, 4), (3, 3), 2, "same"),
          ((2, 11, 11, 3), (7, 7), 2, "same"), ((2, 8, 9, 4), (3, 3), 1, "valid"),
          ((2, 8, 8, 4), (1, 1), 2, "valid"), ((2, 10, 10, 4), (3, 3), 2, "valid")]


def _grads(fn, x, kernel):
  with tf.GradientTape() as tape:
    tape.watch([x, kernel])
    y = fn(x, kernel)
    # A random upstream gradient, so a misplaced row or column shows.
    upstream = tf.random.stateless_normal(tf.shape(y), [5, 6])
    loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
  return tape.gradient(loss, [x, kernel])


@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("shape,kernel_hw,stride,padding", SHAPES)
def test_gradients_equal_tensorflows(shape, kernel_hw, stride, padding, dtype):
  rng = np.random.default_rng(0)
  x = tf.cast(rng.normal(size=shape), dtype)
  kernel = tf.cast(rng.normal(size=(*kernel_hw, shape[-1], 6)), dtype)
  strides = [1, stride, stride, 1]
  stock = _grads(lambda a, w: tf.nn.conv2d(a, w, strides, padding.upper()), x, kernel)
  ours = _grads(lambda a, w: conv2d_matmul_weight_grad(a, w, (stride, stride), padding), x, kernel)
  for got, want in zip(ours, stock):
    assert got.dtype == want.dtype and got.shape == want.shape
    got, want = tf.cast(got, tf.float64).numpy(), tf.cast(want, tf.float64).numpy()
    assert np.max(np.abs(got - want)) <= TOLERANCE[dtype] * np.max(np.abs(want))


def _tiny_model(mode):
  with weight_grads(mode):
    inputs = keras.Input((12, 12, 3))
    x = MatmulGradConv2D(8, 3, strides=2, padding="same", use_bias=False, name="c1")(inputs)
    x = FusedBatchNorm(name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = MatmulGradConv2D(4, 1, name="c2")(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
  model.set_weights([np.random.default_rng(i).normal(size=w.shape).astype("float32")
                     for i, w in enumerate(model.get_weights())])
  return model


@pytest.mark.parametrize("jit_compile", [False, True])
def test_layer_gradients_equal_stock_layer_and_compile_with_xla(jit_compile):
  images = tf.constant(np.random.default_rng(1).normal(size=(4, 12, 12, 3)), tf.float32)
  grads = {}
  for mode in ("stock", "matmul"):
    model = _tiny_model(mode)
    assert [l.matmul_weight_grad for l in model.layers if hasattr(l, "matmul_weight_grad")] == \
        [mode == "matmul"] * 2

    @tf.function(jit_compile=jit_compile)
    def step():
      with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(images, training=True) ** 2)
      return tape.gradient(loss, model.trainable_variables)

    grads[mode] = step()
  for got, want in zip(grads["matmul"], grads["stock"]):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.max(np.abs(want)))


def test_rule_and_device_choice(monkeypatch):
  conv = {"strides": (1, 1), "dilation_rate": (1, 1), "groups": 1}
  assert uses_matmul_weight_grad((1, 1), output_hw=(64, 64), mode="matmul", **conv)
  assert uses_matmul_weight_grad((3, 3), output_hw=(4, 4), mode="matmul", **conv)
  area = matmul_conv.MAX_IM2COL_OUTPUT_AREA
  assert not uses_matmul_weight_grad((3, 3), output_hw=(1, area + 1), mode="matmul", **conv)
  assert not uses_matmul_weight_grad((1, 1), output_hw=(4, 4), mode="stock", **conv)
  assert not uses_matmul_weight_grad((1, 1), (1, 1), (2, 2), 1, (4, 4), mode="matmul")
  for flags, expected in (({"avx2", "amx_bf16"}, True), ({"avx2", "avx512f"}, False)):
    monkeypatch.setattr(matmul_conv, "cpu_flags", lambda f=flags: f)
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
    matmul_conv.device_prefers_matmul.cache_clear()
    assert matmul_conv.device_prefers_matmul()[0] is expected
    assert uses_matmul_weight_grad((1, 1), output_hw=(4, 4), mode="auto", **conv) is expected
  monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["GPU:0"])
  matmul_conv.device_prefers_matmul.cache_clear()
  assert matmul_conv.device_prefers_matmul() == (False, "a GPU is visible: cuDNN/XLA weight gradients")
  monkeypatch.undo()
  matmul_conv.device_prefers_matmul.cache_clear()
  with pytest.raises(ValueError, match="known: auto, matmul, stock"):
    with weight_grads("fast"):
      pass


def test_choice_is_logged(caplog):
  caplog.set_level("INFO")
  assert log_weight_grad_choice(_tiny_model("matmul")) == (2, 2)
  assert "2 of 2 convs by matmul" in caplog.text


def test_swap_drops_only_biases_that_batch_norm_cancels():
  inputs = keras.Input((8, 8, 3))
  x = keras.layers.Conv2D(4, 3, name="before_bn")(inputs)
  x = keras.layers.BatchNormalization(name="bn")(x)
  x = keras.layers.Conv2D(2, 1, name="before_relu", activation="relu")(x)
  model = keras.Model(inputs, x)
  for drop, before_bn_bias in ((True, False), (False, True)):
    swapped = swap_batch_norm(model, drop_conv_bias=drop)
    layers = {l.name: l for l in swapped.layers}
    assert isinstance(layers["before_bn"], MatmulGradConv2D)
    assert layers["before_bn"].use_bias is before_bn_bias
    assert layers["before_relu"].use_bias
    np.testing.assert_array_equal(layers["before_bn"].kernel, model.get_layer("before_bn").kernel)
    np.testing.assert_array_equal(layers["before_relu"].bias, model.get_layer("before_relu").bias)


@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("chunks", [2, 4])
def test_reduction_split_in_chunks_equals_tensorflows_gradient(dtype, chunks):
  rng = np.random.default_rng(2)
  x = tf.cast(rng.normal(size=(4, 8, 8, 16)), dtype)
  grad_output = tf.cast(rng.normal(size=(4, 4, 4, 32)), dtype)
  want = tf.raw_ops.Conv2DBackpropFilter(input=x, filter_sizes=[3, 3, 16, 32],
                                         out_backprop=grad_output, strides=[1, 2, 2, 1],
                                         padding="SAME")
  got = matmul_conv.matmul_weight_grad(x, grad_output, (3, 3, 16, 32), (2, 2), "same", chunks)
  assert got.dtype == want.dtype
  got, want = tf.cast(got, tf.float64).numpy(), tf.cast(want, tf.float64).numpy()
  assert np.max(np.abs(got - want)) <= TOLERANCE[dtype] * np.max(np.abs(want))
