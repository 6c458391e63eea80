"""Runs the fault scenarios one after the other and tabulates what the user saw."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time

from engine.bench.faults import cli, data, training  # noqa: F401  (registers the scenarios)
from engine.bench.faults.rows import SCENARIOS, FaultRow, ordered_names
from engine.bench.faults.workspace import FaultsConfig, Workspace

_COLUMNS = (("fault", 50), ("what the user sees", 120), ("data lost", 46), ("verdict", 7))


def selected_names(only: tuple[str, ...]) -> list[str]:
  """The scenarios to run, in the issue's order; unknown names raise KeyError listing all."""
  for name in only:
    SCENARIOS.get(name)
  return [name for name in ordered_names() if not only or name in only]


def run_fault_campaign(config: FaultsConfig) -> dict:
  """Runs the selected scenarios and returns {"rows": [...], "passed", "failed", "seconds"}.

  The data and the reference run are made first (the reference only if a selected
  scenario needs it, which is every one that trains or loads a model). Progress goes to
  the log; rows are printed by the caller (see `format_table`).
  """
  names = selected_names(config.only)
  start = time.monotonic()
  with tempfile.TemporaryDirectory(prefix="faults-") as scratch:
    workspace = Workspace(config, config.work_dir or scratch)
    logging.info("fault campaign in %s: %d scenario(s)", workspace.root, len(names))
    try:
      reference = workspace.reference
      logging.info("reference run: %d steps in %.1f s, weights %s", reference.total_steps,
                   reference.result.seconds, reference.weights_sha256[:12])
    except RuntimeError as e:  # every row that needs it fails and says why
      logging.error("%s", e)
    rows = []
    for i, name in enumerate(names, start=1):
      logging.info("[%d/%d] %s ...", i, len(names), name)
      row = SCENARIOS.get(name).run(workspace)
      logging.info("[%d/%d] %s: %s in %.1f s", i, len(names), name, row.verdict, row.seconds)
      rows.append(row)
  report = {"rows": [row.to_json() for row in rows], "passed": sum(r.passed for r in rows),
            "failed": sum(not r.passed for r in rows), "seconds": time.monotonic() - start,
            "kills": config.kills, "seed": config.seed}
  if config.output_json:
    os.makedirs(os.path.dirname(os.path.abspath(config.output_json)), exist_ok=True)
    with open(config.output_json, "w") as f:
      json.dump(report, f, indent=2)
  return report


def format_table(rows: list[dict]) -> str:
  """The rows as a fixed-width text table (cells cut to their column's width)."""
  def line(cells):
    return " | ".join(str(c)[:w].ljust(w) for c, (_, w) in zip(cells, _COLUMNS)).rstrip()
  out = [line(name for name, _ in _COLUMNS), "-+-".join("-" * w for _, w in _COLUMNS)]
  out += [line((r["fault"], r["user_sees"], r["data_lost"], r["verdict"])) for r in rows]
  return "\n".join(out)


def format_markdown(rows: list[dict]) -> str:
  """The rows as a markdown table (for the README), cells whole."""
  out = ["| fault | what the user sees | data lost | verdict |", "| --- | --- | --- | --- |"]
  out += [f"| {r['fault']} | `{r['user_sees']}` | {r['data_lost']} | {r['verdict']} |"
          for r in rows]
  return "\n".join(out)


def failure_details(rows: list[dict]) -> str:
  """Each failed row's name and detail."""
  return "\n\n".join(f"{r['name']} FAILED:\n{r['detail']}" for r in rows if not r["passed"])


__all__ = ["FaultRow", "FaultsConfig", "run_fault_campaign", "format_table", "format_markdown",
           "failure_details", "selected_names"]
