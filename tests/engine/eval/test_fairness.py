"""engine.eval.fairness: Wilson intervals against published values, the slice ranking."""

import numpy as np
import pytest

from engine.eval import fairness, metrics


@pytest.mark.parametrize("errors, count, low, high", [
    # Newcombe (1998), Statistics in Medicine 17:857, Table II, method 3 (Wilson, no
    # continuity correction), to the 4 decimals printed there.
    (81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718)])
def test_wilson_interval_matches_published_values(errors, count, low, high):
  assert fairness.wilson_interval(errors, count) == pytest.approx((low, high), abs=5e-5)


def test_wilson_interval_at_the_ends_and_bad_input():
  low, high = fairness.wilson_interval(29, 29)
  assert high == pytest.approx(1.0) and 0.88 < low < 0.89
  assert fairness.wilson_interval(3, 10, confidence=0.99)[1] > fairness.wilson_interval(3, 10)[1]
  with pytest.raises(ValueError):
    fairness.wilson_interval(3, 0)
  with pytest.raises(ValueError):
    fairness.wilson_interval(4, 3)


def _ranking(min_faces=30):
  # 200 faces, 20 wrong (10%). Eyeglasses=1: 40 faces, 12 wrong (30%); Eyeglasses=0:
  # 160 faces, 8 wrong (5%). Bald=1: 10 faces, 5 wrong: too few to rank.
  correct = np.ones(200, bool)
  eyeglasses = np.r_[np.ones(40, int), np.zeros(160, int)]
  correct[:12] = False         # 12 with eyeglasses
  correct[40:48] = False       # 8 without
  bald = np.zeros(200, int)
  bald[[0, 1, 2, 3, 4, 100, 101, 102, 103, 104]] = 1  # 5 wrong, 5 right
  by_attribute = metrics.sliced_error(correct, {"Eyeglasses": eyeglasses,
                                                "Bald": bald})["by_attribute"]
  return fairness.rank_slices(by_attribute, correct, min_faces=min_faces)


def test_slices_ranked_by_gap_with_intervals_and_counts():
  ranking = _ranking()
  assert ranking["overall_error"] == pytest.approx(0.1) and ranking["num_examples"] == 200
  assert [r["slice"] for r in ranking["ranked"]] == ["Eyeglasses=1", "Bald=0", "Eyeglasses=0"]
  worst = ranking["ranked"][0]
  assert worst["count"] == 40 and worst["errors"] == 12 and worst["error"] == pytest.approx(0.3)
  assert worst["gap"] == pytest.approx(0.2)
  assert (worst["ci_low"], worst["ci_high"]) == pytest.approx(fairness.wilson_interval(12, 40))
  assert worst["ci_excludes_overall"]  # 10% lies below [18.1%, 45.4%]
  bald0 = ranking["ranked"][1]
  assert bald0["count"] == 190 and not bald0["ci_excludes_overall"]
  assert [r["slice"] for r in ranking["too_few"]] == ["Bald=1"]  # 10 faces: not ranked
  assert ranking["too_few"][0]["error"] == pytest.approx(0.5)


def test_threshold_moves_slices_between_ranked_and_too_few():
  ranking = _ranking(min_faces=5)
  assert ranking["ranked"][0]["slice"] == "Bald=1" and not ranking["too_few"]


def test_report_formats():
  ranking = _ranking()
  lines = fairness.format_ranking(ranking)
  assert lines[0].startswith("overall error 10.0%")
  assert lines[2].split()[:4] == ["Eyeglasses=1", "30.0%", "18.1%-45.4%", "40"]
  assert lines[2].endswith("+20.0 *")
  # Bald=1, 5 of 10 wrong: too few to rank, but its interval excludes the overall 10%.
  assert lines[-1] == ("too few to rank (< 30 faces): Bald=1 (10); of these, the interval "
                       "excludes the overall error for Bald=1: 5 of 10 wrong (50.0%, 23.7%-76.3%)")
  table = fairness.markdown_ranking(ranking, limit=1)
  assert "| Eyeglasses=1 | 30.0% | 18.1%-45.4% | 40 | +20.0 * |" in table
  assert "Bald=0" not in table
  scalars = fairness.summary_scalars(ranking)
  assert scalars["fairness/largest_gap"] == pytest.approx(0.2)
  assert scalars["fairness/slices_excluding_overall"] == 2  # Eyeglasses=1 and =0
  assert scalars["slice_gap/Eyeglasses=0"] == pytest.approx(-0.05)


def test_small_slices_near_the_overall_error_are_only_named():
  correct = np.ones(200, bool)
  correct[:20] = False                  # 10% overall
  bald = np.zeros(200, int)
  bald[[0, 100, 101, 102, 103, 104, 105, 106, 107, 108]] = 1  # 1 of 10 wrong: 10%
  by_attribute = metrics.sliced_error(correct, {"Bald": bald})["by_attribute"]
  ranking = fairness.rank_slices(by_attribute, correct)
  assert fairness.format_ranking(ranking)[-1] == "too few to rank (< 30 faces): Bald=1 (10)"


def test_a_gap_that_rounds_to_zero_has_no_minus_sign():
  row = {"slice": "Eyeglasses=0", "error": 0.04, "ci_low": 0.02, "ci_high": 0.06, "count": 455,
         "gap": -0.0001, "ci_excludes_overall": False}
  assert fairness.table_rows({"ranked": [row]})[0][-1] == "+0.0"
