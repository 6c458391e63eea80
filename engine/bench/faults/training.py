"""Faults met by a training run: kill -9, a crash or a full disk inside a checkpoint, two
trainers on one directory, SIGTERM, a NaN loss (issue 12, items 1-3, 6-8)."""

from __future__ import annotations

import os
import random
import signal
import time

from engine.bench.faults import expect
from engine.bench.faults.expect import last_step
from engine.bench.faults.process import ProcessResult, progress_step
from engine.bench.faults.rows import Checks, Outcome, scenario
from engine.bench.faults.workspace import (CHECKPOINT_EVERY, Workspace, has_checkpoint_files,
                                           latest_checkpoint, read_json)

_NAN_STEP = 7  # a NaN in the loss of this step; the last checkpoint before it is step 6


@scenario("kill9_random_steps", "kill -9 of training at random steps", 1)
def kill_at_random_steps(workspace: Workspace) -> Outcome:
  checks = Checks()
  total = workspace.reference.total_steps
  kills = min(workspace.config.kills, total - 1)
  targets = sorted(random.Random(workspace.config.seed).sample(range(1, total), kills))
  model_dir = workspace.fresh_dir("kill9_random_steps")
  redone, killed_at = [], []
  for target in targets:
    with workspace.watch(workspace.train_command(model_dir)) as trainer:
      seen = trainer.wait_for_line(lambda line, t=target: (progress_step(line) or 0) >= t)
      if seen:
        trainer.send(signal.SIGKILL)
      result = trainer.wait()
    if not checks.expect(seen and result.returncode == -signal.SIGKILL,
                         f"the run reached step {target} and died by SIGKILL"):
      checks.note(workspace.shown(result.describe()))
      break
    killed_at.append(last_step(result))
    redone.append(killed_at[-1] - (latest_checkpoint(model_dir) or 0))
  checks.note(f"kill targets {targets}; killed after steps {killed_at}; steps since the last "
              f"checkpoint at each kill {redone}")
  checks.expect(not os.path.exists(os.path.join(model_dir, "summary.json")),
                "no kill came after the end of training")
  checks.expect(max(redone, default=0) <= CHECKPOINT_EVERY,
                f"no kill lost more than one checkpoint interval ({CHECKPOINT_EVERY} steps)")
  final = expect.resume_equals_reference(workspace, checks, model_dir)
  sees = (f"{len(killed_at)} kills at steps {killed_at}, then exit {final.returncode}; final "
          f"weights {'==' if expect.same_weights(workspace, model_dir) else '!='} uninterrupted")
  lost = (f"{sum(redone)} steps redone, max {max(redone, default=0)} per kill (ckpt every "
          f"{CHECKPOINT_EVERY})")
  return Outcome(sees, lost, checks)


def _previous_checkpoint_serves(workspace: Workspace, checks: Checks, model_dir: str,
                                failed: ProcessResult) -> tuple[str, ProcessResult]:
  """After a save that failed: the one before it is still the newest, loads, and the
  plain command resumes from it to the uninterrupted run's weights.

  Returns:
    (data lost by `failed`, the rerun).
  """
  newest = latest_checkpoint(model_dir)
  checks.expect(newest == CHECKPOINT_EVERY,
                f"the state file still names ckpt-{CHECKPOINT_EVERY} (names {newest})")
  lost = expect.steps_lost(failed, model_dir)
  expect.latest_loads(workspace, checks, model_dir, CHECKPOINT_EVERY)
  return lost, expect.resume_equals_reference(workspace, checks, model_dir)


@scenario("kill9_inside_checkpoint", "kill -9 inside a checkpoint save", 2)
def kill_inside_checkpoint(workspace: Workspace) -> Outcome:
  checks = Checks()
  model_dir = workspace.fresh_dir("kill9_inside_checkpoint")
  crashed = workspace.run(workspace.train_command(model_dir, inject="kill_in_checkpoint=2"))
  checks.expect(crashed.returncode == -signal.SIGKILL,
                f"the run died by SIGKILL in its 2nd save (exit {crashed.returncode})")
  checks.expect(has_checkpoint_files(model_dir, 2 * CHECKPOINT_EVERY),
                f"ckpt-{2 * CHECKPOINT_EVERY}'s files were written before the kill")
  lost, final = _previous_checkpoint_serves(workspace, checks, model_dir, crashed)
  sees = (f"killed at step {last_step(crashed)}; evaluate --checkpoint=latest -> "
          f"ckpt-{CHECKPOINT_EVERY}; rerun exit {final.returncode}, weights "
          f"{'==' if expect.same_weights(workspace, model_dir) else '!='} uninterrupted")
  return Outcome(sees, lost, checks)


@scenario("disk_full_in_checkpoint", "disk full while writing a checkpoint", 3)
def disk_full_in_checkpoint(workspace: Workspace) -> Outcome:
  checks = Checks()
  model_dir = workspace.fresh_dir("disk_full_in_checkpoint")
  full = workspace.run(workspace.train_command(model_dir, inject="disk_full_at_save=2"))
  line = expect.clean_error(checks, full, os.path.join(model_dir, "checkpoints"),
                            "the newest complete checkpoint is", f"ckpt-{CHECKPOINT_EVERY}",
                            program="launch.train")
  checks.expect(not has_checkpoint_files(model_dir, 2 * CHECKPOINT_EVERY),
                f"no partial ckpt-{2 * CHECKPOINT_EVERY} files left behind")
  if checks.failed:
    checks.note(workspace.shown(full.describe()))
  lost, _ = _previous_checkpoint_serves(workspace, checks, model_dir, full)
  return Outcome(line, lost, checks)


@scenario("two_trainers_one_dir", "two trainers at once on one model_dir", 6)
def two_trainers(workspace: Workspace) -> Outcome:
  checks = Checks()
  model_dir = workspace.fresh_dir("two_trainers_one_dir")
  long_run = workspace.train_command(model_dir, "--epochs=200")  # alive while the others start
  with workspace.watch(long_run) as one, workspace.watch(long_run) as other:
    deadline = time.monotonic() + workspace.config.timeout_s
    while one.process.poll() is None and other.process.poll() is None:
      if time.monotonic() > deadline:
        break
      time.sleep(0.05)
    refused, winner = (one, other) if one.process.poll() is not None else (other, one)
    refused_result = refused.wait()
    # The winner holds the lock; let it write a checkpoint, then kill it.
    trained = winner.wait_for_line(
        lambda line: (progress_step(line) or 0) > 2 * CHECKPOINT_EVERY)
    winner.send(signal.SIGKILL)
    winner_result = winner.wait()
  line = expect.clean_error(checks, refused_result, "in use by another trainer",
                             f"pid {winner.pid}")
  checks.expect(refused_result.seconds < 60,
                f"the second trainer is refused quickly ({refused_result.seconds:.1f} s)")
  checks.expect(trained and winner_result.returncode == -signal.SIGKILL,
                "the first trainer trained past a checkpoint and was killed")
  lost = expect.steps_lost(winner_result, model_dir)
  newest = latest_checkpoint(model_dir) or 0
  third = workspace.run(workspace.train_command(model_dir, "--epochs=200",
                                                f"--train_steps={newest + 2 * CHECKPOINT_EVERY}"))
  summary = read_json(os.path.join(model_dir, "summary.json")) or {}
  checks.expect(third.returncode == 0, f"the third run finishes (exit {third.returncode})")
  checks.expect(bool(third.log_lines("taking over the lock")),
                "the third run logs that it takes the stale lock over")
  checks.expect("resumed from" in third.stderr, "the third run resumes from the checkpoint")
  checks.expect(summary.get("step") == newest + 2 * CHECKPOINT_EVERY,
                f"it trained to step {newest + 2 * CHECKPOINT_EVERY}")
  if checks.failed:
    for result in (refused_result, winner_result, third):
      checks.note(workspace.shown(result.describe()))
  took_over = "takes the lock over" if third.log_lines("taking over the lock") else "no takeover"
  sees = f"{line} | third run: {took_over}, exit {third.returncode}"
  return Outcome(sees, lost, checks)


@scenario("sigterm", "SIGTERM during training (preemption)", 7)
def sigterm(workspace: Workspace) -> Outcome:
  checks = Checks()
  model_dir = workspace.fresh_dir("sigterm")
  with workspace.watch(workspace.train_command(model_dir)) as trainer:
    seen = trainer.wait_for_line(lambda line: (progress_step(line) or 0) >= 5)
    if seen:
      trainer.send(signal.SIGTERM)
    stopped = trainer.wait()
  summary = read_json(os.path.join(model_dir, "summary.json")) or {}
  newest = latest_checkpoint(model_dir)
  checks.expect(stopped.returncode == 0, f"exit code 0 (got {stopped.returncode})")
  checks.expect(summary.get("stopped_by") == "SIGTERM",
                f"summary.json says stopped_by SIGTERM ({summary.get('stopped_by')!r})")
  checks.expect(newest is not None and newest == summary.get("step"),
                f"a checkpoint of the step it stopped at (ckpt-{newest}, summary step "
                f"{summary.get('step')})")
  checks.expect((summary.get("step") or 0) < workspace.reference.total_steps,
                "it stopped before the end")
  if checks.failed:
    checks.note(workspace.shown(stopped.describe()))
  lost = expect.steps_lost(stopped, model_dir)
  final = expect.resume_equals_reference(workspace, checks, model_dir)
  sees = (f"exit {stopped.returncode}, stopped_by {summary.get('stopped_by')!r} at step "
          f"{summary.get('step')}, ckpt-{newest}; rerun exit {final.returncode}")
  return Outcome(sees, lost, checks)


def _nan_loss(workspace: Workspace, name: str, *flags: str, inject: str = "") -> Outcome:
  checks = Checks()
  model_dir = workspace.fresh_dir(name)
  faults = ",".join(f for f in (f"nan_at_step={_NAN_STEP}", inject) if f)
  result = workspace.run(workspace.train_command(model_dir, *flags, inject=faults))
  good = _NAN_STEP - 1 - (_NAN_STEP - 1) % CHECKPOINT_EVERY
  line = expect.clean_error(checks, result, f"non-finite loss at step {_NAN_STEP}",
                             "the last good checkpoint is", f"ckpt-{good}")
  checks.expect(latest_checkpoint(model_dir) == good, f"ckpt-{good} is still the newest")
  precision = next((f for f in flags if f.startswith("--precision=")), "--precision=float32")
  checks.expect(bool(result.log_lines(f"precision: {precision.split('=')[1]} ")),
                f"the run trained in {precision.split('=')[1]}")
  if checks.failed:
    checks.note(workspace.shown(result.describe()))
  expect.latest_loads(workspace, checks, model_dir, good)
  return Outcome(workspace.shown(line), f"{_NAN_STEP - good} step (step {_NAN_STEP} not saved; "
                 f"ckpt-{good} kept)", checks)


@scenario("nan_loss_fp32", "NaN loss at step 7 (float32)", 8)
def nan_loss_fp32(workspace: Workspace) -> Outcome:
  return _nan_loss(workspace, "nan_loss_fp32")


@scenario("nan_loss_fp16", "NaN loss at step 7 (mixed_float16, loss scaling)", 8)
def nan_loss_fp16(workspace: Workspace) -> Outcome:
  # launch.train refuses mixed_float16 on a CPU without native float16 (fp16_on_cpu checks
  # that refusal); the driver lets it through so that the guard under loss scaling runs.
  return _nan_loss(workspace, "nan_loss_fp16", "--precision=mixed_float16",
                   inject="emulated_fp16")
