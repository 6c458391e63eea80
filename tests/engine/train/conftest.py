"""A tiny trained run shared by the trainer tests (tiny_resnet, 32 px, a few epochs)."""

from __future__ import annotations

import dataclasses

import pytest

from engine.config import AugmentConfig, ExperimentConfig, InputConfig, ModelConfig, TrainConfig


def tiny_experiment(shards: str, model_dir: str, **train_overrides) -> ExperimentConfig:
  """tiny_resnet on the synthetic shards: 96 train faces, batch 8 -> 12 steps per epoch."""
  train = dict(model_dir=model_dir, epochs=3, learning_rate=3e-3, steps_per_loop=4,
               precision="float32", summary_images=2)
  train.update(train_overrides)
  return ExperimentConfig(
      input=InputConfig(shards, image_size=(32, 32), global_batch_size=8,
                        augment=AugmentConfig(flip=True)),
      model=ModelConfig("tiny_resnet", image_size=(32, 32)),
      train=TrainConfig(**train))


@pytest.fixture(scope="module")
def trained_run(celeba_shards, tmp_path_factory):
  """(config, summary) of one finished 3-epoch run."""
  from engine.train import train
  config = tiny_experiment(celeba_shards, str(tmp_path_factory.mktemp("run") / "model"))
  summary = train(config)
  return dataclasses.replace(config), summary
