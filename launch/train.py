"""Train (or resume) a face classifier from flags or flagfiles.

  python -m launch.train --flagfile=resnet50.flags [--data_dir=... --model_dir=...]

Flagfiles live in configs/ (found there by name) and nest via --flagfile=configs/base.flags;
later flags override earlier ones. The resolved config goes to MODEL_DIR/config.json
before step 0; rerunning the same command resumes from the newest checkpoint.
A mistake in the flags (an unknown flag, a missing flagfile or shard directory, a
combination this machine cannot run) is one line on stderr and exit code 2. A run that
cannot go on (another trainer holds model_dir, model_dir holds another configuration,
a shard differs from its manifest or holds a corrupt record, a NaN loss, a checkpoint
that cannot be written) ends with one line naming the cause and exit code 1; its last
checkpoint stays as it was.
"""

from __future__ import annotations

import json

from absl import app, logging

from engine.data.integrity import ShardIntegrityError
from engine.data.pipeline import read_manifest
from engine.train import train
from engine.train.checkpoint import CheckpointWriteError
from engine.train.hooks import NonFiniteLossError
from engine.train.run_dir import RunConfigMismatchError
from engine.train.run_lock import RunLockedError
from launch import experiment_flags, usage


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    config = experiment_flags.experiment_config_from_flags()
    read_manifest(config.input.data_dir)  # the most common first-run mistake
    experiment_flags.check_machine(config.train)
  except (ValueError, KeyError, FileNotFoundError) as e:
    usage.fail(e)
  summary = train(config)
  print(json.dumps({k: summary[k] for k in ("step", "stopped_by", "final_metrics", "best")},
                   indent=2))
  print(f"\nTensorBoard: tensorboard --logdir {config.train.model_dir}")


if __name__ == "__main__":
  logging.set_verbosity(logging.INFO)
  usage.run(main, expand_argv=experiment_flags.resolve_flagfile_args,
            run_errors=(RunLockedError, RunConfigMismatchError, ShardIntegrityError,
                        NonFiniteLossError, CheckpointWriteError))
