"""Flagfiles: nesting, override order, lookup in configs/, and the shipped recipes parse."""

from __future__ import annotations

import dataclasses
import glob
import os
import re

import pytest
from absl import flags

from launch import experiment_flags

FLAGS = flags.FLAGS


@pytest.fixture
def parse():
  def _parse(*args):
    FLAGS.unparse_flags()
    FLAGS(["train", *experiment_flags.resolve_flagfile_args(list(args))])
    return experiment_flags.experiment_config_from_flags()
  yield _parse
  FLAGS.unparse_flags()


def test_nested_flagfiles_apply_in_order_and_the_command_line_wins(parse, tmp_path):
  base = tmp_path / "base.flags"
  base.write_text("--data_dir=/data/a\n--learning_rate=0.1\n--epochs=7\n--backbone=vgg11\n")
  recipe = tmp_path / "recipe.flags"
  recipe.write_text(f"--flagfile={base}\n--learning_rate=0.2\n--image_size=96\n")
  config = parse(f"--flagfile={recipe}", "--epochs=3")
  assert config.train.learning_rate == 0.2  # recipe over base
  assert config.train.epochs == 3  # command line over both
  assert config.model.backbone == "vgg11" and config.input.data_dir == "/data/a"
  assert config.model.image_size == (96, 96) == config.input.image_size


def test_recipes_are_found_by_name_from_configs():
  args = experiment_flags.resolve_flagfile_args(["--flagfile=resnet50.flags", "--epochs=1"])
  assert args[0] == f"--flagfile={os.path.join(experiment_flags.CONFIG_DIR, 'resnet50.flags')}"
  assert args[1] == "--epochs=1"


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(experiment_flags.CONFIG_DIR,
                                                               "*.flags"))))
def test_every_shipped_flagfile_parses_into_a_valid_config(parse, path):
  config = parse(f"--flagfile={os.path.basename(path)}")
  assert config.input.data_dir and config.train.model_dir


def test_batch_size_auto_and_bad_values(parse):
  assert parse("--data_dir=/d", "--batch_size=auto").input.global_batch_size == 0
  with pytest.raises(ValueError, match="batch_size"):
    parse("--data_dir=/d", "--batch_size=-3")
  with pytest.raises(ValueError, match="data_dir"):
    parse()
  # Registry names are checked against the registries when the run resolves
  # (tests/engine/test_resolve.py), after the flags.
  assert parse("--data_dir=/d", "--backbone=resnet9000").model.backbone == "resnet9000"


@pytest.mark.parametrize("train_flags, machine, message", [
    (["--precision=mixed_float16"], {"gpu": False, "cpu": {"avx512_bf16"}}, "needs a GPU"),
    (["--precision=mixed_float16"], {"gpu": False, "cpu": {"amx_fp16"}}, None),
    (["--precision=mixed_float16"], {"gpu": True, "cpu": set()}, None),
    (["--strategy=mirrored", "--cpu_devices=1"], {"gpu": False, "cpu": set()},
     "--cpu_devices=2 or more"),
    (["--strategy=mirrored"], {"gpu": False, "cpu": set()}, "--cpu_devices=0 gives one replica"),
    (["--strategy=mirrored", "--cpu_devices=2"], {"gpu": False, "cpu": set()}, None),
    (["--strategy=mirrored", "--cpu_devices=1"], {"gpu": True, "cpu": set()}, None),
])
def test_check_machine(parse, monkeypatch, train_flags, machine, message):
  """What this machine cannot run is refused before the run starts, naming the flag."""
  config = parse("--data_dir=/d", *train_flags)
  from engine.train import strategy
  monkeypatch.setattr(strategy, "cpu_flags", lambda: machine["cpu"])
  monkeypatch.setattr(strategy.tf.config, "list_physical_devices",
                      lambda kind=None: ["/physical_device:GPU:0"] if machine["gpu"] else [])
  if message is None:
    strategy.check_machine(config.train)
  else:
    with pytest.raises(ValueError, match=re.escape(message)):
      strategy.check_machine(config.train)


def test_help_answers_without_importing_tensorflow():
  """The flags and configs are plain Python: --helpfull never starts TensorFlow."""
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  result = subprocess.run([sys.executable, "-X", "importtime", "-m", "launch.train",
                           "--helpfull"], cwd=root, capture_output=True, text=True, timeout=60)
  assert "--backbone" in result.stdout, result.stderr[-2000:]  # absl's help exits with 1
  imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()}
  assert "tensorflow" not in imported and "keras" not in imported


def test_a_recipe_variant_parses_on_top_and_leaves_the_flags_as_they_were(parse):
  config = parse("--flagfile=celeba_dev.flags", "--data_dir=/data/a")
  variant = experiment_flags.experiment_config_with(["--zoom_range=0.8,1.2", "--noflip",
                                                     "--epochs=3"])
  assert (variant.input.augment.zoom_range, variant.input.augment.flip) == ((0.8, 1.2), False)
  assert variant.train.epochs == 3 and variant.input.data_dir == "/data/a"
  assert dataclasses.replace(variant, input=config.input, train=config.train) == config
  assert experiment_flags.experiment_config_from_flags() == config  # flags put back
  with pytest.raises(ValueError, match="not flags: zoom=0.3"):
    experiment_flags.experiment_config_with(["zoom=0.3"])
  # The recipe's zoom is a range (its bounds are the flagfile's, chosen by cross-validation);
  # --zoom_range= clears it for the float form.
  assert config.input.augment.zoom_range and \
      config.input.augment.zoom_bounds == tuple(config.input.augment.zoom_range)
  narrow = experiment_flags.experiment_config_with(["--zoom_range=", "--zoom=0.1"])
  assert narrow.input.augment.zoom_bounds == (0.9, 1.1)
  with pytest.raises(ValueError, match="both set the zoom"):
    experiment_flags.experiment_config_with(["--zoom=0.3"])
