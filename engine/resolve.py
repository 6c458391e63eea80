"""One resolve step: (a config from flags or code, the shards' manifest) -> the complete,
validated, immutable config of a run.

Everything that can be known before a model is built is decided and checked here, once:
each part's fields, that the parts agree (image size, seed, determinism), that the task
finds its labels in the shards and the splits exist, that the monitored metric is one the
task reports, the model's number of outputs, and the backbone and head names. The trainer
adds only what needs the device (`batch_size=auto`) and writes the result to the run
directory's config.json before step 0.
"""

from __future__ import annotations

import dataclasses

from engine.config import ConfigError, ExperimentConfig
from engine.data.manifest import read_manifest
from engine.models import BACKBONES, HEADS
from engine.tasks import TASKS


def read_run_manifest(config: ExperimentConfig) -> dict:
  """The manifest of the run's shards; ConfigError when there are none."""
  try:
    return read_manifest(config.input.data_dir)
  except FileNotFoundError as e:
    raise ConfigError(str(e)) from None


def resolve_experiment(config: ExperimentConfig, manifest: dict) -> ExperimentConfig:
  """Returns `config` completed against `manifest` (num_outputs), or raises.

  Raises:
    ConfigError: naming the field or flag at fault.
  """
  try:
    return _resolve(config, manifest)
  except KeyError as e:  # an unknown registry name; the message lists the known ones
    raise ConfigError(e.args[0]) from None
  except ConfigError:
    raise
  except ValueError as e:
    raise ConfigError(str(e)) from None


def _resolve(config: ExperimentConfig, manifest: dict) -> ExperimentConfig:
  config.validate()
  BACKBONES.get(config.model.backbone)
  HEADS.get(config.model.head)
  task = TASKS.get(config.input.task)
  for role, split in (("train", config.input.split), ("eval", config.eval_split)):
    if split not in manifest["splits"]:
      raise ValueError(f"{config.input.data_dir}: no {role} split {split!r}; has "
                       f"{sorted(manifest['splits'])}")
  classes = task.num_classes(manifest, config.input.label_attribute)
  counts = task.class_counts(manifest, config.input.label_attribute, config.eval_split)
  task.check_monitor(config.train.monitor, classes,
                     None if counts is None else sum(c > 0 for c in counts), config.eval_split)
  model = dataclasses.replace(config.model, num_outputs=task.num_outputs(classes)).validate()
  return dataclasses.replace(config, model=model)


def class_weights(config: ExperimentConfig, manifest: dict) -> tuple[float, ...] | None:
  """Per-class loss weights n / (K * n_c) of the train split, when the run asks for them."""
  if not config.train.class_weighting:
    return None
  counts = TASKS.get(config.input.task).class_counts(manifest, config.input.label_attribute,
                                                     config.input.split)
  if counts is None:
    raise ValueError(f"class_weighting: task {config.input.task} keeps no per-class counts")
  total = sum(counts)
  return tuple(total / (len(counts) * n) if n else 0.0 for n in counts)
