"""Conv2D whose weight gradient is one matmul on CPUs with native bf16 (AMX, AVX512_BF16).

Issue 17's profile (a 2-core Xeon with AMX): oneDNN ran a bf16 convolution forward at ~870
GFLOP/s but its weight gradient (`Conv2DBackpropFilter`) at ~170 (1x1 layers 81-148), 30%
of a ResNet50 step. The same gradient written as a matmul runs at matmul speed:

  dW[kh, kw, cin, cout] = sum over (n, y, x) of patch[n, y, x, (kh, kw, cin)] * dY[n, y, x, cout]

where for a 1x1 kernel the patch is the (stride-subsampled) input itself, and for a kxk
kernel the k*k shifted, strided slices of the padded input concatenated on channels
(im2col). The input gradient stays TensorFlow's own `Conv2DBackpropInput`.

The matmul costs the im2col copy, which grows with the output's spatial size; which layers
gain was measured per layer shape (benchmarks/conv_weight_grads.py) on the machine this
was built on (which reports an AMD EPYC with AVX512_BF16 and no AMX) and is encoded in
`uses_matmul_weight_grad`. Where the CPU has neither AMX nor AVX512_BF16, or a GPU is
visible (cuDNN's weight gradient is fast, and XLA fuses its own), every layer keeps the
stock gradient. The choice is made when the layer is built, under `weight_grads(mode)`
(auto | matmul | stock), and logged per model by `log_weight_grad_choice`.
"""

from __future__ import annotations

import contextlib
import functools
import logging

import keras
import tensorflow as tf

from engine.monitor.machine import cpu_flags

MODES = ("auto", "matmul", "stock")
_AMX_FLAGS = ("amx_bf16", "avx512_bf16")
# Largest output area (H*W) at which a kxk (k > 1) kernel's im2col matmul still beats the
# stock kernel: measured per layer (benchmarks/conv_weight_grads.py, ResNet50 at 128 px /
# batch 32 and ResNet18 at 112 px / batch 64, bf16): 1.3-2.7x faster at 7x7 and 4x4 outputs,
# level at 8x8, 0.55-0.8x at 14x14 and more (im2col copies k*k times the input). 1x1
# kernels need no copy and were level or faster (0.8-3.4x, most >= 1.0) at every size.
MAX_IM2COL_OUTPUT_AREA = 7 * 7
_mode = ["auto"]


@contextlib.contextmanager
def weight_grads(mode: str):
  """Conv layers built inside use `mode` for their weight gradient; the previous mode is
  put back afterwards (like `engine.precision.policy`)."""
  if mode not in MODES:
    raise ValueError(f"unknown weight_grads mode {mode!r}; known: {', '.join(MODES)}")
  previous, _mode[0] = _mode[0], mode
  try:
    yield
  finally:
    _mode[0] = previous


@functools.lru_cache(maxsize=None)
def device_prefers_matmul() -> tuple[bool, str]:
  """(whether this machine's weight gradients go through matmuls, why). Decided once."""
  if tf.config.list_physical_devices("GPU"):
    return False, "a GPU is visible: cuDNN/XLA weight gradients"
  native = sorted(cpu_flags() & set(_AMX_FLAGS))
  if native:
    return True, f"CPU has {', '.join(native)}: matmul weight gradients where measured faster"
  return False, "CPU without AMX/AVX512_BF16: stock oneDNN weight gradients"


def uses_matmul_weight_grad(kernel_size, strides, dilation_rate, groups, output_hw,
                            mode: str | None = None) -> bool:
  """Whether a conv of this shape takes its weight gradient through a matmul."""
  mode = mode or _mode[0]
  if mode == "stock" or groups != 1 or tuple(dilation_rate) != (1, 1):
    return False
  if mode == "auto" and not device_prefers_matmul()[0]:
    return False
  if tuple(kernel_size) == (1, 1):
    return True
  return output_hw[0] * output_hw[1] <= MAX_IM2COL_OUTPUT_AREA


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
  """(output size, pad before, pad after) of TensorFlow's "SAME" padding."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return out, total // 2, total - total // 2


def _patches(x, kernel_size, strides, padding):
  """[N*Ho*Wo, kh*kw*Cin] im2col rows of NHWC `x` (the input itself for a 1x1 kernel).

  A strided slice (`x[:, ::2, ::2]`) of a bf16 tensor runs ~30x slower on this CPU than a
  plain one (25 vs 0.7 ms for 32x32x32x256), so each tap is a stride-1 `tf.slice` of
  Ho*s x Wo*s pixels, reshaped to [N, Ho, s, Wo, s*C], of which phase 0 is kept.
  """
  (kh, kw), (sh, sw) = kernel_size, strides
  _, height, width, channels = x.shape
  if padding == "same":
    out_h, top, _ = _same_padding(height, kh, sh)
    out_w, left, _ = _same_padding(width, kw, sw)
  else:
    out_h, out_w, top, left = (height - kh) // sh + 1, (width - kw) // sw + 1, 0, 0
  # Every tap reads Ho*s x Wo*s pixels from its offset: pad (or keep) that much.
  bottom = max(kh - 1 + out_h * sh - height - top, 0)
  right = max(kw - 1 + out_w * sw - width - left, 0)
  if top or bottom or left or right:
    x = tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]])
  taps = []
  for i in range(kh):
    for j in range(kw):
      tap = tf.slice(x, [0, i, j, 0], [-1, out_h * sh, out_w * sw, channels])
      if sh > 1 or sw > 1:
        tap = tf.reshape(tap, [-1, out_h, sh, out_w, sw * channels])
        tap = tf.slice(tap, [0, 0, 0, 0, 0], [-1, out_h, 1, out_w, channels])
      taps.append(tap)
  rows = taps[0] if len(taps) == 1 else tf.concat(taps, axis=-1)
  return tf.reshape(rows, [-1, kh * kw * channels])


def matmul_weight_grad(x, grad_output, kernel_shape, strides, padding, chunks: int = 1):
  """dL/dW of `conv2d(x, W, strides, padding)` given dL/dY, computed as one matmul.

  With `chunks` > 1 the long reduction (N*Ho*Wo rows) is split into that many batched
  matmuls whose float32 sum is the gradient: a [K, Cin]^T x [K, Cout] product has only
  Cin x Cout outputs to share among cores, the batch gives each core its own slice of K.
  """
  kh, kw, cin, cout = kernel_shape
  rows = _patches(x, (kh, kw), strides, padding)
  grad_rows = tf.reshape(grad_output, [-1, cout])
  if chunks > 1 and rows.shape[0] is not None and rows.shape[0] % chunks == 0:
    rows = tf.reshape(rows, [chunks, -1, kh * kw * cin])
    grad_rows = tf.reshape(grad_rows, [chunks, -1, cout])
    partial = tf.matmul(rows, grad_rows, transpose_a=True)
    grad = tf.cast(tf.reduce_sum(tf.cast(partial, tf.float32), axis=0), x.dtype)
  else:
    grad = tf.matmul(rows, grad_rows, transpose_a=True)
  return tf.reshape(grad, [kh, kw, cin, cout])


def conv2d_matmul_weight_grad(x, kernel, strides, padding):
  """`tf.nn.conv2d` (NHWC) whose kernel gradient is `matmul_weight_grad`."""
  tf_padding = padding.upper()
  tf_strides = [1, *strides, 1]

  @tf.custom_gradient
  def conv(inputs, weights):
    outputs = tf.nn.conv2d(inputs, weights, tf_strides, tf_padding)

    def grad(grad_outputs):
      input_sizes = inputs.shape if inputs.shape.is_fully_defined() else tf.shape(inputs)
      grad_inputs = tf.raw_ops.Conv2DBackpropInput(
          input_sizes=input_sizes, filter=weights, out_backprop=grad_outputs,
          strides=tf_strides, padding=tf_padding)
      grad_weights = matmul_weight_grad(inputs, grad_outputs, weights.shape, strides, padding)
      return grad_inputs, grad_weights

    return outputs, grad

  # Read a variable kernel here, outside the custom gradient: its gradient then flows to
  # the variable through the read (and a mixed-precision cast), as for any tensor.
  return conv(x, tf.convert_to_tensor(kernel))


@keras.saving.register_keras_serializable(package="facetrain")
class MatmulGradConv2D(keras.layers.Conv2D):
  """`keras.layers.Conv2D` (same variables, names and config) whose weight gradient runs
  as a matmul where `uses_matmul_weight_grad` says that is faster on this device."""

  def build(self, input_shape):
    super().build(input_shape)
    height, width = input_shape[1], input_shape[2]
    output_hw = (None, None)
    if height is not None and width is not None:
      output_hw = self.compute_output_shape(input_shape)[1:3]
    self.matmul_weight_grad = (
        self.data_format == "channels_last" and None not in output_hw and
        uses_matmul_weight_grad(self.kernel_size, self.strides, self.dilation_rate,
                                self.groups, output_hw))

  def convolution_op(self, inputs, kernel):
    if not self.matmul_weight_grad or inputs.shape[1] is None:
      return super().convolution_op(inputs, kernel)
    return conv2d_matmul_weight_grad(inputs, kernel, tuple(self.strides), self.padding)


def log_weight_grad_choice(model: keras.Model) -> tuple[int, int]:
  """Logs how many of `model`'s convs take matmul weight gradients; returns (matmul, all)."""
  from engine.models.builder import leaf_layers

  convs = [l for l in leaf_layers(model) if isinstance(l, keras.layers.Conv2D)]
  matmul = sum(bool(getattr(l, "matmul_weight_grad", False)) for l in convs)
  logging.info("conv weight gradients: %d of %d convs by matmul (mode %s; %s)",
               matmul, len(convs), _mode[0], device_prefers_matmul()[1])
  return matmul, len(convs)
