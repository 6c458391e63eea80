"""Counts a model's floating-point operations for one image, with TensorFlow's profiler.

A multiply-add counts as 2 FLOPs (the profiler's convention, and the one the latency
benchmark's matmul peak uses), so floor = FLOPs / peak FLOP/s compares like with like.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from tensorflow.python.profiler import model_analyzer, option_builder


def count_flops(model: keras.Model, batch_size: int = 1) -> int:
  """FLOPs of one forward pass of `model` on `batch_size` images (inference mode)."""
  spec = tf.TensorSpec([batch_size, *model.input_shape[1:]], tf.float32)
  graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph
  options = option_builder.ProfileOptionBuilder(
      option_builder.ProfileOptionBuilder.float_operation()).with_empty_output().build()
  return int(model_analyzer.profile(graph, options=options).total_float_ops)
