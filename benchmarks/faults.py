"""The fault campaign of issue 12: each fault injected on real processes, one table row each.

  python -m benchmarks.faults [--only=NAME,...] [--kills=10] [--work_dir=DIR] [--output_json=F]

Rows: fault | what the user sees | data lost | verdict. The exit code is 1 if any row
failed; the failed rows' details (checks, commands, stderr) follow the table.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

from engine.bench.faults import (SCENARIOS, FaultsConfig, failure_details, format_table,
                                 ordered_names, run_fault_campaign)
from launch import usage

_ONLY = flags.DEFINE_list("only", [], "Scenarios to run (default all): "
                          + ", ".join(ordered_names()))
_KILLS = flags.DEFINE_integer("kills", 10, "kill -9s of the random-step scenario.")
_SEED = flags.DEFINE_integer("seed", 0, "Draws the kill steps.")
_TIMEOUT = flags.DEFINE_float("timeout_s", 300.0, "Longest any one process may run.")
_WORK_DIR = flags.DEFINE_string("work_dir", None, "Keep data and runs here (default: a "
                                "temporary directory, removed at the end).")
_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Also write every row here.")


def main(argv: list[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  unknown = [name for name in _ONLY.value if name not in SCENARIOS]
  if unknown:
    raise app.UsageError(f"--only: unknown scenario(s) {', '.join(unknown)}; known: "
                         f"{', '.join(ordered_names())}")
  report = run_fault_campaign(FaultsConfig(
      work_dir=_WORK_DIR.value, only=tuple(_ONLY.value), kills=_KILLS.value, seed=_SEED.value,
      timeout_s=_TIMEOUT.value, output_json=_OUTPUT_JSON.value))
  print(format_table(report["rows"]))
  print(f"\n{report['passed']} passed, {report['failed']} failed "
        f"({report['seconds']:.0f} s)")
  if report["failed"]:
    print(f"\n{failure_details(report['rows'])}", file=sys.stderr)
  return 1 if report["failed"] else 0


if __name__ == "__main__":
  logging.set_verbosity(logging.INFO)
  usage.run(main)
