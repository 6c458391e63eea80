"""engine.eval.export: each format predicts what the run's model predicts, is checked
before it is written, and loads without this package."""

import importlib.util
import json
import os
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from engine.eval import export as export_module
from engine.eval.artifact import load_runner
from engine.eval.export import export, labels_path, to_stock_keras
from engine.eval.export_check import ExportMismatchError
from engine.models.batch_norm import FusedBatchNorm
from engine.models.preprocessing import Preprocess
from engine.run.restore import load_model
from tests.engine.eval.test_predict import write_images, write_run_dir

# (format, Python package of its converter or runtime): the deploy extra's formats skip
# with the reason when it is not installed.
DEPLOY_FORMATS = [("onnx", "tf2onnx"), ("onnx", "onnxruntime"), ("openvino", "openvino")]


def needs(format):
  """Skips the test when `format`'s optional packages are absent."""
  for name, package in DEPLOY_FORMATS:
    if name == format:
      pytest.importorskip(package, reason=f"--format={format} needs {package} from the "
                                          "deploy extra (pip install -e '.[deploy]')")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A 3-class run (softmax) whose data is elsewhere, real JPEGs to check exports on, and
  the reference: its model's logits on fixed pixels."""
  model_dir = write_run_dir(tmp_path_factory.mktemp("run"), num_outputs=3, task="identity")
  images = tmp_path_factory.mktemp("images")
  write_images(images)
  model, _, _ = load_model(model_dir)
  pixels = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("float32")
  return model_dir, pixels, model(pixels, training=False).numpy(), (str(images),)


_NAMES = {"keras": "m.keras", "saved_model": "sm", "tflite": "m.tflite", "onnx": "m.onnx",
          "openvino": "ov/m.xml"}


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
  """Every format exported once (the deploy formats when their packages are installed)."""
  folder = tmp_path_factory.mktemp("exported")
  paths = {}
  for format, name in _NAMES.items():
    packages = [p for f, p in DEPLOY_FORMATS if f == format]
    if all(importlib.util.find_spec(p) for p in packages):
      paths[format] = export(run[0], format, str(folder / name), check_images=run[3])
  return paths


def _labels(path):
  with open(labels_path(path)) as f:
    return json.load(f)


def test_keras_file(run, exported):
  model_dir, pixels, expected, images = run
  path = exported["keras"]
  with zipfile.ZipFile(path) as archive:
    config = archive.read("config.json").decode()
  assert "engine" not in config and "facetrain" not in config  # stock layers only
  loaded = keras.saving.load_model(path)
  np.testing.assert_allclose(loaded(pixels).numpy(), expected, atol=1e-4)
  labels = _labels(path)
  assert labels["class_names"] == ["0", "1", "2"] and labels["image_size"] == [32, 32]
  assert labels["task"] == "identity" and labels["output_kind"] == "softmax"


def test_saved_model_float_and_uint8_signatures(run, exported):
  model_dir, pixels, expected, images = run
  path = exported["saved_model"]
  loaded = tf.saved_model.load(path)
  outputs = loaded.signatures["serving_default"](pixels=tf.constant(pixels))
  np.testing.assert_allclose(outputs["logits"].numpy(), expected, atol=1e-4)
  np.testing.assert_allclose(outputs["probabilities"].numpy(), tf.nn.softmax(expected), atol=1e-5)
  as_uint8 = loaded.signatures["serving_uint8"](pixels=tf.constant(pixels.astype(np.uint8)))
  np.testing.assert_allclose(as_uint8["logits"].numpy(), expected, atol=1e-4)
  assert _labels(path)["format"] == "saved_model"


def test_tflite(run, exported):
  model_dir, pixels, expected, images = run
  path = exported["tflite"]
  runner = tf.lite.Interpreter(model_path=path).get_signature_runner("serving_default")
  outputs = runner(pixels=pixels)
  np.testing.assert_allclose(outputs["logits"], expected, atol=1e-3)
  assert os.path.exists(labels_path(path))


def test_default_paths_do_not_clash(run):
  model_dir, images = run[0], run[3]
  keras_path = export(model_dir, "keras", check_images=images)
  assert keras_path == os.path.join(model_dir, "export", "model.keras")
  assert labels_path(keras_path).endswith("model.keras.labels.json")
  with pytest.raises(ValueError, match="unknown export format 'coreml'"):
    export(model_dir, "coreml")


@pytest.mark.parametrize("mode", ["caffe", "torch"])
def test_stock_rebuild_of_custom_layers(mode):
  """Preprocess (with the caffe BGR flip) and FusedBatchNorm become stock layers."""
  inputs = keras.Input((8, 8, 3))
  x = Preprocess(mode)(inputs)
  x = keras.layers.Conv2D(4, 3)(x)
  x = FusedBatchNorm()(x)
  outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
  model = keras.Model(inputs, outputs)
  batch_norm = model.layers[3]
  batch_norm.moving_mean.assign([0.5, -1.0, 2.0, 0.0])
  batch_norm.moving_variance.assign([0.3, 2.0, 1.5, 4.0])
  stock = to_stock_keras(model)
  classes = {type(layer) for layer in stock.layers}
  assert Preprocess not in classes and FusedBatchNorm not in classes
  pixels = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
  np.testing.assert_allclose(stock(pixels).numpy(), model(pixels).numpy(), atol=1e-5)


@pytest.mark.parametrize("format", ["onnx", "openvino"])
def test_deploy_formats_match_the_checkpoint(run, exported, format):
  needs(format)
  model_dir, pixels, expected, images = run
  path = exported[format]
  labels = _labels(path)
  assert labels["format"] == format and labels["class_names"] == ["0", "1", "2"]
  assert labels["check"]["images"] == "4 image files"  # broken.jpg skipped, not fatal
  precisions = labels["check"]["precisions"]
  assert set(precisions) == ({"float32", "bfloat16"} if format == "openvino" else {"float32"})
  for precision, numbers in precisions.items():
    assert numbers["max_abs_logit_difference"] <= numbers["tolerance"]
    logits = load_runner(path, format, precision)(pixels)
    np.testing.assert_allclose(logits, expected, atol=numbers["tolerance"])
  assert not [n for n in os.listdir(os.path.dirname(path)) if n.startswith(".export-")]
  if format == "openvino":
    assert sorted(os.listdir(os.path.dirname(path))) == ["m.bin", "m.xml", "m.xml.labels.json"]


def test_export_checks_on_the_validation_split(celeba_shards, tmp_path):
  """By default the check runs the run's own validation images through the artifact."""
  model_dir = write_run_dir(tmp_path / "run", data_dir=celeba_shards)
  path = export(model_dir, "saved_model", str(tmp_path / "sm"), check_examples=5)
  check = _labels(path)["check"]
  assert check["images"] == f"5 images of {celeba_shards} (validation)"
  assert check["precisions"]["float32"]["label_agreement"] == 1.0


def test_export_refuses_an_artifact_that_disagrees(run, tmp_path, monkeypatch):
  """A converter that mangles one weight: the check fails, nothing is left at the path."""
  model_dir, _, _, images = run
  write = export_module.write_artifact

  def corrupting_write(model, task, format, path):
    dense = model.layers[-1]
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel, bias + 0.5])
    write(model, task, format, path)

  monkeypatch.setattr(export_module, "write_artifact", corrupting_write)
  with pytest.raises(ExportMismatchError, match=r"keras export in float32 differs .* by 0\.5"):
    export(model_dir, "keras", str(tmp_path / "m.keras"), check_images=images)
  assert os.listdir(tmp_path) == []


def test_export_without_images_to_check_on_says_what_to_give(run, tmp_path):
  with pytest.raises(ValueError, match="give real images to check it on"):
    export(run[0], "keras", str(tmp_path / "m.keras"))


def test_missing_converter_names_the_extra(run, tmp_path, monkeypatch):
  real_import = export_module.import_runtime.__globals__["importlib"].import_module

  def without_tf2onnx(name, *args):
    if name == "tf2onnx":
      raise ImportError("No module named 'tf2onnx'")
    return real_import(name, *args)

  monkeypatch.setattr("importlib.import_module", without_tf2onnx)
  with pytest.raises(ImportError, match=r"--format=onnx needs .*tf2onnx.*facetrain\[deploy\]"):
    export(run[0], "onnx", str(tmp_path / "m.onnx"), check_images=run[3])


@pytest.mark.slow  # a fresh interpreter importing TensorFlow, ONNX Runtime and OpenVINO
def test_artifacts_load_without_this_package(run, exported, tmp_path):
  model_dir, pixels, expected, images = run
  paths = exported
  np.save(tmp_path / "pixels.npy", pixels)
  # What a user of each runtime writes, in an interpreter that never imports engine.
  script = f"""
import json, sys
import numpy as np
paths = {paths!r}
pixels = np.load("pixels.npy")
out = {{}}
import keras, tensorflow as tf
out["keras"] = keras.saving.load_model(paths["keras"])(pixels).numpy()
saved = tf.saved_model.load(paths["saved_model"])
out["saved_model"] = saved.signatures["serving_default"](pixels=tf.constant(pixels))["logits"].numpy()
tflite = tf.lite.Interpreter(model_path=paths["tflite"]).get_signature_runner("serving_default")
out["tflite"] = tflite(pixels=pixels)["logits"]
if "onnx" in paths:
  import onnxruntime
  session = onnxruntime.InferenceSession(paths["onnx"], providers=["CPUExecutionProvider"])
  out["onnx"] = session.run(["logits"], {{"pixels": pixels}})[0]
if "openvino" in paths:
  import openvino
  compiled = openvino.Core().compile_model(paths["openvino"], "CPU",
                                           {{"INFERENCE_PRECISION_HINT": "f32"}})
  out["openvino"] = compiled(pixels)[compiled.output("logits")]
print(json.dumps({{"logits": {{k: np.asarray(v).tolist() for k, v in out.items()}},
                  "engine_imported": any(m == "engine" or m.startswith("engine.")
                                         for m in sys.modules)}}))
"""
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  outputs = json.loads(result.stdout.strip().splitlines()[-1])
  assert outputs["engine_imported"] is False
  assert set(outputs["logits"]) == set(paths)
  for format, logits in outputs["logits"].items():
    np.testing.assert_allclose(logits, expected, atol=1e-3, err_msg=format)
