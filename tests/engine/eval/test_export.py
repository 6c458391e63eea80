"""engine.eval.export: each format predicts what the run's model predicts, and loads
without this package."""

import json
import os
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from engine.eval.export import export, labels_path, to_stock_keras
from engine.models.batch_norm import FusedBatchNorm
from engine.models.preprocessing import Preprocess
from engine.run.restore import load_model
from tests.engine.eval.test_predict import write_run_dir


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A 3-class run (softmax), and the reference: its model's logits on fixed pixels."""
  model_dir = write_run_dir(tmp_path_factory.mktemp("run"), num_outputs=3, task="identity")
  model, _, _ = load_model(model_dir)
  pixels = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("float32")
  return model_dir, pixels, model(pixels, training=False).numpy()


def _labels(path):
  with open(labels_path(path)) as f:
    return json.load(f)


def test_keras_file(run, tmp_path):
  model_dir, pixels, expected = run
  path = export(model_dir, "keras", str(tmp_path / "m.keras"))
  with zipfile.ZipFile(path) as archive:
    config = archive.read("config.json").decode()
  assert "engine" not in config and "facetrain" not in config  # stock layers only
  loaded = keras.saving.load_model(path)
  np.testing.assert_allclose(loaded(pixels).numpy(), expected, atol=1e-4)
  labels = _labels(path)
  assert labels["class_names"] == ["0", "1", "2"] and labels["image_size"] == [32, 32]
  assert labels["task"] == "identity" and labels["output_kind"] == "softmax"


def test_saved_model_float_and_uint8_signatures(run, tmp_path):
  model_dir, pixels, expected = run
  path = export(model_dir, "saved_model", str(tmp_path / "sm"))
  loaded = tf.saved_model.load(path)
  outputs = loaded.signatures["serving_default"](pixels=tf.constant(pixels))
  np.testing.assert_allclose(outputs["logits"].numpy(), expected, atol=1e-4)
  np.testing.assert_allclose(outputs["probabilities"].numpy(), tf.nn.softmax(expected), atol=1e-5)
  as_uint8 = loaded.signatures["serving_uint8"](pixels=tf.constant(pixels.astype(np.uint8)))
  np.testing.assert_allclose(as_uint8["logits"].numpy(), expected, atol=1e-4)
  assert _labels(path)["format"] == "saved_model"


def test_tflite(run, tmp_path):
  model_dir, pixels, expected = run
  path = export(model_dir, "tflite", str(tmp_path / "m.tflite"))
  runner = tf.lite.Interpreter(model_path=path).get_signature_runner("serving_default")
  outputs = runner(pixels=pixels)
  np.testing.assert_allclose(outputs["logits"], expected, atol=1e-3)
  assert os.path.exists(labels_path(path))


def test_default_paths_do_not_clash(run):
  model_dir = run[0]
  keras_path = export(model_dir, "keras")
  assert keras_path == os.path.join(model_dir, "export", "model.keras")
  assert labels_path(keras_path).endswith("model.keras.labels.json")
  with pytest.raises(ValueError, match="unknown export format 'onnx'"):
    export(model_dir, "onnx")


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


@pytest.mark.slow  # a fresh interpreter importing TensorFlow: ~6 s
def test_artifacts_load_without_this_package(run, tmp_path):
  model_dir, pixels, expected = run
  paths = {f: export(model_dir, f, str(tmp_path / name))
           for f, name in [("keras", "m.keras"), ("saved_model", "sm")]}
  np.save(tmp_path / "pixels.npy", pixels)
  script = f"""
import json, sys
import numpy as np, keras, tensorflow as tf
pixels = np.load("pixels.npy")
from_keras = keras.saving.load_model({paths["keras"]!r})(pixels).numpy()
saved = tf.saved_model.load({paths["saved_model"]!r})
from_saved = saved.signatures["serving_default"](pixels=tf.constant(pixels))["logits"].numpy()
print(json.dumps({{"keras": from_keras.tolist(), "saved_model": from_saved.tolist(),
                  "engine_imported": any(m == "engine" or m.startswith("engine.")
                                         for m in sys.modules)}}))
"""
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  outputs = json.loads(result.stdout.strip().splitlines()[-1])
  assert outputs["engine_imported"] is False
  np.testing.assert_allclose(outputs["keras"], expected, atol=1e-4)
  np.testing.assert_allclose(outputs["saved_model"], expected, atol=1e-4)
