"""Compare two results stores cell by cell: do two ways of running one command store the same numbers?

Every stored column is compared but the wall times, the finishing time and the worker's name
(trace entries lose their ``*_s`` timings). Rows are matched by (run key, example), or with
``--by-attack`` by (attack, example), for runs whose keys differ on purpose (another ``--threads``).

    python bench/compare_stores.py one.sqlite two.sqlite
    python bench/compare_stores.py one.sqlite threads1.sqlite --by-attack
"""

from __future__ import annotations

import argparse
import json
import sqlite3

_NOT_NUMBERS = {"time_s", "finished", "worker"}


def load(path: str, by_attack: bool) -> dict[tuple[str, str], dict]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    out = {}
    for r in conn.execute("SELECT x.*, r.attack FROM results x JOIN runs r USING (run_key)"):
        d = {k: v for k, v in dict(r).items() if k not in _NOT_NUMBERS}
        d["trace"] = [{k: v for k, v in s.items() if not k.endswith("_s")} for s in json.loads(d["trace"])]
        key = (d["attack"] if by_attack else d["run_key"], d["example_id"])
        if by_attack:
            d.pop("run_key")
        out[key] = d
    conn.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--by-attack", action="store_true", help="match rows by (attack, example), not by run key")
    args = p.parse_args()
    a, b = load(args.a, args.by_attack), load(args.b, args.by_attack)
    common = [k for k in a if k in b]
    differ = [k for k in common if any(a[k][c] != b[k][c] for c in a[k])]
    columns = sorted({c for k in differ for c in a[k] if a[k][c] != b[k][c]})
    flips = sum(a[k]["success"] != b[k]["success"] for k in common)
    print(f"{args.a}: {len(a)} rows; {args.b}: {len(b)} rows; common {len(common)}; differing in any column: "
          f"{len(differ)} ({', '.join(columns) or 'none'}); success flips: {flips}")


if __name__ == "__main__":
    main()
