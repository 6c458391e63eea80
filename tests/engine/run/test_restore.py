"""load_model: every way of naming a checkpoint gives exactly the saved weights, or an error."""

from __future__ import annotations

import dataclasses
import json
import os

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from engine.config import ExperimentConfig, InputConfig, ModelConfig, TrainConfig
from engine.models import build_model
from engine.models.matmul_conv import MatmulGradConv2D
from engine.run.checkpoint import RunCheckpoint, VariableList
from engine.run.restore import CheckpointMismatchError, load_model
from engine.train.task import WeightAverage

_PIXELS = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")


def _experiment(model_dir: str, head: str = "linear", backbone: str = "tiny_resnet",
                ema_decay: float = 0.0) -> ExperimentConfig:
  return ExperimentConfig(
      input=InputConfig("unused", image_size=(32, 32)),
      model=ModelConfig(backbone, head=head, image_size=(32, 32), num_outputs=1),
      train=TrainConfig(model_dir=model_dir, ema_decay=ema_decay))


def _perturbed_model(config: ExperimentConfig, seed: int) -> keras.Model:
  """The configured model with every variable (BN statistics included) set to random values,
  so that a restore which leaves anything at its initial value shows in the logits."""
  model = build_model(config.model)
  rng = np.random.default_rng(seed)
  for variable in model.weights:
    noise = rng.normal(0.0, 0.1, variable.shape).astype("float32")
    if "moving_variance" in variable.path:
      noise = np.abs(noise) + 0.5
    variable.assign(noise)
  return model


def _write_run(model_dir: str, config: ExperimentConfig, model: keras.Model, step: int,
               ema: WeightAverage | None = None) -> str:
  """Saves as the trainer does (RunCheckpoint + config.json); returns the checkpoint prefix."""
  os.makedirs(model_dir, exist_ok=True)
  with open(os.path.join(model_dir, "config.json"), "w") as f:
    f.write(config.to_json())
  optimizer = keras.optimizers.Adam()
  optimizer.build(model.trainable_variables)
  checkpoint = RunCheckpoint(os.path.join(model_dir, "checkpoints"), model, optimizer.variables,
                             ema.shadows_by_name() if ema else None)
  return checkpoint.save(step, {})


def _logits(model: keras.Model) -> np.ndarray:
  return model(_PIXELS, training=False).numpy()


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
  """A run directory with checkpoints at steps 5 and 9 (EMA kept) and a best weights file;
  returns (model_dir, {name of the weights: the logits they must give})."""
  model_dir = str(tmp_path_factory.mktemp("run"))
  config = _experiment(model_dir, ema_decay=0.9)
  model = _perturbed_model(config, seed=1)
  ema = WeightAverage(model, 0.9)
  expected = {}
  for step in (5, 9):
    for shadow in ema.shadows:  # averages unlike the weights, as after real training
      shadow.assign(shadow + 0.05 * step)
    prefix = _write_run(model_dir, config, model, step, ema)
    ema.swap()
    expected[step] = _logits(model)  # what evaluation saw: the averages + the BN statistics
    if step == 5:
      os.makedirs(os.path.join(model_dir, "best"))
      model.save_weights(os.path.join(model_dir, "best", "model.weights.h5"))
      with open(os.path.join(model_dir, "best", "metrics.json"), "w") as f:
        json.dump({"step": 5}, f)
    ema.swap()
    expected[f"prefix{step}"] = prefix
  return model_dir, expected


@pytest.mark.parametrize("name, step", [("best", 5), ("latest", 9), ("5", 5), ("9", 9),
                                        ("prefix5", 5), ("weights_file", 5)])
def test_every_way_of_naming_a_checkpoint_restores_it_exactly(saved_run, name, step):
  model_dir, expected = saved_run
  checkpoint = {"prefix5": expected["prefix5"],
                "weights_file": os.path.join(model_dir, "best", "model.weights.h5")}.get(name, name)
  model, _, source = load_model(model_dir, checkpoint)
  np.testing.assert_array_equal(_logits(model), expected[step])  # bit-exact in float32
  assert source.step == step and source.ema


def test_latest_differs_from_an_untrained_model(saved_run):
  model_dir, expected = saved_run
  fresh = build_model(_experiment(model_dir).model)
  assert not np.allclose(_logits(fresh), expected[9], atol=1e-3)


def test_checkpoint_without_ema_restores_the_trained_weights(tmp_path):
  config = _experiment(str(tmp_path))
  model = _perturbed_model(config, seed=2)
  _write_run(str(tmp_path), config, model, 3)
  restored, _, source = load_model(str(tmp_path), "latest")
  np.testing.assert_array_equal(_logits(restored), _logits(model))
  assert source.step == 3 and not source.ema


@pytest.mark.parametrize("other", [dict(head="deep"), dict(backbone="vgg11")])
def test_a_checkpoint_of_another_model_is_refused_naming_the_mismatch(tmp_path, other):
  writer_dir, reader_dir = str(tmp_path / "writer"), str(tmp_path / "reader")
  writer = _experiment(writer_dir, **other)
  prefix = _write_run(writer_dir, writer, _perturbed_model(writer, seed=3), 4)
  reader = _experiment(reader_dir)
  os.makedirs(reader_dir)
  with open(os.path.join(reader_dir, "config.json"), "w") as f:
    f.write(reader.to_json())
  with pytest.raises(CheckpointMismatchError, match=r"missing from it \(.*/|does not have \("):
    load_model(reader_dir, prefix)


@pytest.mark.slow  # two ResNet50s (~10 s)
def test_a_resnet50_checkpoint_with_conv_biases_before_bn_is_refused_naming_them(tmp_path):
  # Written as before issue 17: from-scratch ResNet50 convs had biases (the stock Keras
  # layout, which batch_norm="keras" still builds); today's fused build has none.
  writer_dir, reader_dir = str(tmp_path / "writer"), str(tmp_path / "reader")
  writer = dataclasses.replace(_experiment(writer_dir, backbone="resnet50"), model=ModelConfig(
      "resnet50", head="linear", image_size=(32, 32), num_outputs=1, batch_norm="keras"))
  prefix = _write_run(writer_dir, writer, build_model(writer.model), 2)
  reader = _experiment(reader_dir, backbone="resnet50")
  os.makedirs(reader_dir)
  with open(os.path.join(reader_dir, "config.json"), "w") as f:
    f.write(reader.to_json())
  with pytest.raises(CheckpointMismatchError, match=r"53 variables the model does not have "
                     r"\(resnet50/conv1_conv/bias.*since issue 17"):
    load_model(reader_dir, prefix)


def test_a_weights_file_of_another_head_is_refused(tmp_path):
  config = _experiment(str(tmp_path))
  os.makedirs(tmp_path / "best")
  with open(tmp_path / "config.json", "w") as f:
    f.write(config.to_json())
  other = build_model(dataclasses.replace(config.model, head="deep"))
  other.save_weights(str(tmp_path / "other.weights.h5"))
  with pytest.raises(CheckpointMismatchError, match="other.weights.h5"):
    load_model(str(tmp_path), str(tmp_path / "other.weights.h5"))


def test_a_shape_mismatch_names_the_variable(tmp_path):
  wide = _experiment(str(tmp_path / "wide"))
  wide = dataclasses.replace(wide, model=dataclasses.replace(wide.model, num_outputs=3))
  prefix = _write_run(str(tmp_path / "wide"), wide, _perturbed_model(wide, seed=4), 2)
  narrow = _experiment(str(tmp_path / "narrow"))
  os.makedirs(tmp_path / "narrow")
  with open(tmp_path / "narrow" / "config.json", "w") as f:
    f.write(narrow.to_json())
  with pytest.raises(CheckpointMismatchError, match=r"logits/kernel has shape \(16, 3\)"):
    load_model(str(tmp_path / "narrow"), prefix)


@pytest.mark.parametrize("checkpoint, message", [
    ("best", "no best checkpoint yet.*steps 3"),
    ("17", "ckpt-17: no such checkpoint.*steps 3"),
    ("nowhere/ckpt-1", "no such checkpoint"),
    ("nowhere.weights.h5", "weights file not found"),
])
def test_a_missing_checkpoint_says_which_exist(tmp_path, checkpoint, message):
  config = _experiment(str(tmp_path))
  _write_run(str(tmp_path), config, _perturbed_model(config, seed=5), 3)
  with pytest.raises(FileNotFoundError, match=message):
    load_model(str(tmp_path), checkpoint)


def test_checkpoints_written_before_names_still_load(tmp_path):
  """The first trainer saved model.variables and the EMA of the trainable weights as lists."""
  config = _experiment(str(tmp_path), ema_decay=0.9)
  model = _perturbed_model(config, seed=6)
  averages = [tf.Variable(v.value + 0.25) for v in model.trainable_variables]
  with open(tmp_path / "config.json", "w") as f:
    f.write(config.to_json())
  legacy = tf.train.Checkpoint(model=VariableList(model.variables), ema=VariableList(averages),
                               step=tf.Variable(11, dtype=tf.int64))
  prefix = legacy.write(str(tmp_path / "checkpoints" / "ckpt-11"))
  for variable, average in zip(model.trainable_variables, averages):
    variable.assign(average)
  restored, _, source = load_model(str(tmp_path), prefix)
  np.testing.assert_array_equal(_logits(restored), _logits(model))
  assert source.step == 11 and source.ema


def test_a_weights_file_saved_with_stock_conv2d_layers_still_loads(tmp_path):
  """Runs saved before the conv layers became MatmulGradConv2D filed them as Keras files
  stock Conv2D layers: "conv2d", "conv2d_1", ... in layer order."""
  config = _experiment(str(tmp_path))
  with open(tmp_path / "config.json", "w") as f:
    f.write(config.to_json())
  model = _perturbed_model(config, seed=3)
  path = str(tmp_path / "old.weights.h5")
  model.save_weights(path)
  with h5py.File(path, "r+") as f:
    convs = []
    f.visit(lambda name: convs.append(name) if name.rsplit("/", 1)[-1].startswith(
        "matmul_grad_conv2d") else None)
    assert len(convs) > 3 and not any("/conv2d" in name for name in convs)
    for name in convs:
      parent, leaf = name.rsplit("/", 1)
      f[parent].move(leaf, leaf.replace("matmul_grad_conv2d", "conv2d"))
  restored, _, _ = load_model(str(tmp_path), path)
  np.testing.assert_array_equal(_logits(restored), _logits(model))
  assert MatmulGradConv2D.__name__ == "MatmulGradConv2D"  # the class name is put back
