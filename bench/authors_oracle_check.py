"""The transcription of the MLA-LP authors' loop (tests/authors_oracle.py) on every example of an
authors'-mode MLA-LP run in a results store, batch by batch as the run cut them; prints, per
model, how many examples agree on success, steps and the per-step events (the shared threshold,
restarts, give-ups, lowerings).

    mlalp bench --models demo-gcn demo-liw --data demo --attacks mla-lp --set mla-lp.mode=authors \\
        --store /tmp/authors.sqlite
    python bench/authors_oracle_check.py /tmp/authors.sqlite

Hide-one runs only (the oracle attacks one label to hide per example, as their code does), made
in one go: a resumed run may have cut a batch differently.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.join(os.path.dirname(__file__), "..")
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import torch  # noqa: E402
from authors_oracle import authors_mlalp  # noqa: E402

import mlalp_core as ml  # noqa: E402
from mlalp_core.experiments.store import ResultsStore  # noqa: E402


def events(trace: list[dict]) -> list[tuple]:
    """Per step: the shared threshold, restart, give-up, lowering (None where an older run's
    trace does not record one: such a step never agrees)."""
    return [(e["iteration"], round(e["margin"], 12) if "margin" in e else None, e.get("restart"), e.get("gave_up"),
             e.get("margin_lowered")) for e in trace]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store")
    args = ap.parse_args()
    torch.set_num_threads(1)
    store = ResultsStore(args.store)
    runs: dict[str, list[dict]] = {}
    for r in store.rows():
        if r["attack"] == "mla-lp" and r["settings"].get("mode") == "authors":
            runs.setdefault(r["run_key"], []).append(r)
    if not runs:
        sys.exit(f"{args.store} holds no authors'-mode MLA-LP run")
    for key, rows in runs.items():
        first = rows[0]
        model = ml.load_model(first["model"], device="cpu")
        data = ml.load_dataset(first["dataset"], split=first["split"])
        batch = int(first["settings"]["batch_size"])
        rows.sort(key=lambda r: r["idx"])
        t0 = time.perf_counter()
        agree, differ = 0, []
        for a in range(0, len(rows), batch):
            part = rows[a:a + batch]
            x = ml.stack_images(data, [r["idx"] for r in part], model.input_size)
            target = torch.tensor([r["target"] for r in part]).bool()
            for r, o in zip(part, authors_mlalp(model, x, target)):
                trace = store.example(key, r["example_id"])["trace"]
                same = (o["success"] == bool(r["success"]) and o["iterations"] == r["iterations"]
                        and events(o["trace"]) == events(trace))
                agree += same
                if not same:
                    differ.append(f"{r['example_id']} (store: success {bool(r['success'])}, {r['iterations']} steps; "
                                  f"oracle: {o['success']}, {o['iterations']})")
        print(f"{first['model']}: {agree} of {len(rows)} examples agree (success, steps, per-step events), "
              f"batches of {batch}, {time.perf_counter() - t0:.0f} s")
        for line in differ:
            print("  differs:", line)


if __name__ == "__main__":
    main()
