"""Checks several scenarios share: a clean error, a loadable checkpoint, an exact resume."""

from __future__ import annotations

import os

from engine.bench.faults.process import ProcessResult, progress_step
from engine.bench.faults.rows import Checks
from engine.bench.faults.workspace import Workspace, latest_checkpoint, read_json


def last_step(result: ProcessResult) -> int:
  """The last step a trainer's progress lines reported (0: none)."""
  steps = [progress_step(line) for line in result.stderr.splitlines()]
  return max([s for s in steps if s is not None], default=0)


def steps_lost(result: ProcessResult, model_dir: str) -> str:
  """Steps the process reported beyond the newest checkpoint: what a resume redoes."""
  newest = latest_checkpoint(model_dir)
  lost = last_step(result) - (newest or 0)
  back_to = f"ckpt-{newest}" if newest else "step 0"
  return f"{lost} step{'s' if lost != 1 else ''} (back to {back_to})"


def clean_error(checks: Checks, result: ProcessResult, *needles: str, exit_code: int | None = None,
                program: str | None = None) -> str:
  """Expects an error exit (`exit_code`, or any > 0), no traceback, and one error line
  (`program: error: ...` when `program` is given) holding every needle; returns the line."""
  line = result.error_line()
  if exit_code is None:
    checks.expect(result.returncode is not None and result.returncode > 0,
                  f"exits with an error code (got {result.returncode})")
  else:
    checks.expect(result.returncode == exit_code,
                  f"exit code {exit_code} (got {result.returncode})")
  checks.expect(not result.has_traceback, "no traceback on stderr")
  if program:
    checks.expect(line.startswith(f"{program}: error: "), f"one `{program}: error:` line")
  for needle in needles:
    checks.expect(needle in line, f"the error line names {needle!r}")
  return f"(traceback) {line}" if result.has_traceback else line


def latest_loads(workspace: Workspace, checks: Checks, model_dir: str, step: int) -> None:
  """`launch.evaluate --checkpoint=latest` loads ckpt-<step> and evaluates it."""
  report_path = os.path.join(model_dir, "latest_eval.json")
  result = workspace.run(workspace.evaluate_command(model_dir, "--checkpoint=latest",
                                                    f"--output_json={report_path}"))
  report = read_json(report_path) or {}
  if not checks.expect(result.returncode == 0, "launch.evaluate --checkpoint=latest loads the "
                       f"newest complete checkpoint (exit {result.returncode})"):
    checks.note(workspace.shown(result.describe()))
    return
  checks.expect(report.get("checkpoint_step") == step,
                f"it evaluated ckpt-{step} (the report says step {report.get('checkpoint_step')})")


def resume_equals_reference(workspace: Workspace, checks: Checks,
                            model_dir: str) -> ProcessResult:
  """The plain training command, rerun, resumes and ends with the reference's weights, best
  checkpoint and images trained; its timing counts the interrupted processes too."""
  result = workspace.run(workspace.train_command(model_dir))
  summary = read_json(os.path.join(model_dir, "summary.json")) or {}
  if not checks.expect(result.returncode == 0, f"the rerun finishes (exit {result.returncode})"):
    checks.note(workspace.shown(result.describe()))
    return result
  checks.expect("resumed from" in result.stderr, "the rerun says it resumed from a checkpoint")
  checks.expect(summary.get("weights_sha256") == workspace.reference.weights_sha256,
                "final weights_sha256 equals the uninterrupted run's "
                f"({str(summary.get('weights_sha256'))[:12]} vs "
                f"{workspace.reference.weights_sha256[:12]})")
  reference = workspace.reference.summary
  checks.expect(summary.get("best") == reference["best"],
                f"the same best checkpoint ({summary.get('best')} vs {reference['best']})")
  checks.expect(summary.get("images") == reference["images"],
                f"each image trained once: {summary.get('images')} images, as uninterrupted")
  checks.expect((summary.get("processes") or 0) >= 2
                and summary["wall_seconds"] > summary["this_process_wall_seconds"],
                f"the timing sums every process ({summary.get('processes')} processes)")
  return result


def same_weights(workspace: Workspace, model_dir: str) -> bool:
  summary = read_json(os.path.join(model_dir, "summary.json")) or {}
  return summary.get("weights_sha256") == workspace.reference.weights_sha256
