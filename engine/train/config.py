"""The trainer's typed configuration: one frozen ExperimentConfig per run."""

from __future__ import annotations

import dataclasses
import json
import typing

from engine.data.augment import AugmentConfig
from engine.data.pipeline import InputConfig
from engine.eval.metrics import MAX_CONFUSION_CLASSES
from engine.models.config import ModelConfig

OPTIMIZERS = ("adam", "adamw", "sgd", "adamax")
SCHEDULES = ("constant", "cosine", "step", "plateau")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
JIT_MODES = ("auto", "true", "false")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")
MONITOR_MODES = {"val_accuracy": "max", "val_f1_macro": "max", "val_auc": "max", "val_loss": "min"}
# What each task's validation reports (engine/train/evaluation.py): a multi-label run has
# no single F1 or AUC to monitor.
TASK_MONITORS = {"attribute": tuple(MONITOR_MODES), "identity": tuple(MONITOR_MODES),
                 "attributes": ("val_accuracy", "val_loss")}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """How to train; see `python -m launch.train --helpfull` for each field's meaning."""

  model_dir: str = "runs/default"
  epochs: int = 10
  train_steps: int = 0                 # > 0 overrides epochs
  optimizer: str = "adamw"
  learning_rate: float = 1e-3
  schedule: str = "cosine"
  warmup_epochs: float = 0.0
  step_decay_epochs: tuple[int, ...] = ()
  step_decay_factor: float = 0.1
  weight_decay: float = 0.0
  momentum: float = 0.9
  label_smoothing: float = 0.0
  grad_clip_norm: float = 0.0
  ema_decay: float = 0.0               # > 0 keeps an exponential moving average of the weights
  precision: str = "auto"
  jit_compile: str = "auto"
  strategy: str = "auto"
  cpu_devices: int = 0                 # > 1 splits the CPU into logical devices (mirrored on CPU)
  steps_per_loop: int = 20
  grad_accum_steps: int = 1
  gpu_memory_limit_mb: int = 0
  seed: int = 0
  deterministic: bool = False
  early_stopping_patience: int = 0     # evaluations without improvement; 0 = off
  plateau_patience: int = 2            # schedule=plateau: evaluations before the LR drops
  plateau_factor: float = 0.5
  monitor: str = "val_accuracy"
  checkpoint_every: int = 0            # steps; 0 = once per epoch
  keep_checkpoints: int = 3
  eval_every: int = 0                  # steps; 0 = once per epoch
  eval_flip: bool = False              # test-time augmentation: average with the mirrored image
  log_every: int = 0                   # steps between console/TensorBoard lines; 0 = steps_per_loop
  profile_steps: tuple[int, ...] = ()
  class_weighting: bool = False
  summary_images: int = 8

  def validate(self) -> "TrainConfig":
    _one_of("optimizer", self.optimizer, OPTIMIZERS)
    _one_of("schedule", self.schedule, SCHEDULES)
    _one_of("precision", self.precision, PRECISIONS)
    _one_of("jit_compile", self.jit_compile, JIT_MODES)
    _one_of("strategy", self.strategy, STRATEGIES)
    _one_of("monitor", self.monitor, tuple(MONITOR_MODES))
    for name in ("epochs", "train_steps", "checkpoint_every", "eval_every", "log_every",
                 "early_stopping_patience", "gpu_memory_limit_mb", "cpu_devices"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
    if not self.epochs and not self.train_steps:
      raise ValueError("set epochs or train_steps (both are 0)")
    if self.steps_per_loop < 1 or self.grad_accum_steps < 1:
      raise ValueError("steps_per_loop and grad_accum_steps must be >= 1")
    if self.learning_rate <= 0:
      raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
    if not 0.0 <= self.label_smoothing < 1.0 or not 0.0 <= self.ema_decay < 1.0:
      raise ValueError("label_smoothing and ema_decay must be in [0, 1)")
    if self.profile_steps and (len(self.profile_steps) != 2
                               or not 0 <= self.profile_steps[0] < self.profile_steps[1]):
      raise ValueError(f"profile_steps must be A,B with 0 <= A < B, got {self.profile_steps}")
    if self.strategy == "mirrored" and self.precision == "mixed_float16" and self.cpu_devices > 1:
      raise ValueError("precision=mixed_float16 needs a GPU; it contradicts strategy=mirrored "
                       "over logical CPU devices (use float32 or mixed_bfloat16)")
    if self.strategy == "one_device" and self.cpu_devices > 1:
      raise ValueError("strategy=one_device contradicts cpu_devices > 1 (use mirrored)")
    return self


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
  """Everything a run needs: written to model_dir/config.json before step 0."""

  input: InputConfig
  model: ModelConfig
  train: TrainConfig
  eval_split: str = "validation"

  def check_monitor(self, num_classes: int, eval_classes_present: int | None) -> None:
    """The monitored metric must be one the task reports on the eval split: checked before
    step 0 rather than found missing at the first evaluation.

    Args:
      num_classes: classes of the task (2 for a binary attribute).
      eval_classes_present: how many of them occur in the eval split (None: not known).

    Raises:
      ValueError: naming the monitor, the task and what it can monitor instead.
    """
    monitor, task = self.train.monitor, self.input.task
    allowed = TASK_MONITORS[task]
    if monitor not in allowed:
      raise ValueError(f"--monitor={monitor} is not reported by --task={task}; it reports "
                       f"{', '.join(allowed)}")
    if monitor != "val_auc":
      return
    if num_classes > MAX_CONFUSION_CLASSES or (eval_classes_present or 2) < 2:
      raise ValueError(f"--monitor=val_auc is undefined here: AUC needs 2 to "
                       f"{MAX_CONFUSION_CLASSES} classes occurring in split {self.eval_split!r} "
                       f"(the task has {num_classes}, the split holds "
                       f"{eval_classes_present if eval_classes_present is not None else 'some'}); "
                       "monitor val_accuracy or val_loss")

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

  @classmethod
  def from_dict(cls, d: dict) -> "ExperimentConfig":
    return cls(input=_from_dict(InputConfig, d["input"]), model=_from_dict(ModelConfig, d["model"]),
               train=_from_dict(TrainConfig, d["train"]), eval_split=d.get("eval_split", "validation"))


def _one_of(name: str, value: str, allowed: tuple[str, ...]) -> None:
  if value not in allowed:
    raise ValueError(f"unknown {name} {value!r}; known: {', '.join(allowed)}")


def _from_dict(cls, d: dict):
  """Rebuilds a (nested) frozen dataclass from its asdict(), turning lists back into tuples."""
  hints = typing.get_type_hints(cls)
  kwargs = {}
  for field in dataclasses.fields(cls):
    if field.name not in d:
      continue
    value, hint = d[field.name], hints[field.name]
    if hint is AugmentConfig:
      value = _from_dict(AugmentConfig, value)
    elif isinstance(value, list):
      value = tuple(value)
    kwargs[field.name] = value
  return cls(**kwargs)
