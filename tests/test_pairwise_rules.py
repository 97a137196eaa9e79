"""experiments/pairwise.py against its docstring, on rows whose answers are worked out by hand:
success of A or B on each common example (not B's alone), ratios when a distortion is 0 (a tie
when both are, a loss when only B's is), and the efficiency points ordered by cost in each
(model, data set), as the figure draws them."""

from __future__ import annotations

import math

import pytest

from mlalp_core.experiments.pairwise import efficiency, pairwise


def _r(run, attack, ex, success, linf, calls=10, model="m"):
    return {"run_key": run, "model": model, "dataset": "d", "attack": attack, "example_id": ex, "success": success,
            "linf": linf, "l2": 10 * linf, "model_calls": calls, "time_s": 1.0, "seed": 0, "settings": {},
            "numerics": None}


def test_success_of_either_counts_examples_only_a_reached():
    rows = [_r("A", "mla-lp", "e1", True, 0.01), _r("B", "pgd", "e1", False, 0.03),
            _r("A", "mla-lp", "e2", False, 0.2), _r("B", "pgd", "e2", False, 0.03),
            _r("A", "mla-lp", "e3", False, 0.2), _r("B", "pgd", "e3", True, 0.03)]
    (row,) = pairwise(rows, "A", "B")
    assert (row["success_a"], row["success_b"], row["success_union"]) == pytest.approx((1 / 3, 1 / 3, 2 / 3))
    assert row["both"] == 0 and all(math.isnan(row[k]) for k in ("linf_ratio_median", "l2_ratio_q1"))
    assert (row["linf_wins"], row["linf_losses"], row["linf_ties"]) == (0, 0, 0)


def test_zero_distortions_are_ties_or_losses_never_an_error():
    # e1: both reached y* without moving (0 and 0: a tie); e2: only B needed nothing (A loses: inf)
    rows = [_r("A", "mla-lp", "e1", True, 0.0), _r("B", "pgd", "e1", True, 0.0),
            _r("A", "mla-lp", "e2", True, 0.02), _r("B", "pgd", "e2", True, 0.0),
            _r("A", "mla-lp", "e3", True, 0.01), _r("B", "pgd", "e3", True, 0.04)]
    (row,) = pairwise(rows, "A", "B")
    assert (row["linf_wins"], row["linf_losses"], row["linf_ties"]) == (1, 1, 1)
    assert row["linf_ratio_median"] == 1.0 and math.isinf(row["linf_ratio_q3"])
    assert (row["run_a"], row["run_b"]) == ("A", "B")
    # two infinite ratios: the quartile between them is inf, not nan
    more = rows + [_r("A", "mla-lp", "e4", True, 0.03), _r("B", "pgd", "e4", True, 0.0)]
    (row,) = pairwise(more, "A", "B")
    # ratios sorted: 0.25, 1, inf, inf
    assert row["linf_ratio_q1"] == pytest.approx(0.8125) and math.isinf(row["linf_ratio_median"])
    assert math.isinf(row["linf_ratio_q3"])
    (calls,) = pairwise([_r("A", "a", "e", True, 0.1, calls=0), _r("B", "b", "e", True, 0.1, calls=0)], "A", "B")
    assert calls["calls_ratio"] == 1.0


def test_efficiency_points_are_ordered_by_cost_in_each_block():
    rows = [_r("A", "mla-lp", "e1", True, 0.01, calls=300), _r("B", "pgd", "e1", True, 0.02, calls=20),
            _r("C", "fgsm", "e1", False, 0.03, calls=2), _r("D", "bim", "e1", True, 0.02, calls=50, model="a")]
    points = efficiency(rows)
    assert [p["run_key"] for p in points] == ["D", "C", "B", "A"]
    assert [p["model_calls"] for p in points] == [50, 2, 20, 300]
    assert math.isnan(points[1]["linf"]) and points[1]["success_rate"] == 0.0


def test_a_budget_must_be_a_number_in_the_unit_interval():
    from mlalp_core.errors import InvalidInputError

    rows = [_r("A", "mla-lp", "e1", True, 0.01)]
    for bad in ("0.5", 0.0, 1.5, -0.1, None if False else [0.5]):
        with pytest.raises(InvalidInputError, match="budget must be a number in"):
            efficiency(rows, budget=bad)
    assert efficiency(rows, budget=1)[0]["success_within"] == 1.0


def test_ratios_within_tie_of_one_are_ties_and_beyond_it_wins_or_losses():
    """TIE: ratios within this relative distance of 1 count as ties, the edges included. Halving
    is exact in binary, so 0.5 (1 +- TIE) / 0.5 is exactly 1 +- TIE."""
    from mlalp_core.experiments.pairwise import TIE

    a = [0.5 * (1 - TIE), 0.5 * (1 + TIE), 0.5 * (1 - 2 * TIE), 0.5 * (1 + 2 * TIE), 0.5]
    rows = []
    for k, v in enumerate(a):
        rows += [_r("A", "mla-lp", f"e{k}", True, v), _r("B", "pgd", f"e{k}", True, 0.5)]
    assert [v / 0.5 for v in a[:2]] == [1 - TIE, 1 + TIE]
    (row,) = pairwise(rows, "A", "B")
    assert (row["linf_wins"], row["linf_losses"], row["linf_ties"]) == (1, 1, 3)
