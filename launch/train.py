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

from launch import experiment_flags, usage


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    config = experiment_flags.experiment_config_from_flags()
  except (ValueError, KeyError) as e:
    usage.fail(e)
  summary = train_or_fail(config)
  print(json.dumps({k: summary[k] for k in ("step", "stopped_by", "final_metrics", "best")},
                   indent=2))
  print(f"\nTensorBoard: tensorboard --logdir {config.train.model_dir}")


def train_or_fail(config) -> dict:
  """Trains `config`. A configuration this machine or these shards cannot run is one line
  and exit code 2; a run that cannot go on, one line naming the cause and exit code 1."""
  # TensorFlow starts here, after the flags are valid (--help never imports it).
  from engine.data.manifest import ShardIntegrityError
  from engine.config import ConfigError
  from engine.run.checkpoint import CheckpointWriteError
  from engine.run.lock import RunLockedError
  from engine.run.run_dir import RunConfigMismatchError
  from engine.train import train
  from engine.train.hooks import NonFiniteLossError
  from engine.train.strategy import check_machine
  try:
    check_machine(config.train)
    return train(config)
  except ConfigError as e:
    usage.fail(e)
  except (ShardIntegrityError, RunConfigMismatchError, RunLockedError, NonFiniteLossError,
          CheckpointWriteError) as e:
    usage.fail(e, usage.EXIT_FAILED)


if __name__ == "__main__":
  logging.set_verbosity(logging.INFO)
  usage.run(main, expand_argv=experiment_flags.resolve_flagfile_args)
