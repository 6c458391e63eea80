"""The fault campaign (issue 12): inject each fault on real processes, tabulate what the
user sees and what was lost.

  from engine.bench.faults import FaultsConfig, run_fault_campaign, format_table
  report = run_fault_campaign(FaultsConfig(kills=10))
  print(format_table(report["rows"]))

Modules: `process` (bounded subprocesses, stderr watching), `workspace` (options, tiny
data, the reference run), `inject` (the in-process fault driver), `rows` (FaultRow and
the scenario registry), and the scenarios by what they hit: `training`, `data`, `cli`.
"""

from engine.bench.faults.campaign import (failure_details, format_markdown, format_table,
                                          run_fault_campaign, selected_names)
from engine.bench.faults.rows import SCENARIOS, FaultRow, ordered_names
from engine.bench.faults.workspace import FaultsConfig, Workspace

__all__ = ["SCENARIOS", "FaultRow", "FaultsConfig", "Workspace", "failure_details",
           "format_markdown", "format_table", "ordered_names", "run_fault_campaign",
           "selected_names"]
