"""The one resolve step: a config and the shards' manifest -> a complete config, or one error."""

from __future__ import annotations

import dataclasses

import pytest

from engine.data.manifest import read_manifest
from engine.config import ConfigError, ExperimentConfig, InputConfig, ModelConfig, TrainConfig
from engine.resolve import read_run_manifest, resolve_experiment


def _config(shards: str, task: str = "attribute", **train) -> ExperimentConfig:
  return ExperimentConfig(InputConfig(shards, task=task, image_size=(32, 32)),
                          ModelConfig("tiny_resnet", image_size=(32, 32)), TrainConfig(**train))


@pytest.mark.parametrize("task, outputs", [("attribute", 1), ("attributes", 4)])
def test_the_task_sets_the_model_outputs(celeba_shards, task, outputs):
  resolved = resolve_experiment(_config(celeba_shards, task, monitor="val_loss"),
                                read_manifest(celeba_shards))
  assert resolved.model.num_outputs == outputs
  assert resolve_experiment(resolved, read_manifest(celeba_shards)) == resolved  # idempotent


@pytest.mark.parametrize("change, message", [
    (lambda c: dataclasses.replace(c, model=dataclasses.replace(c.model, backbone="resnet9000")),
     "unknown backbone 'resnet9000'; known: "),
    (lambda c: dataclasses.replace(c, model=dataclasses.replace(c.model, image_size=(48, 48))),
     r"image_size: the input pipeline has \(32, 32\), the model \(48, 48\)"),
    (lambda c: dataclasses.replace(c, eval_split="tset"), "no eval split 'tset'"),
    (lambda c: dataclasses.replace(c, input=dataclasses.replace(c.input, task="age")),
     "unknown task 'age'; known: attribute, attributes, identity"),
    (lambda c: dataclasses.replace(c, input=dataclasses.replace(c.input,
                                                                label_attribute="Beard")),
     "unknown attribute 'Beard'"),
    (lambda c: dataclasses.replace(c, train=dataclasses.replace(c.train, seed=3)),
     "seed: the input pipeline has 0, the trainer 3"),
])
def test_what_cannot_run_is_one_config_error(celeba_shards, change, message):
  with pytest.raises(ConfigError, match=message):
    resolve_experiment(change(_config(celeba_shards)), read_manifest(celeba_shards))


def test_missing_shards_are_a_config_error(tmp_path):
  with pytest.raises(ConfigError, match="shard the data first"):
    read_run_manifest(_config(str(tmp_path)))
