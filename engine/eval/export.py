"""Exporting a trained run as a self-contained artifact: .keras, SavedModel, TFLite, ONNX, OpenVINO.

Every artifact takes RGB pixels in [0, 255] at the run's image size (the preprocessing
is inside the model) and loads without this package:

- The model is first rebuilt from stock Keras layers: `FusedBatchNorm` becomes
  `BatchNormalization` (same variables; the same inference arithmetic) and `Preprocess`
  becomes `Rescaling` (the same multiply-add), behind a fixed 1x1 convolution that
  reverses the channels for caffe-style backbones. Registering our classes instead would
  leave a .keras file that needs `engine` importable to load: not self-contained.
  The export checks the rebuilt model's logits against the original's.
- keras: that model as a `.keras` file (`keras.saving.load_model`), outputs logits.
- saved_model: signatures `serving_default` (float32 pixels) and `serving_uint8`
  (uint8 pixels), [None, H, W, 3] -> {"logits", "probabilities"}.
- tflite: the float32 signature, converted by `tf.lite.TFLiteConverter` (float32 weights).
- onnx: the float32 serving function converted by tf2onnx (opset 17), inputs "pixels",
  outputs "logits" and "probabilities"; runs in ONNX Runtime.
- openvino: the SavedModel converted by `openvino.convert_model` and written by
  `openvino.save_model` as IR (model.xml + model.bin, float32 weights); bf16 is a runtime
  choice (INFERENCE_PRECISION_HINT), checked like float32.

Every artifact is written under a temporary name, run through its own runtime in each
precision it offers on real images and compared with the checkpoint's logits
(engine.eval.export_check), and only then moved into place. Next to it,
`<artifact>.labels.json` holds the class names, image size, crop box, preprocessing, the
check's numbers and where the weights came from.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from engine.eval.artifact import PRECISIONS, export_path, import_runtime, labels_path
from engine.eval.export_check import batched_logits, check_artifact, reference_images
from engine.eval.predict import run_class_names, run_frame_size
from engine.tasks import TASKS, Task
from engine.models import BACKBONES
from engine.models.batch_norm import FusedBatchNorm
from engine.models.matmul_conv import MatmulGradConv2D
from engine.models.preprocessing import Preprocess
from engine.config import ExperimentConfig
from engine.run.restore import CheckpointSource, load_model

_ONNX_OPSET = 17
# Images the export check runs (the first of the validation split, or of check_images).
CHECK_EXAMPLES = 64
# Max |logit| difference allowed between the stock rebuild and the original model.
_STOCK_TOLERANCE = 1e-4


def _stock_preprocess(layer: Preprocess) -> keras.layers.Layer:
  """Preprocess as stock layers: [channel reversal as a fixed 1x1 conv] + Rescaling."""
  offset = [float(v) for v in layer._offset]  # float32 values: exact through the config
  scale = [float(v) for v in layer._scale]
  if not layer._bgr:
    return keras.layers.Rescaling(scale, offset, name=layer.name)
  reverse = keras.layers.Conv2D(3, 1, use_bias=False, trainable=False, name=f"{layer.name}_bgr")
  model = keras.Sequential([keras.Input(layer.input.shape[1:]), reverse,
                            keras.layers.Rescaling(scale, offset, name=f"{layer.name}_scale")],
                           name=layer.name)
  # A permutation matrix: each output channel copies one input channel exactly.
  reverse.set_weights([np.eye(3, dtype="float32")[::-1].reshape(1, 1, 3, 3)])
  return model


def _is_stock(layer) -> bool:
  return type(layer).__module__.startswith("keras.")


def _clone_stock(layer: keras.Operation) -> keras.Operation:
  """One layer (or a keras.ops operation in the graph) as a stock Keras one carrying the
  original's weights."""
  if isinstance(layer, Preprocess):
    return _stock_preprocess(layer)
  if isinstance(layer, FusedBatchNorm):
    clone = keras.layers.BatchNormalization.from_config(layer.get_config())
  elif isinstance(layer, MatmulGradConv2D):  # differs from Conv2D in training only
    clone = keras.layers.Conv2D.from_config(layer.get_config())
  elif _is_stock(layer):
    clone = layer.__class__.from_config(layer.get_config())
  else:
    raise ValueError(f"cannot export layer {layer.name!r} of class {type(layer).__qualname__}: "
                     "it has no stock Keras equivalent")
  if isinstance(layer, keras.layers.Layer) and layer.weights:
    clone.build_from_config(layer.get_build_config())
    clone.set_weights(layer.get_weights())
  return clone


def _all_layers(model: keras.Model):
  for layer in model.layers:
    yield layer
    if isinstance(layer, keras.Model):
      yield from _all_layers(layer)


def to_stock_keras(model: keras.Model) -> keras.Model:
  """A copy of `model` built from stock Keras layers only, with the same weights.

  Raises:
    ValueError: a layer has no stock equivalent, or the copy's logits differ.
  """
  stock = keras.models.clone_model(model, clone_function=_clone_stock, recursive=True)
  foreign = [type(l).__qualname__ for l in _all_layers(stock) if not _is_stock(l)]
  if foreign:
    raise ValueError(f"stock rebuild still holds non-Keras layers: {foreign}")
  probe = np.random.default_rng(0).uniform(0, 255, (2, *model.input_shape[1:])).astype("float32")
  difference = float(np.max(np.abs(model(probe, training=False) - stock(probe, training=False))))
  if difference > _STOCK_TOLERANCE:
    raise ValueError(f"stock rebuild differs from the model by {difference:.2e} in the logits")
  logging.info("stock-Keras rebuild matches the model (max logit difference %.1e)", difference)
  return stock


def _serving_fn(model: keras.Model, task: Task):
  """pixels -> {"logits", "probabilities"}, probabilities indexed like the class names."""

  def serve(pixels):
    logits = tf.cast(model(tf.cast(pixels, tf.float32), training=False), tf.float32)
    return {"logits": logits, "probabilities": task.probabilities(logits)}

  return serve


def _write_saved_model(model: keras.Model, task: Task, path: str) -> None:
  height, width = model.input_shape[1:3]
  serve = _serving_fn(model, task)
  archive = keras.export.ExportArchive()
  archive.track(model)
  for name, dtype in (("serving_default", tf.float32), ("serving_uint8", tf.uint8)):
    archive.add_endpoint(name, serve, input_signature=[
        tf.TensorSpec([None, height, width, 3], dtype, name="pixels")])
  archive.write_out(path, verbose=False)


def _write_tflite(model: keras.Model, task: Task, path: str) -> None:
  with tempfile.TemporaryDirectory() as saved_model_dir:
    _write_saved_model(model, task, saved_model_dir)
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir,
                                                         signature_keys=["serving_default"])
    flatbuffer = converter.convert()
  with open(path, "wb") as f:
    f.write(flatbuffer)


def _write_onnx(model: keras.Model, task: Task, path: str) -> None:
  import_runtime("onnxruntime", "--format=onnx (the export check runs it)")
  tf2onnx = import_runtime("tf2onnx", "--format=onnx")
  height, width = model.input_shape[1:3]
  spec = tf.TensorSpec([None, height, width, 3], tf.float32, name="pixels")
  tf2onnx.convert.from_function(tf.function(_serving_fn(model, task)), input_signature=[spec],
                                opset=_ONNX_OPSET, output_path=path)


def _write_openvino(model: keras.Model, task: Task, path: str) -> None:
  ov = import_runtime("openvino", "--format=openvino")
  if not path.endswith(".xml"):
    raise ValueError(f"{path}: an OpenVINO model is written as NAME.xml (+ NAME.bin)")
  with tempfile.TemporaryDirectory() as saved_model_dir:
    _write_saved_model(model, task, saved_model_dir)
    converted = ov.convert_model(saved_model_dir)
  # float32 weights: OpenVINO's default halves them to float16, which the bf16 and f32
  # inference precisions would then both start from.
  ov.save_model(converted, path, compress_to_fp16=False)


_WRITERS = {"keras": lambda model, task, path: model.save(path),
            "saved_model": _write_saved_model, "tflite": _write_tflite, "onnx": _write_onnx,
            "openvino": _write_openvino}


def write_artifact(model: keras.Model, task: Task, format: str, path: str) -> None:  # noqa: A002
  """Writes a stock-Keras model (to_stock_keras) as `format` to `path`, unchecked."""
  _WRITERS[format](model, task, path)


def _artifact_files(path: str, format: str) -> list[str]:  # noqa: A002
  """The files (or folder) that make the artifact, in the order to move them into place."""
  return [path[:-len(".xml")] + ".bin", path] if format == "openvino" else [path]


def _move_into_place(staged: str, path: str, format: str) -> None:  # noqa: A002
  """Renames the checked artifact over `path` (a SavedModel folder replaces the old one)."""
  for source, target in zip(_artifact_files(staged, format), _artifact_files(path, format)):
    if os.path.isdir(target):
      shutil.rmtree(target)
    os.replace(source, target)


def metadata(config: ExperimentConfig, format: str, checkpoint: str,  # noqa: A002
             source: CheckpointSource) -> dict:
  """What a consumer of the artifact needs to feed it and read its outputs."""
  task = TASKS.get(config.input.task)
  kind = task.output_kind
  probabilities = {"binary": "[1 - sigmoid(logit), sigmoid(logit)]",
                   "softmax": "softmax(logits)", "multilabel": "sigmoid(logits), per class"}[kind]
  return {
      "format": format,
      "task": config.input.task,
      "label_attribute": config.input.label_attribute if task.uses_label_attribute else None,
      "class_names": run_class_names(config),
      "output_kind": kind,
      "image_size": list(config.input.image_size),
      "crop_box": list(config.input.crop_box) if config.input.crop_box else None,
      # (height, width) of the aligned frame trained on (null: images as they came): what
      # predict takes as already aligned; and whether evaluation averaged the mirror image.
      "frame_size": list(frame) if (frame := run_frame_size(config)) else None,
      "flip_tta": config.train.eval_flip,
      # the largest face enlargement training showed: how far predict's alignment may zoom
      # a tight photo in to keep the crop inside it
      "max_zoom_in": config.input.augment.max_zoom_in,
      "input_dtype": config.input.output_dtype,
      "input": "RGB pixels in [0, 255], [batch, height, width, 3] float32: the image cut to "
               "crop_box (top, left, height, width as fractions; null: the whole image), then "
               "resized bilinearly to image_size (and rounded to integers when input_dtype "
               "is uint8, as training fed it); scaling happens inside the model. A model "
               "trained on CelebA expects faces framed like its aligned 178x218 crops",
      "preprocessing": {"inside_model": BACKBONES.get(config.model.backbone).preprocessing,
                        "resize": "bilinear", "channels": "RGB"},
      "outputs": {"logits": "float32 [batch, num_outputs]",
                  "probabilities": f"{probabilities}, indexed like class_names "
                                   "(saved_model, tflite, onnx and openvino)"},
      "runtime_precisions": list(PRECISIONS[format]),
      "backbone": config.model.backbone,
      "head": config.model.head,
      "checkpoint": checkpoint,
      "checkpoint_path": source.path,
      "checkpoint_step": source.step,
      "ema": source.ema,
  }


def export(model_dir: str, format: str, output_path: str | None = None,  # noqa: A002
           checkpoint: str = "best", check_images: tuple[str, ...] | None = None,
           check_examples: int = CHECK_EXAMPLES) -> str:
  """Exports a run's model, checked against the checkpoint; returns the artifact's path.

  Args:
    model_dir: a training run directory.
    format: keras | saved_model | tflite | onnx | openvino.
    output_path: the artifact's path (default: model_dir/export/model.keras,
      .../saved_model, .../model.tflite, .../model.onnx, .../openvino/model.xml).
    checkpoint: which weights ("best", "latest" or a path; see load_model).
    check_images: image files or folders to check the export on; None: the run's
      validation split.
    check_examples: at most this many images are checked.

  Raises:
    ExportMismatchError: the artifact's logits differ from the checkpoint's (nothing written).
    ImportError: the format's converter or runtime is missing (names the extra).
  """
  path = export_path(model_dir, format, output_path)
  model, config, source = load_model(model_dir, checkpoint)
  pixels, pixels_source = reference_images(config, check_images, check_examples)
  stock = to_stock_keras(model)
  reference = batched_logits(lambda x: model(x, training=False).numpy(), pixels)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=folder, prefix=".export-") as staging:
    staged = os.path.join(staging, os.path.basename(path.rstrip(os.sep)))
    write_artifact(stock, TASKS.get(config.input.task), format, staged)
    checks = check_artifact(staged, format, pixels, reference)
    _move_into_place(staged, path, format)
  info = metadata(config, format, checkpoint, source)
  info["check"] = {"images": pixels_source, "reference": "the checkpoint in float32 (TensorFlow)",
                   "precisions": checks}
  staged_labels = labels_path(path) + ".tmp"
  with open(staged_labels, "w") as f:
    json.dump(info, f, indent=2)
  os.replace(staged_labels, labels_path(path))
  logging.info("exported %s (%s) and %s", path, format, labels_path(path))
  return path
