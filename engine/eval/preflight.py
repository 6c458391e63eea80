"""What evaluation, prediction and export check before TensorFlow starts.

A model_dir that is not a run, a checkpoint it does not have, shards without the split,
an output path of the wrong kind: each is a question about files and flags. The launchers
ask it here before importing the engine (TensorFlow's import takes seconds), so the
mistake is answered at once. The engine functions ask the same functions again
(load_model through engine.run.locate, evaluate through read_split_manifest, export through
export_path, PredictConfig.validate through check_prediction_output), so a library caller
gets the same message.
"""

from __future__ import annotations

import os

from engine.config import ExperimentConfig
from engine.data.manifest import read_split_manifest
from engine.eval.artifact import export_path
from engine.run import locate

PREDICTION_OUTPUTS = (".csv", ".json")


def check_run(model_dir: str, checkpoint: str) -> ExperimentConfig:
  """The run's config, once its config.json and the named checkpoint are found."""
  config = locate.read_config(model_dir)
  locate.resolve_checkpoint(model_dir, checkpoint)
  return config


def check_evaluation(model_dir: str, checkpoint: str, data_dir: str | None, split: str) -> None:
  """The run, its checkpoint, and the split in data_dir (default: the run's own shards)."""
  config = check_run(model_dir, checkpoint)
  read_split_manifest(data_dir or config.input.data_dir, split)


def check_prediction_output(output: str | None) -> None:
  if output and os.path.splitext(output)[1].lower() not in PREDICTION_OUTPUTS:
    raise ValueError(f"{output}: output must end in {' or '.join(PREDICTION_OUTPUTS)}")


def check_prediction(model_dir: str | None, checkpoint: str, output: str | None) -> None:
  """The output path's kind, and the run and checkpoint (an exported model is checked by
  its runtime when it loads)."""
  check_prediction_output(output)
  if model_dir:
    check_run(model_dir, checkpoint)


def check_export(model_dir: str, checkpoint: str, format: str,  # noqa: A002
                 output_path: str | None) -> None:
  export_path(model_dir, format, output_path)
  check_run(model_dir, checkpoint)
