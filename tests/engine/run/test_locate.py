"""A run's checkpoints found without TensorFlow agree with TensorFlow's own answer."""

import os
import subprocess
import sys

import pytest
import tensorflow as tf

from engine.run import locate

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _manager_checkpoints(directory: str, steps: list[int]) -> None:
  """What the trainer's tf.train.CheckpointManager leaves: the last 3 of `steps`."""
  checkpoint = tf.train.Checkpoint(step=tf.Variable(0, dtype=tf.int64))
  manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=3)
  for step in steps:
    checkpoint.step.assign(step)
    manager.save(checkpoint_number=step)


def test_latest_and_kept_checkpoints_are_tensorflows(tmp_path):
  directory = str(tmp_path / "checkpoints")
  assert locate.latest_checkpoint(directory) is None and locate.kept_checkpoints(directory) == []
  _manager_checkpoints(directory, [21, 42, 63, 84])
  state = tf.train.get_checkpoint_state(directory)
  assert locate.kept_checkpoints(directory) == list(state.all_model_checkpoint_paths)
  assert [p.rsplit("-", 1)[1] for p in locate.kept_checkpoints(directory)] == ["42", "63", "84"]
  assert locate.latest_checkpoint(directory) == tf.train.latest_checkpoint(directory)
  assert locate.resolve_checkpoint(str(tmp_path), "latest") == ("tf", f"{directory}/ckpt-84")
  assert locate.resolve_checkpoint(str(tmp_path), "63") == ("tf", f"{directory}/ckpt-63")
  with pytest.raises(FileNotFoundError, match=r"ckpt-21: no such checkpoint.*steps 42, 63, 84"):
    locate.resolve_checkpoint(str(tmp_path), "21")
  with pytest.raises(FileNotFoundError, match=r"no best checkpoint yet.*steps 42, 63, 84"):
    locate.resolve_checkpoint(str(tmp_path), "best")
  # The state names a checkpoint whose index is gone: no latest, as TensorFlow says.
  os.remove(f"{directory}/ckpt-84.index")
  assert tf.train.latest_checkpoint(directory) is None
  assert locate.latest_checkpoint(directory) is None
  with pytest.raises(FileNotFoundError, match="no training checkpoint yet"):
    locate.resolve_checkpoint(str(tmp_path), "latest")


def test_an_explicit_checkpoint_on_another_filesystem(tmp_path):
  # ram:// is TensorFlow's in-memory filesystem, standing in for gs:// or s3://.
  prefix = f"ram://{tmp_path.name}/ckpt-7"
  assert not os.path.exists(f"{prefix}.index")
  with pytest.raises(FileNotFoundError, match="no such checkpoint"):
    locate.resolve_checkpoint(str(tmp_path), prefix)
  with tf.io.gfile.GFile(f"{prefix}.index", "w") as f:
    f.write("")
  assert locate.resolve_checkpoint(str(tmp_path), prefix) == ("tf", prefix)
  weights = f"ram://{tmp_path.name}/model.weights.h5"
  with pytest.raises(FileNotFoundError, match="weights file not found"):
    locate.resolve_checkpoint(str(tmp_path), weights)
  with tf.io.gfile.GFile(weights, "w") as f:
    f.write("")
  assert locate.resolve_checkpoint(str(tmp_path), weights) == ("h5", weights)


def test_a_directory_without_config_is_not_a_run(tmp_path):
  with pytest.raises(FileNotFoundError, match=rf"{tmp_path}/config.json: missing; is {tmp_path} "
                     "a training run directory"):
    locate.read_config(str(tmp_path))


def test_it_loads_without_tensorflow():
  code = ("import sys; import engine.run.locate, engine.eval.preflight; "
          "print('tensorflow' in sys.modules)")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, check=True, env=dict(os.environ, PYTHONPATH=REPO))
  assert result.stdout == "False\n"
