"""The embedded default job, end to end on a fresh clone with no data:

  python -m launch.quickstart [--work_dir=DIR] [--num_train=1600] [--num_eval=200]
      [any launch.train flag, e.g. --epochs=1 --backbone=tiny_resnet]

synthetic CelebA-format faces (real JPEGs with a learnable gender signal) -> shards ->
training with configs/quickstart.flags, parsed exactly as `python -m launch.train
--flagfile=quickstart.flags` parses it (training flags given here override the recipe,
as they would there) -> evaluation on the test split -> TensorBoard logs.
Everything goes under the recipe's runs/quickstart/ (celeba/, shards/, model/), or under
--work_dir. Rerunning resumes or reuses what is already there.
"""

from __future__ import annotations

import os

from absl import app, flags, logging

from launch import experiment_flags, usage
from launch.train import train_or_fail

RECIPE = os.path.join(experiment_flags.CONFIG_DIR, "quickstart.flags")
FLAGS = flags.FLAGS

_WORK_DIR = flags.DEFINE_string("work_dir", None, "Put the data, shards and run in "
                                "WORK_DIR/celeba, /shards and /model instead of the recipe's "
                                "--data_dir and --model_dir (runs/quickstart/...).")
_NUM_TRAIN = flags.DEFINE_integer("num_train", 1600, "Synthetic training faces.")
_NUM_EVAL = flags.DEFINE_integer("num_eval", 200, "Synthetic validation and test faces, each.")


def recipe_first(argv: list[str]) -> list[str]:
  """The recipe, then the command line: launch.train's override order."""
  names = {arg.split("=", 1)[0] for arg in argv[1:]}
  if "--work_dir" in names and names & {"--data_dir", "--model_dir"}:
    usage.fail("--work_dir sets --data_dir and --model_dir; give one or the others")
  return experiment_flags.resolve_flagfile_args([argv[0], f"--flagfile={RECIPE}", *argv[1:]])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if _WORK_DIR.value:
    FLAGS.data_dir = os.path.join(_WORK_DIR.value, "shards")
    FLAGS.model_dir = os.path.join(_WORK_DIR.value, "model")
  # TensorFlow starts here, after the flags are valid.
  from engine.data.sharding import ShardConfig, shard_dataset
  from engine.data.synthetic import SyntheticConfig, write_synthetic_celeba
  from engine.eval.evaluate import EvalConfig, evaluate
  from engine.train.strategy import check_machine
  try:
    config = experiment_flags.experiment_config_from_flags()
    check_machine(config.train)  # before any data is written
  except (ValueError, KeyError) as e:
    usage.fail(e)
  shards_dir, model_dir = config.input.data_dir, config.train.model_dir
  celeba_dir = os.path.join(os.path.dirname(os.path.normpath(shards_dir)), "celeba")
  if not os.path.exists(os.path.join(celeba_dir, "list_attr_celeba.txt")):
    logging.info("writing synthetic CelebA-format faces to %s", celeba_dir)
    write_synthetic_celeba(SyntheticConfig(
        celeba_dir, image_size=(109, 89), num_identities=200, seed=config.train.seed,
        num_examples={"train": _NUM_TRAIN.value, "validation": _NUM_EVAL.value,
                      "test": _NUM_EVAL.value}))
  shard_dataset(ShardConfig("celeba", celeba_dir, shards_dir, num_shards=8))
  summary = train_or_fail(config)
  print(f"\ntrained {summary['step']} steps ({summary['stopped_by']}); best validation "
        f"{config.train.monitor} {summary['best']['best']:.4f} at step {summary['best']['best_step']}")
  evaluate(EvalConfig(model_dir, split="test",
                      output_json=os.path.join(model_dir, "eval_test", "report.json")))
  print(f"\nTensorBoard: tensorboard --logdir {model_dir}")


if __name__ == "__main__":
  usage.run(main, expand_argv=recipe_first)
