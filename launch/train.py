"""Train (or resume) a face classifier from flags or flagfiles.

  python -m launch.train --flagfile=resnet50.flags [--data_dir=... --model_dir=...]

Flagfiles live in configs/ (found there by name) and nest via --flagfile=configs/base.flags;
later flags override earlier ones. The resolved config goes to MODEL_DIR/config.json
before step 0; rerunning the same command resumes from the newest checkpoint.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags, logging

from launch import experiment_flags


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    config = experiment_flags.experiment_config_from_flags()
  except (ValueError, KeyError) as e:
    raise app.UsageError(str(e)) from None
  from engine.data.pipeline import read_manifest
  try:
    read_manifest(config.input.data_dir)
  except FileNotFoundError as e:  # the most common first-run mistake: say it plainly
    logging.error("%s", e)
    sys.exit(2)
  from engine.train import train  # TensorFlow starts here, after the flags are valid
  summary = train(config)
  print(json.dumps({k: summary[k] for k in ("step", "stopped_by", "final_metrics", "best")},
                   indent=2))
  print(f"\nTensorBoard: tensorboard --logdir {config.train.model_dir}")


def parse_flags(argv: list[str]) -> list[str]:
  return flags.FLAGS(experiment_flags.resolve_flagfile_args(argv))


if __name__ == "__main__":
  logging.set_verbosity(logging.INFO)
  app.run(main, flags_parser=parse_flags)
