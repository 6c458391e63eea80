"""Running an exported artifact through the runtime it is deployed with.

One callable per artifact and precision: float32 RGB pixels [N, H, W, 3] in [0, 255] ->
float32 logits [N, outputs], so the export check, `launch.predict --model=ARTIFACT` and
the latency benchmark all call the runtime a user ships, not TensorFlow pretending to be it:

  keras        keras.saving.load_model, called in inference mode
  saved_model  tf.saved_model.load, signature serving_default
  tflite       the TFLite interpreter (XNNPACK, TFLite's default CPU delegate), one
               interpreter per batch size (a resize reallocates every tensor)
  onnx         onnxruntime.InferenceSession, CPU execution provider
  openvino     openvino.Core().compile_model on CPU, one compiled model per batch size
               (static shapes are what OpenVINO plans for), INFERENCE_PRECISION_HINT f32 or
               bf16 and PERFORMANCE_HINT LATENCY

onnxruntime and openvino come with the `deploy` extra; a missing one is an ImportError
that says how to install it.
"""

from __future__ import annotations

import importlib
import json
import os
from typing import Callable

import numpy as np

# Precisions each format's runtime can be asked for; float32 first.
PRECISIONS = {"keras": ("float32",), "saved_model": ("float32",), "tflite": ("float32",),
              "onnx": ("float32",), "openvino": ("float32", "bfloat16")}
FORMATS = tuple(PRECISIONS)  # what launch.export writes
_DEFAULT_NAMES = {"keras": "model.keras", "saved_model": "saved_model", "tflite": "model.tflite",
                  "onnx": "model.onnx", "openvino": "openvino/model.xml"}
_OPENVINO_PRECISION = {"float32": "f32", "bfloat16": "bf16"}
DEPLOY_EXTRA_HINT = "pip install 'facetrain[deploy]' (or pip install -e '.[deploy]')"


def import_runtime(module: str, purpose: str):
  """Imports an optional deploy dependency, or raises ImportError naming the extra."""
  try:
    return importlib.import_module(module)
  except ImportError as error:
    raise ImportError(f"{purpose} needs the Python package {module!r}, which is not installed "
                      f"({error}); install the deploy extra: {DEPLOY_EXTRA_HINT}") from None


def export_path(model_dir: str, format: str, output_path: str | None = None) -> str:  # noqa: A002
  """Where `format` is exported: output_path, or model_dir/export/model.keras, .../saved_model,
  .../model.tflite, .../model.onnx, .../openvino/model.xml.

  Raises:
    ValueError: an unknown format, or a path the format cannot be written as.
  """
  if format not in FORMATS:
    raise ValueError(f"unknown export format {format!r}; known: {', '.join(FORMATS)}")
  path = output_path or os.path.join(model_dir, "export", _DEFAULT_NAMES[format])
  if format == "keras" and not path.endswith(".keras"):
    raise ValueError(f"{path}: a Keras model file must end in .keras")
  if format == "openvino" and not path.endswith(".xml"):
    raise ValueError(f"{path}: an OpenVINO model is written as NAME.xml (+ NAME.bin)")
  return path


def labels_path(artifact_path: str) -> str:
  """Where an artifact's labels/metadata JSON goes: beside it, named after it in full
  (model.keras -> model.keras.labels.json), so two formats in one folder do not clash."""
  return artifact_path.rstrip(os.sep) + ".labels.json"


def read_metadata(artifact_path: str) -> dict:
  """The metadata written beside an artifact (format, class names, input size, crop...).

  Raises:
    FileNotFoundError: the artifact or its metadata is missing (the message names which).
  """
  if not os.path.exists(artifact_path):
    raise FileNotFoundError(f"{artifact_path}: no such exported model")
  path = labels_path(artifact_path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: missing; an artifact written by launch.export has its "
                            "metadata beside it")
  with open(path) as f:
    return json.load(f)


def _keras(path: str, precision: str, threads: int) -> Callable:
  import keras  # pylint: disable=g-import-not-at-top
  model = keras.saving.load_model(path)
  return lambda pixels: np.asarray(model(pixels, training=False), np.float32)


def _saved_model(path: str, precision: str, threads: int) -> Callable:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  serve = tf.saved_model.load(path).signatures["serving_default"]
  return lambda pixels: serve(pixels=tf.constant(pixels))["logits"].numpy()


def _tflite(path: str, precision: str, threads: int) -> Callable:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # Tensor indices by signature name, from a throwaway interpreter: a signature runner
  # keeps references that forbid resizing its interpreter.
  runner = tf.lite.Interpreter(model_path=path).get_signature_runner("serving_default")
  pixels_index = runner.get_input_details()["pixels"]["index"]
  logits_index = runner.get_output_details()["logits"]["index"]
  del runner
  interpreters = {}

  def run(pixels):
    batch = pixels.shape[0]
    if batch not in interpreters:
      interpreter = tf.lite.Interpreter(model_path=path, num_threads=threads or None)
      interpreter.resize_tensor_input(pixels_index, list(pixels.shape))
      interpreter.allocate_tensors()
      interpreters[batch] = interpreter
    interpreter = interpreters[batch]
    interpreter.set_tensor(pixels_index, pixels)
    interpreter.invoke()
    return interpreter.get_tensor(logits_index)

  return run


def _onnx(path: str, precision: str, threads: int) -> Callable:
  ort = import_runtime("onnxruntime", "running an ONNX model")
  options = ort.SessionOptions()
  options.intra_op_num_threads = threads
  session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
  return lambda pixels: session.run(["logits"], {"pixels": pixels})[0]


def _openvino(path: str, precision: str, threads: int) -> Callable:
  ov = import_runtime("openvino", "running an OpenVINO model")
  core = ov.Core()
  config = {"INFERENCE_PRECISION_HINT": _OPENVINO_PRECISION[precision],
            "PERFORMANCE_HINT": "LATENCY"}
  if threads:
    config["INFERENCE_NUM_THREADS"] = threads
  compiled = {}

  def run(pixels):
    batch = pixels.shape[0]
    if batch not in compiled:
      model = core.read_model(path)
      model.reshape({"pixels": list(pixels.shape)})
      network = core.compile_model(model, "CPU", config)
      compiled[batch] = (network.create_infer_request(), network.output("logits"))
    request, logits = compiled[batch]
    return request.infer({"pixels": pixels})[logits].copy()

  return run


_LOADERS = {"keras": _keras, "saved_model": _saved_model, "tflite": _tflite, "onnx": _onnx,
            "openvino": _openvino}


def load_runner(path: str, format: str, precision: str = "float32",  # noqa: A002
                threads: int = 0) -> Callable[[np.ndarray], np.ndarray]:
  """A callable float32 pixels [N, H, W, 3] -> float32 logits through the artifact's runtime.

  Args:
    path: the artifact (file, SavedModel folder, or OpenVINO .xml).
    format: one of PRECISIONS' keys.
    precision: one of PRECISIONS[format].
    threads: the runtime's intra-op threads; 0 keeps its default.

  Raises:
    ValueError: an unknown format or a precision the format's runtime does not offer.
    ImportError: the runtime is not installed (names the extra).
  """
  if format not in _LOADERS:
    raise ValueError(f"unknown artifact format {format!r}; known: {', '.join(_LOADERS)}")
  if precision not in PRECISIONS[format]:
    raise ValueError(f"{format} artifacts run in {' or '.join(PRECISIONS[format])}, "
                     f"not {precision!r}")
  run = _LOADERS[format](path, precision, threads)
  return lambda pixels: run(np.ascontiguousarray(pixels, np.float32))
