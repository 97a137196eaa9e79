"""A table row is one run: the same attack with other settings, in the authors' mode, with another
seed or other numerics is a row of its own in Table III, the budget curves, `mlalp report` (every
format), and the Benchmark page, labelled by what differs from the paper's settings. The oracle
is the store's own rows of each run, aggregated here by the paper's rule (success over all,
distortions over successes)."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest
import torch
from tiny import TinyScenes, load_tiny, train_tiny

from mlalp_core.cli import main
from mlalp_core.experiments.reporting import budget_curves, table3, to_csv, to_latex, to_markdown
from mlalp_core.experiments.runner import BenchConfig, run_benchmark
from mlalp_core.experiments.store import ResultsStore

LABELS = ["MLA-LP", "MLA-LP (max iterations 2)", "MLA-LP (authors' mode, batch 4)"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One store, three runs of MLA-LP: the paper's settings, 2 iterations, the authors' mode."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("runs")
    weights = tmp / "tiny.pt"
    torch.save(train_tiny().state_dict(), weights)
    path = tmp / "three.sqlite"
    for settings in ({}, {"max_iterations": 2}, {"mode": "authors"}):
        cfg = BenchConfig(models=["tiny"], dataset="tiny", split="all", attacks=["mla-lp"], seed=3, batch_size=4,
                          device="cpu", store=path, attack_settings={"mla-lp": settings}, threads=1)
        run_benchmark(cfg, model_loader=lambda name, device=None: load_tiny(weights),
                      dataset_loader=lambda name, split=None: TinyScenes())
    return path


def _by_run(path: Path) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for r in ResultsStore(path).rows():
        runs.setdefault(r["run_key"], []).append(r)
    return runs


def test_each_run_is_one_row_with_its_own_numbers(store):
    runs = _by_run(store)
    assert len(runs) == 3
    table = table3([r for rs in runs.values() for r in rs])
    assert sorted(r["label"] for r in table) == sorted(LABELS)
    for row in table:
        own = runs[row["run_key"]]
        ok = [r for r in own if r["success"]]
        assert row["attacked"] == len(own)  # not the three runs' sum
        assert row["success_rate"] == pytest.approx(len(ok) / len(own))
        if ok:
            assert row["linf"] == pytest.approx(sum(r["linf"] for r in ok) / len(ok))
        assert row["time_s"] == pytest.approx(sum(r["time_s"] for r in own) / len(own))
    # the runs differ where it shows: two iterations cannot take more than two steps
    two = next(r for r in table if r["label"] == LABELS[1])
    assert max(r["iterations"] for r in runs[two["run_key"]]) <= 2
    assert max(r["iterations"] for rs in runs.values() for r in rs) > 2
    curves = budget_curves([r for rs in runs.values() for r in rs], "linf")
    assert sorted(k[3] for k in curves) == sorted(LABELS)


def test_every_export_shows_three_labelled_rows_and_the_runs_behind_them(store):
    table = table3(ResultsStore(store).rows())
    parsed = list(csv.DictReader(io.StringIO(to_csv(table))))
    assert sorted(r["label"] for r in parsed) == sorted(LABELS) and {r["attack"] for r in parsed} == {"mla-lp"}
    assert {r["run_key"] for r in parsed} == {r["run_key"] for r in table}
    assert any(r["settings"] == "max iterations 2 (paper: 10)" for r in parsed)
    md = to_markdown(table)
    body = [line for line in md.splitlines() if line.startswith("| tiny")]
    assert len(body) == 3 and all(any(f"| {lab} |" in line for line in body) for lab in LABELS)
    assert md.count("\n- MLA-LP") == 3 and "1 thread, torch" in md  # one note per run, with its numerics
    tex = to_latex(table)
    rows = [line for line in tex.splitlines() if line.startswith("tiny &")]
    assert len(rows) == 3 and sum("authors' mode" in line for line in rows) == 1
    assert "Runs (one row each)" in tex and "max iterations 2 (paper: 10)" in tex


def test_report_command_lists_filters_and_exports_runs(store, capsys):
    assert main(["report", "--store", str(store), "--format", "md"]) == 0
    out = capsys.readouterr().out
    assert sum(line.startswith("| tiny") for line in out.splitlines()) == 3
    assert main(["report", "--store", str(store), "--runs"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert len(listing) == 3 and all("examples" in line and "thread" in line for line in listing)
    key = next(r["run_key"] for r in table3(ResultsStore(store).rows()) if r["label"] == LABELS[2])
    assert main(["report", "--store", str(store), "--run", key[:8], "--format", "csv"]) == 0
    (only,) = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert only["label"] == LABELS[2] and only["run_key"] == key
    assert main(["report", "--store", str(store), "--run", "zzzz"]) == 2
    assert "no run 'zzzz'" in capsys.readouterr().err


def test_benchmark_page_shows_one_row_per_run(store, monkeypatch, tmp_path):
    from streamlit.testing.v1 import AppTest

    for k in list(os.environ):
        if k.startswith("MLALP_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("MLALP_DEVICE", "cpu")
    monkeypatch.setenv("MLALP_RESULTS", str(store))
    monkeypatch.chdir(tmp_path)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=240)
    at.run()
    at.switch_page("app_pages/benchmark.py").run()
    assert not at.exception, [e.value for e in at.exception]
    t3 = next(d.value for d in at.dataframe if "success_rate" in d.value.columns)
    assert sorted(t3["attack"]) == sorted(LABELS) and len(set(t3["run"])) == 3
    # the pairwise panel compares two of the runs on their common examples; the efficiency figure has 3 points
    pw = next(d.value for d in at.dataframe if "attacked by both" in d.value.columns)
    assert len(pw) == 1 and pw["attacked by both"][0] == t3["attacked"].iloc[0]
    eff = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert any(sum(t.get("type") == "scatter" and t.get("mode") == "markers+text" for t in f["data"]) == 3
               for f in eff)
    # the run filter: one run left, one row
    key = next(r["run_key"] for r in table3(ResultsStore(store).rows()) if r["label"] == LABELS[1])
    at.multiselect(key="bench_f_run").set_value([key]).run()
    t3 = next(d.value for d in at.dataframe if "success_rate" in d.value.columns)
    assert list(t3["attack"]) == [LABELS[1]]
    assert any(f"Run {key}: {LABELS[1]}" in c.value for c in at.caption)


def _row(run, seed=0, threads=2, settings=None):
    numerics = {"threads": threads, "torch": "2.14.1", "device": "cpu (avx512)", "tf32": False,
                "deterministic": False, "lp_threads": 1, "lp_batched": False}
    return {"run_key": run, "model": "m", "dataset": "d", "attack": "mla-lp", "settings": settings or {},
            "seed": seed, "numerics": numerics, "success": True, "linf": 0.01, "l2": 1.0, "rmsd": 0.5,
            "rmsd_paper": 0.25, "time_s": 1.0, "model_calls": 10, "attacked_reached": 1}


def test_runs_that_differ_only_in_seed_or_numerics_are_told_apart():
    labels = sorted(r["label"] for r in table3([_row("a", seed=0), _row("b", seed=1)]))
    assert labels == ["MLA-LP (seed 0)", "MLA-LP (seed 1)"]
    labels = sorted(r["label"] for r in table3([_row("a", threads=2), _row("b", threads=1)]))
    assert labels == ["MLA-LP (threads 1)", "MLA-LP (threads 2)"]
    labels = sorted(r["label"] for r in table3([_row("a", settings={"box": True}), _row("b", settings={"box": True},
                                                                                        threads=1)]))
    assert labels == ["MLA-LP (exact [0,1] box inside the LP on, threads 1)",
                      "MLA-LP (exact [0,1] box inside the LP on, threads 2)"]
    # two data sets, two models: never one row
    rows = [_row("a"), {**_row("b"), "dataset": "e"}, {**_row("c"), "model": "n"}]
    assert len(table3(rows)) == 3 and all(r["label"] == "MLA-LP" for r in table3(rows))
