"""The embedded default job, end to end on a fresh clone with no data:

  python -m launch.quickstart [--work_dir=runs/quickstart] [--epochs=3]

synthetic CelebA-format faces (real JPEGs with a learnable gender signal) -> shards ->
a small ResNet18 trained for a few minutes on a CPU (configs/quickstart.flags is the
same recipe for launch.train) -> evaluation on the test split -> TensorBoard logs.
Rerunning resumes or reuses what is already there.
"""

from __future__ import annotations

import os

from absl import app, flags, logging

from engine.data.augment import AugmentConfig
from engine.data.pipeline import InputConfig
from engine.data.sharding import ShardConfig, shard_dataset
from engine.data.synthetic import SyntheticConfig, write_synthetic_celeba
from engine.models import ModelConfig
from engine.train.config import ExperimentConfig, TrainConfig

_WORK_DIR = flags.DEFINE_string("work_dir", "runs/quickstart", "Where data, shards and the run go.")
_NUM_TRAIN = flags.DEFINE_integer("num_train", 1600, "Synthetic training faces.")
_NUM_EVAL = flags.DEFINE_integer("num_eval", 200, "Synthetic validation and test faces, each.")
_EPOCHS = flags.DEFINE_integer("epochs", 3, "Training epochs.")
_BACKBONE = flags.DEFINE_string("backbone", "resnet18", "Backbone to train.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the data and the run.")


def main(argv: list[str]) -> None:
  del argv
  celeba_dir = os.path.join(_WORK_DIR.value, "celeba")
  if not os.path.exists(os.path.join(celeba_dir, "list_attr_celeba.txt")):
    logging.info("writing synthetic CelebA-format faces to %s", celeba_dir)
    write_synthetic_celeba(SyntheticConfig(
        celeba_dir, image_size=(109, 89), num_identities=200, seed=_SEED.value,
        num_examples={"train": _NUM_TRAIN.value, "validation": _NUM_EVAL.value,
                      "test": _NUM_EVAL.value}))
  shards_dir = os.path.join(_WORK_DIR.value, "shards")
  shard_dataset(ShardConfig("celeba", celeba_dir, shards_dir, num_shards=8))

  from engine.eval.evaluate import EvalConfig, evaluate  # TensorFlow starts here
  from engine.train import train
  model_dir = os.path.join(_WORK_DIR.value, "model")
  size = (64, 64)
  config = ExperimentConfig(
      input=InputConfig(shards_dir, image_size=size, global_batch_size=32, seed=_SEED.value,
                        augment=AugmentConfig(flip=True, zoom=0.1, translate=0.08)),
      model=ModelConfig(_BACKBONE.value, image_size=size),
      train=TrainConfig(model_dir=model_dir, epochs=_EPOCHS.value, optimizer="adamw",
                        learning_rate=2e-3, weight_decay=0.05, schedule="cosine",
                        steps_per_loop=10, seed=_SEED.value))
  summary = train(config)
  print(f"\ntrained {summary['step']} steps ({summary['stopped_by']}); best validation "
        f"{config.train.monitor} {summary['best']['best']:.4f} at step {summary['best']['best_step']}")
  evaluate(EvalConfig(model_dir, split="test",
                      output_json=os.path.join(model_dir, "eval_test", "report.json")))
  print(f"\nTensorBoard: tensorboard --logdir {model_dir}")


if __name__ == "__main__":
  app.run(main)
