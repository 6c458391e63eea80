"""The trainer: `train(ExperimentConfig)`; see docs/DESIGN.md for the run directory."""

from engine.config import ExperimentConfig


def train(config: ExperimentConfig) -> dict:
  """Trains or resumes the run (imported lazily: TensorFlow starts only when called)."""
  from engine.train.loop import train as _train
  return _train(config)


__all__ = ["train"]
