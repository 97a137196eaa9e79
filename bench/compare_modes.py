"""Two results stores on the examples both hold: success, l_2, l_inf and model calls side by side.

    python bench/compare_modes.py results/demo-mlalp.sqlite results/demo-authors.sqlite

Written for the two behaviours (``mode = mlalp`` vs ``mode = authors``) of the demo Table III, where
the authors' CW family ran on the first 18 examples only (one of their batches): a fair comparison
needs the same examples. Means of l_2 and l_inf are over each side's successes.
"""

from __future__ import annotations

import argparse
import os
import sys
from statistics import mean

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from mlalp_core.experiments.store import ResultsStore  # noqa: E402

ORDER = ["mla-lp", "ml-deepfool", "ml-cw", "ml-rank1", "ml-rank2"]


def by_attack(path: str) -> dict[tuple[str, str], dict[str, dict]]:
    out: dict[tuple[str, str], dict[str, dict]] = {}
    for r in ResultsStore(path).rows():
        out.setdefault((r["model"], r["attack"]), {})[r["example_id"]] = r
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first")
    ap.add_argument("second")
    ap.add_argument("--names", nargs=2, default=["mlalp", "authors"])
    args = ap.parse_args()
    a, b = by_attack(args.first), by_attack(args.second)
    n1, n2 = args.names
    print(f"| model | attack | examples | success {n1} | success {n2} | l_2 {n1} | l_2 {n2} | l_inf {n1} | "
          f"l_inf {n2} | model calls {n1} | model calls {n2} | outcomes differ |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key in sorted(set(a) & set(b), key=lambda k: (k[0], ORDER.index(k[1]) if k[1] in ORDER else 99, k[1])):
        ids = sorted(set(a[key]) & set(b[key]))
        ra, rb = [a[key][i] for i in ids], [b[key][i] for i in ids]

        def norm(rows: list[dict], col: str) -> str:
            vals = [r[col] for r in rows if r["success"]]
            return f"{mean(vals):.4f}" if vals else "-"

        differ = sum(x["success"] != y["success"] for x, y in zip(ra, rb))
        print(f"| {key[0]} | {key[1]} | {len(ids)} | {mean(r['success'] for r in ra):.3f} | "
              f"{mean(r['success'] for r in rb):.3f} | {norm(ra, 'l2')} | {norm(rb, 'l2')} | {norm(ra, 'linf')} | "
              f"{norm(rb, 'linf')} | {mean(r['model_calls'] for r in ra):.0f} | {mean(r['model_calls'] for r in rb):.0f} | "
              f"{differ} |")


if __name__ == "__main__":
    main()
