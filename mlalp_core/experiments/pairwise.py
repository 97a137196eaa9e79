"""Two attacks compared the way a reviewer accepts: on the same examples, per example.

A mean over each attack's own successes (Table III) compares different example sets: an attack
that succeeds only on easy examples looks small. :func:`pairwise` compares two runs on the
examples both attacked (same model, data set, example): success on each and on their union, and
on the examples BOTH reached, the per-example ratios a/b of l_inf and l_2 (median and quartiles)
and who needed less (wins, losses, ties), with model calls and time per example.
:func:`efficiency` gives, per run, the mean l_inf of its successes, its success within a budget and
its mean model calls: the points of the efficiency figure (distortion against cost).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InvalidInputError
from .reporting import run_labels

#: Ratios within this relative distance of 1 count as ties (float noise, not a win).
TIE = 1e-6

#: Column -> (header, format) of the pairwise table.
PAIRWISE_COLUMNS: dict[str, tuple[str, str, str | None]] = {
    "model": ("model", "{}", None),
    "dataset": ("dataset", "{}", None),
    "a": ("A", "{}", None),
    "b": ("B", "{}", None),
    "common": ("attacked by both", "{:d}", None),
    "success_a": ("success A", "{:.4f}", None),
    "success_b": ("success B", "{:.4f}", None),
    "success_union": ("success A or B", "{:.4f}", None),
    "both": ("reached by both", "{:d}", None),
    "linf_ratio_median": ("l_inf A/B median", "{:.3f}", None),
    "linf_ratio_q1": ("l_inf A/B q1", "{:.3f}", None),
    "linf_ratio_q3": ("l_inf A/B q3", "{:.3f}", None),
    "l2_ratio_median": ("l_2 A/B median", "{:.3f}", None),
    "l2_ratio_q1": ("l_2 A/B q1", "{:.3f}", None),
    "l2_ratio_q3": ("l_2 A/B q3", "{:.3f}", None),
    "linf_wins": ("l_inf A smaller", "{:d}", None),
    "linf_losses": ("l_inf B smaller", "{:d}", None),
    "linf_ties": ("l_inf ties", "{:d}", None),
    "calls_a": ("model calls A", "{:.1f}", None),
    "calls_b": ("model calls B", "{:.1f}", None),
    "calls_ratio": ("calls A/B", "{:.3f}", None),
    "time_a": ("time A (s)", "{:.3f}", None),
    "time_b": ("time B (s)", "{:.3f}", None),
}


def _pick(rows: Sequence[dict[str, Any]], which: str, labels: dict[str, str]) -> str:
    """The one run ``which`` names: a run key prefix, or an attack name with one run in ``rows``."""
    keys = sorted({r["run_key"] for r in rows})
    by_key = [k for k in keys if k.startswith(which)]
    if len(by_key) == 1:
        return by_key[0]
    by_attack = sorted({r["run_key"] for r in rows if r["attack"] == which.lower()})
    if len(by_attack) == 1:
        return by_attack[0]
    if len(by_attack) > 1:
        runs = "; ".join(f"{k[:8]} = {labels[k]}" for k in by_attack)
        raise InvalidInputError(f"{which} has {len(by_attack)} runs here ({runs}): name one by its key, or narrow "
                                "with --model/--data")
    raise InvalidInputError(f"no run of {which!r} here (attacks: {', '.join(sorted({r['attack'] for r in rows}))}); "
                            "name an attack or a run key")


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    """(median, q1, q3), linear between order statistics as numpy's default, but a ratio of inf
    (B needed nothing, A something) stays inf instead of turning the quartiles it touches to NaN
    (numpy's interpolation computes inf * 0 where a quartile sits exactly on a finite value)."""
    if not values:
        return (float("nan"),) * 3
    v = np.sort(np.asarray(values, dtype=np.float64))

    def at(q: float) -> float:
        pos = q * (len(v) - 1)
        i = int(np.floor(pos))
        t, a, b = pos - i, float(v[i]), float(v[min(i + 1, len(v) - 1)])
        return a if t == 0 or a == b else a + (b - a) * t

    return at(0.5), at(0.25), at(0.75)


def _ratio(a: float, b: float) -> float:
    if b > 0:
        return a / b
    return 1.0 if a == 0 else float("inf")


def pairwise(rows: Sequence[dict[str, Any]], a: str, b: str) -> list[dict[str, Any]]:
    """Run ``a`` against run ``b`` (each an attack name with one run in ``rows``, or a run key
    prefix), one row per (model, data set) both attacked. Rows: :meth:`ResultsStore.rows`."""
    labels = run_labels(rows)
    ka, kb = _pick(rows, a, labels), _pick(rows, b, labels)
    if ka == kb:
        raise InvalidInputError(f"{a} and {b} name the same run ({ka[:8]}): compare two runs")
    per: dict[str, dict[tuple[str, str, str], dict]] = {ka: {}, kb: {}}
    for r in rows:
        if r["run_key"] in per:
            per[r["run_key"]][(r["model"], r["dataset"], r["example_id"])] = r
    common = sorted(set(per[ka]) & set(per[kb]))
    if not common:
        raise InvalidInputError(f"{labels[ka]} and {labels[kb]} share no attacked example (another model, data set "
                                "or selection)")
    groups: dict[tuple[str, str], list[tuple[dict, dict]]] = defaultdict(list)
    for ex in common:
        groups[ex[:2]].append((per[ka][ex], per[kb][ex]))
    out = []
    for (model, dataset), pairs in sorted(groups.items()):
        both = [(x, y) for x, y in pairs if x["success"] and y["success"]]
        lr = [_ratio(x["linf"], y["linf"]) for x, y in both]
        l2r = [_ratio(x["l2"], y["l2"]) for x, y in both]
        row: dict[str, Any] = {"model": model, "dataset": dataset, "a": labels[ka], "b": labels[kb],
                               "run_a": ka, "run_b": kb, "common": len(pairs),
                               "success_a": float(np.mean([x["success"] for x, _ in pairs])),
                               "success_b": float(np.mean([y["success"] for _, y in pairs])),
                               "success_union": float(np.mean([x["success"] or y["success"] for x, y in pairs])),
                               "both": len(both)}
        row["linf_ratio_median"], row["linf_ratio_q1"], row["linf_ratio_q3"] = _quartiles(lr)
        row["l2_ratio_median"], row["l2_ratio_q1"], row["l2_ratio_q3"] = _quartiles(l2r)
        row["linf_wins"] = sum(v < 1 - TIE for v in lr)
        row["linf_losses"] = sum(v > 1 + TIE for v in lr)
        row["linf_ties"] = len(lr) - row["linf_wins"] - row["linf_losses"]
        row["calls_a"] = float(np.mean([x["model_calls"] for x, _ in pairs]))
        row["calls_b"] = float(np.mean([y["model_calls"] for _, y in pairs]))
        row["calls_ratio"] = _ratio(row["calls_a"], row["calls_b"])
        row["time_a"] = float(np.mean([x["time_s"] for x, _ in pairs]))
        row["time_b"] = float(np.mean([y["time_s"] for _, y in pairs]))
        out.append(row)
    return out


def efficiency(rows: Sequence[dict[str, Any]], budget: float | None = None) -> list[dict[str, Any]]:
    """Per run: mean model calls per example, mean l_inf of its successes, success rate, and (with
    ``budget``, l_inf in [0,1] units) the success rate within that budget. Points of
    :func:`mlalp_core.viz.efficiency.efficiency_figure`."""
    if budget is not None and not (isinstance(budget, (int, float)) and 0 < budget <= 1):
        raise InvalidInputError(f"the l_inf budget must be a number in (0, 1], got {budget!r}")
    labels = run_labels(rows)
    runs: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        runs[r["run_key"]].append(r)
    out = []
    for key, rs in runs.items():
        ok = [r for r in rs if r["success"]]
        point = {"model": rs[0]["model"], "dataset": rs[0]["dataset"], "attack": rs[0]["attack"],
                 "label": labels[key], "run_key": key, "attacked": len(rs),
                 "model_calls": float(np.mean([r["model_calls"] for r in rs])),
                 "linf": float(np.mean([r["linf"] for r in ok])) if ok else float("nan"),
                 "success_rate": len(ok) / len(rs)}
        if budget is not None:
            point["success_within"] = sum(r["linf"] <= budget for r in ok) / len(rs)
        out.append(point)
    out.sort(key=lambda p: (p["model"], p["dataset"], p["model_calls"]))
    return out
