"""The campaign's shared ground: its options, tiny data, one reference run, the commands.

Every scenario trains the same tiny, bit-exact configuration (tiny_resnet at 32 px, batch 8,
float32, deterministic, one step per host call, a progress line per step, a checkpoint
every CHECKPOINT_EVERY steps), so one uninterrupted run, trained once, is the reference
that every interrupted run must end equal to, and the model that evaluation and
prediction scenarios load.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from typing import Callable, Sequence

from engine.bench.faults import process
from engine.bench.faults.process import ProcessResult, Watched

CHECKPOINT_EVERY = 2
# Random augmentation, an EMA and a schedule: state an exact resume has to restore.
TRAIN_FLAGS = ("--backbone=tiny_resnet", "--image_size=32", "--batch_size=8", "--epochs=2",
               "--precision=float32", "--learning_rate=3e-3", "--deterministic",
               "--steps_per_loop=1", "--log_every=1", f"--checkpoint_every={CHECKPOINT_EVERY}",
               "--flip", "--rotation=10", "--zoom=0.1", "--ema_decay=0.9", "--schedule=cosine")
TRAIN_SHARDS = 4


@dataclasses.dataclass(frozen=True)
class FaultsConfig:
  """What the campaign runs.

  Attributes:
    work_dir: where data, runs and scenario files go; None: a temporary directory,
      removed at the end.
    only: scenario names to run (empty: all, in the issue's order).
    kills: how many kill -9s the random-step scenario makes.
    seed: draws the kill steps.
    timeout_s: the longest any one process may run before it is killed.
    output_json: also write every row here.
  """

  work_dir: str | None = None
  only: tuple[str, ...] = ()
  kills: int = 10
  seed: int = 0
  timeout_s: float = 300.0
  output_json: str | None = None


@dataclasses.dataclass(frozen=True)
class ReferenceRun:
  """The uninterrupted run: its directory, final weights' SHA-256, steps, the process and
  its summary.json."""

  model_dir: str
  weights_sha256: str
  total_steps: int
  result: ProcessResult
  summary: dict


class Workspace:
  """Data, the reference run and command builders, shared by the scenarios of one campaign.

  Data and the reference run are made on first use and kept (a failure too, so it is
  reported once per scenario rather than retried by each).
  """

  def __init__(self, config: FaultsConfig, root: str):
    self.config = config
    self.root = os.path.abspath(root)
    os.makedirs(self.root, exist_ok=True)
    self._made: dict[str, object] = {}

  def _once(self, key: str, make: Callable[[], object]):
    if key not in self._made:
      try:
        self._made[key] = make()
      except Exception as e:  # kept: every scenario that needs it reports the same cause
        self._made[key] = e
    value = self._made[key]
    if isinstance(value, Exception):
      raise RuntimeError(f"{key} could not be made: {value}") from value
    return value

  @property
  def celeba_dir(self) -> str:
    """A tiny CelebA-format directory (96/32/32 faces of 54x44 px, real JPEGs)."""
    from engine.data.synthetic import SyntheticConfig, write_synthetic_celeba
    return self._once("celeba_dir", lambda: write_synthetic_celeba(
        SyntheticConfig(self.fresh_dir("celeba"))))

  @property
  def shards(self) -> str:
    """`celeba_dir` sharded (4 train shards, 2 validation, 2 test)."""
    return self._once("shards", lambda: self.shard(self.celeba_dir, "shards", TRAIN_SHARDS))

  def shard(self, celeba_dir: str, name: str, num_shards: int) -> str:
    """Shards `celeba_dir` into a fresh directory `name`, in this process."""
    from engine.data.sharding import ShardConfig, shard_dataset
    out = self.fresh_dir(name)
    shard_dataset(ShardConfig("celeba", celeba_dir, out, num_shards=num_shards))
    return out

  @property
  def reference(self) -> ReferenceRun:
    """The uninterrupted run of TRAIN_FLAGS (trained on first use)."""
    return self._once("reference run", self._train_reference)

  def _train_reference(self) -> ReferenceRun:
    model_dir = self.fresh_dir("reference")
    result = self.run(self.train_command(model_dir))
    summary = read_json(os.path.join(model_dir, "summary.json"))
    if result.returncode != 0 or not summary:
      raise RuntimeError(f"the reference run failed:\n{result.describe()}")
    return ReferenceRun(model_dir, summary["weights_sha256"], summary["total_steps"], result,
                        summary)

  def fresh_dir(self, name: str) -> str:
    """root/name, emptied (a rerun of the campaign into the same work_dir starts clean)."""
    path = os.path.join(self.root, name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path

  def train_command(self, model_dir: str, *extra: str, data_dir: str | None = None,
                    inject: str | None = None) -> list[str]:
    """`python -m launch.train` with TRAIN_FLAGS (and `extra`, which win), optionally
    under `inject`'s faults (see inject.py)."""
    args = [f"--data_dir={data_dir or self.shards}", f"--model_dir={model_dir}", *TRAIN_FLAGS,
            *extra]
    if inject:
      return process.module_command("engine.bench.faults.inject", inject, "launch.train", *args)
    return process.module_command("launch.train", *args)

  def evaluate_command(self, model_dir: str, *extra: str) -> list[str]:
    return process.module_command("launch.evaluate", f"--model_dir={model_dir}",
                                  "--split=validation", *extra)

  def run(self, command: Sequence[str]) -> ProcessResult:
    return process.run(command, self.config.timeout_s)

  def watch(self, command: Sequence[str]) -> Watched:
    return Watched(command, self.config.timeout_s)

  def shown(self, text: str) -> str:
    """`text` with the work directory written as $W (for details)."""
    return text.replace(self.root, "$W")

  def brief(self, text: str) -> str:
    """`text` with every path under the work directory cut to its last part (table cells)."""
    return re.sub(r"\$W(/[^\s/:;,()'\"]+)*/", ".../", self.shown(text))


def read_json(path: str) -> dict | None:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def latest_checkpoint(model_dir: str) -> int | None:
  """The step of the checkpoint model_dir/checkpoints/checkpoint names as newest, or None."""
  try:
    with open(os.path.join(model_dir, "checkpoints", "checkpoint")) as f:
      match = re.search(r'^model_checkpoint_path: ".*ckpt-(\d+)"', f.read(), re.M)
  except OSError:
    return None
  return int(match[1]) if match else None


def has_checkpoint_files(model_dir: str, step: int) -> bool:
  """Whether ckpt-<step>'s index and data files are on disk (indexed or not)."""
  directory = os.path.join(model_dir, "checkpoints")
  names = os.listdir(directory) if os.path.isdir(directory) else []
  return (f"ckpt-{step}.index" in names
          and any(n.startswith(f"ckpt-{step}.data-") for n in names))


def files_under(path: str) -> set[str]:
  """Every file below `path`, relative to it."""
  found = set()
  for directory, _, names in os.walk(path):
    found.update(os.path.relpath(os.path.join(directory, n), path) for n in names)
  return found
