"""The pairwise report and the efficiency figure on rows whose answers are worked out by hand."""

from __future__ import annotations

import json
import sqlite3

import pytest

from mlalp_core.cli import main
from mlalp_core.errors import InvalidInputError
from mlalp_core.experiments.pairwise import efficiency, pairwise
from mlalp_core.experiments.store import ResultsStore


def _r(run, attack, ex, success, linf, l2, calls, t, model="m", dataset="d", settings=None):
    return {"run_key": run, "model": model, "dataset": dataset, "attack": attack, "example_id": ex,
            "success": success, "linf": linf, "l2": l2, "model_calls": calls, "time_s": t, "seed": 0,
            "settings": settings or {}, "numerics": None}


ROWS = [
    # A = MLA-LP, B = PGD on examples e1..e5 (e5 only attacked by A, e6 only by B)
    _r("runA", "mla-lp", "e1", True, 0.010, 1.0, 30, 1.0), _r("runB", "pgd", "e1", True, 0.020, 1.0, 100, 2.0),
    _r("runA", "mla-lp", "e2", True, 0.030, 3.0, 30, 1.0), _r("runB", "pgd", "e2", True, 0.015, 2.0, 100, 2.0),
    _r("runA", "mla-lp", "e3", True, 0.040, 2.0, 30, 3.0), _r("runB", "pgd", "e3", True, 0.040, 4.0, 100, 2.0),
    _r("runA", "mla-lp", "e4", False, 0.500, 9.0, 60, 1.0), _r("runB", "pgd", "e4", True, 0.010, 1.0, 100, 2.0),
    _r("runA", "mla-lp", "e5", True, 0.001, 0.1, 10, 1.0), _r("runB", "pgd", "e6", True, 0.001, 0.1, 10, 9.0),
    # another model: one common example that neither reaches
    _r("runC", "mla-lp", "e1", False, 0.3, 3.0, 30, 1.0, model="n"),
    _r("runD", "pgd", "e1", False, 0.3, 3.0, 100, 1.0, model="n"),
]


def test_pairwise_on_the_examples_both_attacked():
    (row,) = [r for r in pairwise(ROWS[:10], "mla-lp", "pgd")]
    assert (row["a"], row["b"], row["common"], row["both"]) == ("MLA-LP", "PGD", 4, 3)
    assert row["success_a"] == pytest.approx(3 / 4) and row["success_b"] == 1.0 and row["success_union"] == 1.0
    # l_inf ratios A/B on e1..e3: 0.5, 2.0, 1.0 -> median 1.0, quartiles 0.75 and 1.5
    assert (row["linf_ratio_median"], row["linf_ratio_q1"], row["linf_ratio_q3"]) == pytest.approx((1.0, 0.75, 1.5))
    assert (row["linf_wins"], row["linf_losses"], row["linf_ties"]) == (1, 1, 1)
    # l_2 ratios: 1.0, 1.5, 0.5 -> median 1.0
    assert row["l2_ratio_median"] == pytest.approx(1.0) and row["l2_ratio_q3"] == pytest.approx(1.25)
    # calls and time over the 4 common examples (e5 and e6 are not common)
    assert row["calls_a"] == pytest.approx((30 + 30 + 30 + 60) / 4) and row["calls_b"] == 100
    assert row["calls_ratio"] == pytest.approx(0.375)
    assert row["time_a"] == pytest.approx(1.5) and row["time_b"] == pytest.approx(2.0)
    # swapped: the ratios invert, wins and losses swap
    (back,) = pairwise(ROWS[:10], "pgd", "mla-lp")
    assert back["linf_ratio_median"] == 1.0 and back["linf_wins"] == row["linf_losses"] == 1
    assert back["calls_ratio"] == pytest.approx(1 / 0.375)


def test_pairwise_groups_by_model_and_names_runs():
    out = pairwise(ROWS, "runA", "runB") + pairwise(ROWS, "runC", "runD")
    assert [(r["model"], r["common"], r["both"]) for r in out] == [("m", 4, 3), ("n", 1, 0)]
    with pytest.raises(InvalidInputError, match="has 2 runs here"):
        pairwise(ROWS, "mla-lp", "pgd")  # two MLA-LP runs (two models): say which
    with pytest.raises(InvalidInputError, match="no run of 'bim'"):
        pairwise(ROWS, "bim", "pgd")
    with pytest.raises(InvalidInputError, match="share no attacked example"):
        pairwise(ROWS, "runA", "runD")


def test_efficiency_points():
    pts = {p["run_key"]: p for p in efficiency(ROWS[:10], budget=0.015)}
    a = pts["runA"]
    assert a["model_calls"] == pytest.approx(160 / 5) and a["success_rate"] == pytest.approx(4 / 5)
    assert a["linf"] == pytest.approx((0.010 + 0.030 + 0.040 + 0.001) / 4)
    assert a["success_within"] == pytest.approx(2 / 5)  # e1 and e5 within 0.015
    assert pts["runB"]["success_within"] == pytest.approx(3 / 5)  # e2 (0.015: <= budget), e4, e6
    with pytest.raises(InvalidInputError):
        efficiency(ROWS, budget=2.0)


def _store_with(tmp_path, rows):
    """A real store file holding ``rows`` (written through SQL, as the runner would)."""
    path = tmp_path / "s.sqlite"
    ResultsStore(path, readonly=False)
    conn = sqlite3.connect(path)
    for run in sorted({r["run_key"] for r in rows}):
        first = next(r for r in rows if r["run_key"] == run)
        conn.execute("INSERT INTO runs (run_key, created, model, model_id, dataset, split, data_id, attack, settings, "
                     "seed, threshold, label_names, input_size, device, version, numerics) VALUES "
                     "(?,0,?,?,?,'test','d0',?,?,0,0.5,'[]','[8,8]','cpu','t',NULL)",
                     (run, first["model"], first["model"], first["dataset"], first["attack"], json.dumps({})))
    for k, r in enumerate(rows):
        conn.execute("INSERT INTO results (run_key, example_id, idx, target, success, l1, l2, linf, rmsd, rmsd_paper, "
                     "labels_wrong, collateral, attacked_reached, attacked_total, iterations, model_calls, time_s, "
                     "trace) VALUES (?,?,?,'[]',?,0,?,?,0,0,0,0,0,0,1,?,?,'[]')",
                     (r["run_key"], r["example_id"], k, int(r["success"]), r["l2"], r["linf"], r["model_calls"],
                      r["time_s"]))
    conn.commit()
    conn.close()
    return path


def test_report_pairwise_and_efficiency_from_a_store(tmp_path, capsys):
    store = _store_with(tmp_path, ROWS[:10])
    assert main(["report", "--store", str(store), "--pairwise", "mla-lp", "pgd", "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("model,dataset,a,b,common") and len(lines) == 2
    assert ",MLA-LP,PGD,4," in lines[1]
    out = tmp_path / "eff.pdf"
    assert main(["report", "--store", str(store), "--efficiency", str(out), "--eps", "0.015"]) == 0
    assert out.read_bytes().startswith(b"%PDF")
    assert main(["report", "--store", str(store), "--efficiency", str(tmp_path / "eff.txt")]) == 2
    # the file it wrote may be written again (it is in mlalp's ledger); another file only with --force
    assert main(["report", "--store", str(store), "--efficiency", str(out)]) == 0
    other = tmp_path / "mine.png"
    other.write_bytes(b"not mlalp's")
    assert main(["report", "--store", str(store), "--efficiency", str(other)]) == 2
    assert other.read_bytes() == b"not mlalp's"
    assert main(["report", "--store", str(store), "--efficiency", str(other), "--force"]) == 0
    assert other.read_bytes().startswith(b"\x89PNG")


def test_a_run_has_one_marker_in_every_panel_of_the_efficiency_figure():
    """The legend names each run once: its marker must be the same in each model's panel, however
    the runs are ordered within each panel."""
    from mlalp_core.viz.efficiency import efficiency_figure, efficiency_paper

    def pt(model, label, calls, linf):
        return {"model": model, "dataset": "d", "label": label, "attack": "pgd", "run_key": f"{model}{label}",
                "model_calls": calls, "linf": linf, "success_within": 0.5}

    points = [pt("m", "A", 10, 0.01), pt("m", "B", 20, 0.02), pt("n", "B", 20, 0.02), pt("n", "A", 10, 0.01)]
    fig = efficiency_paper(points, budget=0.02)
    seen: dict[str, set] = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            seen.setdefault(line.get_label(), set()).add(line.get_marker())
    assert set(seen) == {"A", "B"} and all(len(m) == 1 for m in seen.values()) and seen["A"] != seen["B"]
    symbols: dict[str, set] = {}
    for trace in efficiency_figure(points, budget=0.02).data:
        symbols.setdefault(trace.name, set()).add(trace.marker.symbol)
    assert all(len(s) == 1 for s in symbols.values()) and symbols["A"] != symbols["B"]
