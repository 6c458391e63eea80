"""What a fault scenario reports (a FaultRow) and the registry of scenarios.

A scenario injects one fault on real processes and checks what the issue promises for it.
It returns an `Outcome` (what the user saw, what was lost, every check); `ScenarioSpec.run`
times it and turns it into a `FaultRow`. A scenario that raises is a failed row whose
detail says where the harness broke, never a crash of the campaign.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from typing import Callable

from engine.registry import Registry

_SEES_CHARS = 120


@dataclasses.dataclass(frozen=True)
class FaultRow:
  """One line of the campaign's table.

  Attributes:
    name: the scenario's registry name (`--only=NAME`).
    fault: what was injected.
    user_sees: the one error line or outcome the user gets, shortened.
    data_lost: what the fault cost (steps redone, records dropped), or "none".
    passed: every check held.
    detail: the checks that failed, then the evidence (commands, exit codes, stderr).
    seconds: wall time of the scenario.
  """

  name: str
  fault: str
  user_sees: str
  data_lost: str
  passed: bool
  detail: str
  seconds: float

  @property
  def verdict(self) -> str:
    return "pass" if self.passed else "FAIL"

  def to_json(self) -> dict:
    return {**dataclasses.asdict(self), "verdict": self.verdict}


class Checks:
  """Collects a scenario's expectations; the row passes when every one held."""

  def __init__(self):
    self.failed: list[str] = []
    self.evidence: list[str] = []

  def expect(self, ok: bool, what: str) -> bool:
    """Records `what` as failed unless `ok`; returns `ok` (to skip dependent checks)."""
    if not ok:
      self.failed.append(what)
    return bool(ok)

  def note(self, text: str) -> None:
    """Adds evidence for the detail (a command and its output, a measured number)."""
    self.evidence.append(text)


@dataclasses.dataclass(frozen=True)
class Outcome:
  """What a scenario function returns; see FaultRow for the fields."""

  user_sees: str
  data_lost: str
  checks: Checks


@dataclasses.dataclass(frozen=True)
class ScenarioSpec:
  """A registered scenario: `run(workspace)` gives its row.

  Attributes:
    name: registry name.
    fault: the table's first column.
    item: the issue's list item it covers (the table's order).
    scenario: workspace -> Outcome.
  """

  name: str
  fault: str
  item: int
  scenario: Callable[..., Outcome]

  def run(self, workspace) -> FaultRow:
    start = time.monotonic()
    try:
      outcome = self.scenario(workspace)
    except Exception as e:  # a harness error is this row's failure, not the campaign's
      checks = Checks()
      checks.expect(False, f"the scenario raised {type(e).__name__}: {e}")
      checks.note(traceback.format_exc(limit=6))
      outcome = Outcome(f"(harness error: {type(e).__name__})", "unknown", checks)
    checks = outcome.checks
    detail = "\n".join([*(f"FAILED: {what}" for what in checks.failed), *checks.evidence])
    return FaultRow(self.name, self.fault, shorten(workspace.brief(outcome.user_sees)),
                    outcome.data_lost, not checks.failed, workspace.shown(detail),
                    time.monotonic() - start)


SCENARIOS: Registry[ScenarioSpec] = Registry("fault scenario")
_REGISTRATION_ORDER: list[str] = []


def scenario(name: str, fault: str, item: int):
  """Registers `fn(workspace) -> Outcome` as a scenario of the issue's list item `item`."""
  def register(fn):
    SCENARIOS.add(name, ScenarioSpec(name, fault, item, fn))
    _REGISTRATION_ORDER.append(name)
    return fn
  return register


def ordered_names() -> list[str]:
  """Scenario names in the issue's order (then registration order within an item)."""
  return sorted(_REGISTRATION_ORDER,
                key=lambda name: (SCENARIOS.get(name).item, _REGISTRATION_ORDER.index(name)))


def shorten(text: str, limit: int = _SEES_CHARS) -> str:
  """One line of at most `limit` characters (an error's start says what went wrong)."""
  text = " ".join(text.split())
  return text if len(text) <= limit else f"{text[:limit - 3]}..."
