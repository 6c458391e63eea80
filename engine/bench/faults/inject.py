"""Runs an entry point as `python -m` would, with faults injected into its process.

  python -m engine.bench.faults.inject FAULT[,FAULT...] MODULE [ARGS...]
  python -m engine.bench.faults.inject kill_in_checkpoint=2 launch.train --data_dir=... ...

Faults (each patches one library call; the entry point itself runs unchanged, through
`runpy`, so its flags, its error handling and its exit code are the user's):
  kill_in_checkpoint=N  SIGKILL inside the N-th checkpoint save, after the checkpoint's
                        data and index files are written and before CheckpointManager
                        records it in the `checkpoint` state file (`_record_state`).
  disk_full_at_save=N   from the N-th RunCheckpoint.save on, no file may grow past 4 KiB
                        (RLIMIT_FSIZE, SIGXFSZ ignored): the kernel answers EFBIG, as a
                        full disk answers ENOSPC.
  nan_at_step=K         the loss of training step K (counted from 1) gets a NaN added,
                        inside the compiled step.
  emulated_fp16         launch.train's machine check lets --precision=mixed_float16 through
                        on a CPU without native float16 (the engine then emulates it): how
                        the NaN guard under loss scaling is reached on this CPU.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import runpy
import signal
import sys

FILE_SIZE_LIMIT_BYTES = 4096


def kill_in_checkpoint(save_number: int) -> None:
  import tensorflow as tf
  manager = tf.train.CheckpointManager
  real_save, real_record = manager.save, manager._record_state
  saves = [0]

  def save(self, *args, **kwargs):
    saves[0] += 1
    return real_save(self, *args, **kwargs)

  def record_state(self):
    if saves[0] == save_number:
      print(f"fault: SIGKILL inside checkpoint save {save_number}, before its state file",
            file=sys.stderr, flush=True)
      os.kill(os.getpid(), signal.SIGKILL)
    return real_record(self)

  manager.save, manager._record_state = save, record_state


def disk_full_at_save(save_number: int) -> None:
  from engine.run.checkpoint import RunCheckpoint
  real_save = RunCheckpoint.save
  saves = [0]

  def save(self, *args, **kwargs):
    saves[0] += 1
    if saves[0] == save_number:
      print(f"fault: files limited to {FILE_SIZE_LIMIT_BYTES} bytes from checkpoint save "
            f"{save_number} on", file=sys.stderr, flush=True)
      signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a core-dumping signal
      hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
      resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT_BYTES, hard))
    return real_save(self, *args, **kwargs)

  RunCheckpoint.save = save


def nan_at_step(step: int) -> None:
  import tensorflow as tf
  from engine.train.task import TaskSpec
  # Created before the trainer configures devices; fine for the one-device runs used here.
  calls = tf.Variable(0, dtype=tf.int64, trainable=False, name="fault_loss_calls")
  real_loss = TaskSpec.per_example_loss

  def loss_with_a_nan(self, labels, logits):
    calls.assign_add(1)
    return real_loss(self, labels, logits) + tf.where(calls == step, float("nan"), 0.0)

  TaskSpec.per_example_loss = loss_with_a_nan


def emulated_fp16(_: int = 0) -> None:
  from engine.train import strategy
  real_check = strategy.check_machine

  def check_machine(train):
    if train.precision == "mixed_float16":
      train = dataclasses.replace(train, precision="float32")  # the other checks still apply
    return real_check(train)

  strategy.check_machine = check_machine


FAULTS = {"kill_in_checkpoint": kill_in_checkpoint, "disk_full_at_save": disk_full_at_save,
          "nan_at_step": nan_at_step, "emulated_fp16": emulated_fp16}


def main(argv: list[str]) -> None:
  if len(argv) < 3:
    sys.exit(__doc__)
  for fault in argv[1].split(","):
    name, _, value = fault.partition("=")
    if name not in FAULTS:
      sys.exit(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
    FAULTS[name](int(value or 0))
  module = argv[2]
  sys.argv = [module, *argv[3:]]
  runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
  main(sys.argv)
