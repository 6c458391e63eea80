"""Which slices of the faces does a model get wrong more often than the rest?

`rank_slices` turns `metrics.sliced_error`'s error per attribute value into a ranking:
each slice's error with a 95% Wilson interval and its number of faces, sorted by the gap
to the overall error, worst first. Slices with fewer than `min_faces` faces are listed
apart, unranked: there one face moves the error by more than 3 points, and a gap says
more about chance than about the model.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

# Below 30 faces one mistake is worth over 3.3 points of error and the 95% interval of a
# 2% error is over 11 points wide: too noisy to rank against an overall error of a few %.
MIN_RANKED_FACES = 30
CONFIDENCE = 0.95


def wilson_interval(errors: int, count: int, confidence: float = CONFIDENCE
                    ) -> tuple[float, float]:
  """The Wilson score interval of a proportion errors / count (scipy's, no continuity
  correction): unlike the normal approximation it stays inside [0, 1] and is not empty at
  0 or `count` errors, which is where a good model's small slices are.

  Raises:
    ValueError: count < 1 or errors outside [0, count].
  """
  if count < 1 or not 0 <= errors <= count:
    raise ValueError(f"need 0 <= errors <= count and count >= 1; got {errors} of {count}")
  interval = stats.binomtest(int(errors), int(count)).proportion_ci(
      confidence_level=confidence, method="wilson")
  return float(interval.low), float(interval.high)


def rank_slices(by_attribute: dict, correct: np.ndarray, min_faces: int = MIN_RANKED_FACES,
                confidence: float = CONFIDENCE) -> dict:
  """Ranks slices by how much more often the model errs on them than overall.

  Args:
    by_attribute: `sliced_error(...)["by_attribute"]`: {name: {value: {"error", "count"}}}.
    correct: bool [N], the examples those slices were cut from.
    min_faces: slices with fewer examples are listed in "too_few", not ranked.
    confidence: of the Wilson intervals.

  Returns:
    {"overall_error", "overall_ci_low", "overall_ci_high", "num_examples", "confidence",
    "min_faces", "ranked": [row, ...] (gap descending: the worst slice first),
    "too_few": [row, ...] (most faces first)}; a row is {"slice" ("Eyeglasses=1"),
    "attribute", "value", "error", "ci_low", "ci_high", "count", "errors", "gap" (error -
    overall error), "ci_excludes_overall" (the overall error lies outside the slice's
    interval)}.
  """
  correct = np.asarray(correct).reshape(-1).astype(bool)
  total_errors = int((~correct).sum())
  overall = total_errors / correct.size
  overall_low, overall_high = wilson_interval(total_errors, correct.size, confidence)
  ranked, too_few = [], []
  for name, values in by_attribute.items():
    for value, slice_stats in values.items():
      count = int(slice_stats["count"])
      errors = int(round(slice_stats["error"] * count))
      low, high = wilson_interval(errors, count, confidence)
      row = {"slice": f"{name}={value}", "attribute": name, "value": value,
             "error": errors / count, "ci_low": low, "ci_high": high, "count": count,
             "errors": errors, "gap": errors / count - overall,
             "ci_excludes_overall": not low <= overall <= high}
      (ranked if count >= min_faces else too_few).append(row)
  ranked.sort(key=lambda r: (-r["gap"], -r["count"], r["slice"]))
  too_few.sort(key=lambda r: (-r["count"], r["slice"]))
  return {"overall_error": overall, "overall_ci_low": overall_low,
          "overall_ci_high": overall_high, "num_examples": int(correct.size),
          "confidence": confidence, "min_faces": min_faces, "ranked": ranked,
          "too_few": too_few}


def _percent(value: float) -> str:
  return f"{100 * value:.1f}%"


def table_rows(ranking: dict, limit: int | None = None) -> list[list[str]]:
  """The ranked slices as text cells: slice, error, 95% CI, faces, gap (a * marks an
  interval that excludes the overall error)."""
  rows = []
  for r in ranking["ranked"][:limit]:
    rows.append([r["slice"], _percent(r["error"]),
                 f"{_percent(r['ci_low'])}-{_percent(r['ci_high'])}", str(r["count"]),
                 # + 0.0: a gap that rounds to zero reads +0.0, not -0.0
                 f"{round(100 * r['gap'], 1) + 0.0:+.1f}"
                 + (" *" if r["ci_excludes_overall"] else "")])
  return rows


TABLE_HEADER = ("slice", "error", "95% CI", "faces", "gap (points)")


def _too_few_line(ranking: dict) -> str:
  """The unranked slices by name and size; those whose interval still excludes the overall
  error (a small slice far worse or better than the rest) with their errors, so that a
  slice like Eyeglasses=1 with 25 faces is not silent."""
  listed = ", ".join(f"{r['slice']} ({r['count']})" for r in ranking["too_few"])
  if not listed:
    return f"every slice has at least {ranking['min_faces']} faces"
  apart = "; ".join(
      f"{r['slice']}: {r['errors']} of {r['count']} wrong ({_percent(r['error'])}, "
      f"{_percent(r['ci_low'])}-{_percent(r['ci_high'])})"
      for r in ranking["too_few"] if r["ci_excludes_overall"])
  return (f"too few to rank (< {ranking['min_faces']} faces): {listed}"
          + (f"; of these, the interval excludes the overall error for {apart}" if apart
             else ""))


def _summary_line(ranking: dict) -> str:
  return (f"overall error {_percent(ranking['overall_error'])} "
          f"({_percent(ranking['overall_ci_low'])}-{_percent(ranking['overall_ci_high'])}) on "
          f"{ranking['num_examples']} faces; {int(100 * ranking['confidence'])}% Wilson "
          "intervals; * = the interval excludes the overall error")


def format_ranking(ranking: dict, limit: int | None = None) -> list[str]:
  """Console lines: the ranked table (worst slice first) and the unranked slices."""
  rows = [list(TABLE_HEADER)] + table_rows(ranking, limit)
  widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_HEADER))]
  lines = [_summary_line(ranking)]
  for row in rows:
    lines.append(f"{row[0]:<{widths[0]}}" + "".join(
        f"  {cell:>{width}}" for cell, width in zip(row[1:], widths[1:])))
  return lines + [_too_few_line(ranking)]


def markdown_ranking(ranking: dict, limit: int | None = None) -> str:
  """The same table in Markdown (TensorBoard's text tab, the README)."""
  lines = [_summary_line(ranking) + ".", "", "| " + " | ".join(TABLE_HEADER) + " |",
           "|" + " --- |" * len(TABLE_HEADER)]
  lines += ["| " + " | ".join(row) + " |" for row in table_rows(ranking, limit)]
  return "\n".join(lines + ["", _too_few_line(ranking) + "."])


def summary_scalars(ranking: dict) -> dict[str, float]:
  """TensorBoard scalars: each ranked slice's gap and interval, the largest gap, and how
  many slices' intervals exclude the overall error."""
  scalars = {}
  for r in ranking["ranked"]:
    scalars[f"slice_gap/{r['slice']}"] = r["gap"]
    scalars[f"slice_ci_low/{r['slice']}"] = r["ci_low"]
    scalars[f"slice_ci_high/{r['slice']}"] = r["ci_high"]
  if ranking["ranked"]:
    scalars["fairness/largest_gap"] = ranking["ranked"][0]["gap"]
  scalars["fairness/slices_excluding_overall"] = float(
      sum(r["ci_excludes_overall"] for r in ranking["ranked"]))
  return scalars
