"""The inference paths the latency benchmark times, for one model: each a `Variant`.

  predict      `model.predict(x, verbose=0)`: Keras' default path (float32 and bf16 builds)
  tensorflow   our compiled call: the model as one concrete function, variables folded
               into constants (freeze), float32 or bf16 policy, XLA off or on
  tflite       the exported .tflite in the TFLite interpreter (XNNPACK), float32
  onnxruntime  the exported .onnx in ONNX Runtime (CPU provider), float32
  openvino     the exported IR in OpenVINO (CPU), INFERENCE_PRECISION_HINT f32 and bf16;
               with calibration images (a trained run), also int8: the IR quantised by
               NNCF's post-training quantisation (nncf.quantize, default preset) on them

The exported ones are written by `engine.eval.export.write_artifact` from the stock-Keras
rebuild of the same model and run by `engine.eval.artifact.load_runner`: exactly what
`launch.export` writes and `launch.predict --model` runs. A runtime that is not installed
gives one row with the reason instead of a measurement.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from engine.eval.artifact import PRECISIONS, import_runtime, load_runner
from engine.eval.export import to_stock_keras, write_artifact
from engine.monitor.machine import usable_cores
from engine.tasks import Task

RUNTIMES = ("predict", "tensorflow", "tflite", "onnxruntime", "openvino")
_ARTIFACT_FORMATS = {"tflite": "tflite", "onnxruntime": "onnx", "openvino": "openvino"}
_FILE_NAMES = {"tflite": "model.tflite", "onnx": "model.onnx", "openvino": "model.xml"}
_INT8_NAME = "model_int8.xml"


@dataclasses.dataclass
class Variant:
  """One way to run the model: batch-1 and batch-N callables on fixed inputs.

  Attributes:
    runtime: one of RUNTIMES.
    precision: the compute precision (float32 | bfloat16): sets its FLOP floor.
    xla: jit_compile (tensorflow only; None elsewhere).
    run: float32 pixels [N, H, W, 3] (N = 1 or the batch size) -> float32 logits.
    error: why it could not be built (then `run` is None).
  """

  runtime: str
  precision: str
  xla: bool | None
  run: Callable[[np.ndarray], Any] | None
  error: str | None = None

  @property
  def name(self) -> str:
    xla = "" if self.xla is None else f" xla {'on' if self.xla else 'off'}"
    return f"{self.runtime} {self.precision}{xla}"


def compiled_call(model: keras.Model, spec: tf.TensorSpec, xla: bool, freeze: bool) -> Callable:
  """The model's inference call as one concrete function for inputs of `spec`."""
  forward = tf.function(lambda x: model(x, training=False))
  if not freeze:
    return tf.function(forward.python_function, jit_compile=xla).get_concrete_function(spec)
  frozen = convert_variables_to_constants_v2(forward.get_concrete_function(spec))
  if not xla:
    return frozen
  # Freezing drops a function's jit attribute, so compile the frozen graph afterwards.
  return tf.function(frozen, jit_compile=True).get_concrete_function(spec)


def tensorflow_variant(model: keras.Model, precision: str, xla: bool, freeze: bool,
                       shapes: list[tuple[int, ...]]) -> Variant:
  """Our compiled call, one concrete function per input shape (XLA and oneDNN plan per shape)."""
  functions = {shape: compiled_call(model, tf.TensorSpec(shape, tf.float32), xla, freeze)
               for shape in shapes}

  def run(pixels):
    logits = tf.nest.flatten(functions[pixels.shape](tf.constant(pixels)))[0]
    return tf.cast(logits, tf.float32).numpy()

  return Variant("tensorflow", precision, xla, run)


def predict_variant(model: keras.Model, precision: str) -> Variant:
  return Variant("predict", precision, None,
                 lambda pixels: np.asarray(model.predict(pixels, verbose=0), np.float32))


def quantize_openvino(path: str, calibration: np.ndarray, output_path: str,
                      batch_size: int = 16) -> None:
  """Writes the int8 version of the OpenVINO IR at `path`, calibrated on `calibration`
  (float32 pixels), by NNCF's post-training quantisation."""
  ov = import_runtime("openvino", "int8 quantisation")
  nncf = import_runtime("nncf", "int8 quantisation")
  batches = [calibration[i:i + batch_size] for i in range(0, len(calibration), batch_size)]
  quantized = nncf.quantize(ov.Core().read_model(path), nncf.Dataset(batches),
                            subset_size=len(calibration))
  ov.save_model(quantized, output_path, compress_to_fp16=False)


def artifact_variants(model: keras.Model, task: Task, runtimes: tuple[str, ...],
                      folder: str, calibration: np.ndarray | None = None) -> list[Variant]:
  """Exports `model` for each artifact runtime into `folder`; a Variant per precision
  (and OpenVINO int8 when `calibration` images are given)."""
  stock = None
  variants = []
  for runtime in runtimes:
    if runtime not in _ARTIFACT_FORMATS:
      continue
    format = _ARTIFACT_FORMATS[runtime]  # noqa: A001
    path = os.path.join(folder, _FILE_NAMES[format])
    for precision in PRECISIONS[format]:
      try:
        if not os.path.exists(path):
          stock = stock or to_stock_keras(model)
          write_artifact(stock, task, format, path)
        variants.append(Variant(runtime, precision, None,
                                load_runner(path, format, precision, threads=usable_cores())))
      except ImportError as error:
        variants.append(Variant(runtime, precision, None, None, f"not installed: {error}"))
    if format == "openvino" and calibration is not None and os.path.exists(path):
      variants.append(_int8_variant(path, calibration, os.path.join(folder, _INT8_NAME)))
  return variants


def _int8_variant(path: str, calibration: np.ndarray, int8_path: str) -> Variant:
  """OpenVINO int8 (the layers NNCF leaves in float run in f32)."""
  try:
    quantize_openvino(path, calibration, int8_path)
  except ImportError as error:
    return Variant("openvino", "int8", None, None, f"not installed: {error}")
  return Variant("openvino", "int8", None,
                 load_runner(int8_path, "openvino", "float32", threads=usable_cores()))
