"""Per conv layer of a backbone: stock `Conv2DBackpropFilter` vs the matmul weight gradient.

Times the two weight-gradient kernels alone, interleaved, on every distinct conv shape a
backbone builds at the given size, batch and dtype; the ratio per shape is what
`engine.models.matmul_conv.uses_matmul_weight_grad`'s rule was read from.
"""

from __future__ import annotations

import dataclasses
import time

import keras
import tensorflow as tf

from engine.config import ModelConfig
from engine.models import build_model
from engine.models.builder import leaf_layers
from engine.models.matmul_conv import matmul_weight_grad, weight_grads
from engine import precision as precision_lib


@dataclasses.dataclass(frozen=True)
class ConvGradConfig:
  backbone: str = "resnet50"
  image_size: tuple[int, int] = (128, 128)
  batch_size: int = 32
  dtype: str = "bfloat16"
  repeats: int = 5
  rounds: int = 3
  chunks: tuple[int, ...] = (1, 2, 4)  # matmul variants: reduction split into this many


def _conv_shapes(config: ConvGradConfig) -> list[tuple]:
  """Distinct (input shape, kernel shape, strides, padding, output hw) of the convs."""
  with precision_lib.policy("float32"), weight_grads("stock"):
    model = build_model(ModelConfig(config.backbone, image_size=config.image_size))
  shapes = []
  for layer in leaf_layers(model):
    if type(layer).__name__ not in ("Conv2D", "MatmulGradConv2D") or layer.groups != 1:
      continue
    in_shape = (config.batch_size, *layer.input.shape[1:])
    out_hw = tuple(layer.output.shape[1:3])
    key = (in_shape, tuple(layer.kernel.shape), tuple(layer.strides), layer.padding, out_hw)
    if key not in shapes:
      shapes.append(key)
  return shapes


def _timer(fn, repeats):
  fn()

  def run():
    start = time.perf_counter()
    for _ in range(repeats):
      out = fn()
    float(tf.reduce_sum(tf.cast(out, tf.float32)))
    return (time.perf_counter() - start) / repeats

  return run


def run_conv_grad_benchmark(config: ConvGradConfig) -> dict:
  dtype = tf.as_dtype(config.dtype)
  rows = []
  for in_shape, kernel_shape, strides, padding, out_hw in _conv_shapes(config):
    x = tf.cast(tf.random.normal(in_shape), dtype)
    dy = tf.cast(tf.random.normal([in_shape[0], *out_hw, kernel_shape[-1]]), dtype)
    stock = tf.function(lambda x=x, dy=dy, k=kernel_shape, s=strides, p=padding:
                        tf.raw_ops.Conv2DBackpropFilter(
                            input=x, filter_sizes=k, out_backprop=dy, strides=[1, *s, 1],
                            padding=p.upper()))
    timers = {"stock": _timer(stock, config.repeats)}
    for chunks in config.chunks:
      timers[f"matmul_{chunks}"] = _timer(tf.function(
          lambda x=x, dy=dy, k=kernel_shape, s=strides, p=padding, c=chunks:
          matmul_weight_grad(x, dy, k, s, p, c)), config.repeats)
    best = {name: min(t() for _ in range(config.rounds)) for name, t in timers.items()}
    flops = 2 * in_shape[0] * out_hw[0] * out_hw[1] * int(tf.reduce_prod(kernel_shape))
    rows.append({"input": list(in_shape), "kernel": list(kernel_shape), "strides": list(strides),
                 "output_hw": list(out_hw),
                 "ms": {k: round(1e3 * v, 3) for k, v in best.items()},
                 "speedup": {k: round(best["stock"] / v, 3) for k, v in best.items()
                             if k != "stock"},
                 "gflops": {k: round(flops / v / 1e9, 1) for k, v in best.items()}})
  return {"config": dataclasses.asdict(config), "layers": rows,
          "keras_version": keras.__version__}
