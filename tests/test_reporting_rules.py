"""Reporting against its docstrings and the paper's Table III conventions, on hand-made rows:
labels that name what differs from the paper's settings (with the paper's value in the notes),
the show objectives' columns, the paper's numbers beside ours, budget curves and their grid,
every export (CSV raw, Markdown, LaTeX with the best value per (model, data set) in bold as the
paper prints it), and the runs behind the rows."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest

from mlalp_core.experiments.reporting import (
    PAPER_TABLE3,
    TABLE2_COLUMNS,
    budget_curves,
    curve_groups,
    curve_names,
    export,
    numerics_text,
    run_labels,
    run_notes,
    setting_differences,
    table3,
    to_csv,
    to_latex,
    to_markdown,
    with_paper,
)

NUMERICS = {"threads": 2, "torch": "2.5.1", "device": "cpu (avx2)", "tf32": False, "deterministic": False,
            "lp_threads": 1, "lp_batched": False}


def _row(run, attack="mla-lp", model="ml-gcn", dataset="voc2007", seed=0, settings=None, success=True, linf=0.01,
         time_s=1.0, reached=1, numerics=None):
    return {"run_key": run, "model": model, "dataset": dataset, "attack": attack, "settings": settings or {},
            "seed": seed, "numerics": numerics, "success": success, "linf": linf, "l2": 100 * linf,
            "rmsd": 10 * linf, "rmsd_paper": 5 * linf, "time_s": time_s, "model_calls": 7,
            "attacked_reached": reached}


def test_setting_differences_name_each_setting_that_is_not_the_papers():
    diffs = setting_differences("mla-lp", {"max_iterations": 2, "box": True, "lp_tol": 1e-6, "mode": "authors",
                                           "batch_size": 4, "threshold": 0.6, "objective": "hide-all",
                                           "precision": "float32", "extra_knob": None})
    short = [d[0] for d in diffs]
    assert short == ["max iterations 2", "exact [0,1] box inside the LP on", "authors' mode", "extra_knob auto",
                     "batch 4", "stored as float32", "threshold 0.6"]
    assert diffs[0][1] == "max iterations 2 (paper: 10)" and diffs[1][1].endswith("(paper: off)")
    assert diffs[4][1] == "batch 4 (the authors': 10)"
    assert diffs[5][1] == "perturbations stored as float32 (default float16)" and diffs[6][1].endswith("(paper: 0.5)")
    # the paper's values and the authors' own batch are not differences
    assert setting_differences("mla-lp", {"max_iterations": 10, "mode": "authors", "batch_size": 10,
                                          "threshold": 0.5}) == [("authors' mode", "authors' mode (the authors' "
                                                                                    "code, quirks included)")]
    assert setting_differences("mla-lp", None) == []
    # an attack this version does not know: only what every run has
    assert setting_differences("old-attack", {"threshold": 0.7, "x": 1, "batch_size": 3}) == [
        ("threshold 0.7", "threshold 0.7 (paper: 0.5)")]


def test_settings_the_paper_does_not_have_are_compared_with_the_default_not_the_paper():
    """The l_inf family is not in the paper, nor is MLA-LP+'s polish: their values are mlalp's."""
    assert setting_differences("pgd", {"min_budget": True, "eps": 0.02}) == [
        ("budget eps 0.02", "budget eps 0.02 (default: 0.0313725)"),
        ("minimum-budget search on", "minimum-budget search on (default: off)")]
    diffs = dict(setting_differences("mla-lp", {"polish": "pgd", "polish_factor": 0.9, "max_iterations": 5}))
    assert diffs == {"max iterations 5": "max iterations 5 (paper: 10)",
                     "polish (MLA-LP+) pgd": "polish (MLA-LP+) pgd (paper: none)",
                     "polish budget factor 0.9": "polish budget factor 0.9 (default: 0.97)"}


def test_numerics_in_words():
    assert numerics_text(None) == "numerics not recorded" and numerics_text({}) == "numerics not recorded"
    assert numerics_text(NUMERICS) == "2 threads, torch 2.5.1, cpu (avx2)"
    assert numerics_text({"threads": 1, "future": "x"}) == "future x, threads 1"  # a newer mlalp's fields


def test_labels_and_notes_name_the_runs_behind_the_rows():
    rows = [_row("k1" * 8, settings={"max_iterations": 2}, numerics=NUMERICS),
            _row("k2" * 8, numerics=NUMERICS),
            _row("k3" * 8, numerics={**NUMERICS, "threads": 1}),
            _row("k4" * 8, attack="ml-cw", settings={"objective": "hide-all"}, seed=3, numerics=NUMERICS)]
    labels = run_labels(rows)
    assert labels == {"k1" * 8: "MLA-LP (max iterations 2)", "k2" * 8: "MLA-LP (threads 2)",
                      "k3" * 8: "MLA-LP (threads 1)", "k4" * 8: "ML-CW"}
    table = table3(rows)
    assert {r["objective"] for r in table} == {"hide-one", "hide-all"}  # several objectives: a column
    # runs of one attack in a block: by their labels
    assert [r["label"] for r in table if r["attack"] == "mla-lp"] == [
        "MLA-LP (max iterations 2)", "MLA-LP (threads 1)", "MLA-LP (threads 2)"]
    notes = run_notes(table)
    assert len(notes) == 4
    cw = next(n for n in notes if n.startswith("ML-CW"))
    assert cw == "ML-CW: run k4k4k4k4, seed 3, 2 threads, torch 2.5.1, cpu (avx2), objective hide-all; the paper's settings"
    two = next(n for n in notes if n.startswith("MLA-LP (max"))
    assert two.endswith("; max iterations 2 (paper: 10)")
    assert run_notes([{"label": "x"}]) == []  # rows that are not runs (Table II) have no notes
    # one block per objective in a (model, data set): hide-all's rows, then hide-one's, never interleaved
    mixed = table3(rows[:3] + [_row("k5" * 8, settings={"objective": "hide-all"}), _row("k6" * 8, attack="ml-cw")])
    assert [(r["objective"], r["attack"]) for r in mixed] == [
        ("hide-all", "mla-lp"), ("hide-one", "ml-cw"), ("hide-one", "mla-lp"), ("hide-one", "mla-lp"),
        ("hide-one", "mla-lp")]
    # an objective column only when some run pursues another objective than the paper's
    assert "objective" not in table3(rows[:3])[0]


def test_show_objectives_get_labels_shown_and_success_at_k():
    rows = [_row("s", settings={"objective": "show-many"}, reached=r, success=r >= 3) for r in (0, 1, 2, 3, 5)]
    (r,) = table3(rows)
    assert r["objective"] == "show-many" and r["labels_shown"] == pytest.approx(11 / 5)
    assert (r["success_at_1"], r["success_at_2"], r["success_at_3"]) == pytest.approx((0.8, 0.6, 0.4))
    assert "labels_shown" not in table3([_row("h")])[0]
    # a column some rows have (the show objectives') is exported, empty for the others
    both = table3(rows + [_row("h")])
    parsed = list(csv.DictReader(io.StringIO(to_csv(both))))
    assert [r["labels_shown"] for r in parsed] == ["", "2.2"] and "labels shown" in to_markdown(both)


def test_the_papers_numbers_sit_beside_ours_for_its_objective_only():
    rows = [_row("a"), _row("b", attack="ml-cw", dataset="voc2012"),
            _row("c", settings={"objective": "hide-all"}), _row("d", model="mine")]
    out = {(r["attack"], r["dataset"], r.get("objective"), r["model"]): r for r in with_paper(table3(rows))}
    mla = out[("mla-lp", "voc2007", "hide-one", "ml-gcn")]
    assert (mla["paper_success_rate"], mla["paper_rmsd"], mla["paper_l2"], mla["paper_linf"]) == \
        PAPER_TABLE3[("ml-gcn", "voc2007", "mla-lp")]
    assert out[("ml-cw", "voc2012", "hide-one", "ml-gcn")]["paper_linf"] == 0.0151
    assert out[("mla-lp", "voc2007", "hide-all", "ml-gcn")]["paper_success_rate"] is None
    assert out[("mla-lp", "voc2007", "hide-one", "mine")]["paper_l2"] is None


def test_budget_curves_and_their_default_grid():
    rows = [_row("a", linf=v, success=s) for v, s in ((0.01, True), (0.04, True), (0.001, False), (0.02, True))]
    rows.append(_row("b", attack="fgsm", linf=0.5, success=False))
    curves = budget_curves(rows, "linf", points=20)
    (eps, rate) = curves[("ml-gcn", "voc2007", "mla-lp", "MLA-LP")]
    assert eps[0] == 0.0 and len(eps) == 21  # 0, then log-spaced over the successes' range
    assert eps[1] == pytest.approx(0.005) and eps[-1] == pytest.approx(0.042)
    assert np.allclose(np.diff(np.log(eps[1:])), math.log(0.042 / 0.005) / 19)
    assert rate[0] == 0.0 and rate[-1] == 0.75  # the failure never counts, whatever its distortion
    assert curves[("ml-gcn", "voc2007", "fgsm", "FGSM")][1].max() == 0.0
    none = budget_curves([_row("c", success=False)], "l2", points=5)
    assert none[("ml-gcn", "voc2007", "mla-lp", "MLA-LP")][0].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    (_, r2), = budget_curves(rows[:4], "l2", grid=[0.0, 1.5, 2.5, 5.0]).values()
    assert r2.tolist() == [0.0, 0.25, 0.5, 0.75]
    (_, at), = budget_curves(rows[:4], "linf", grid=[0.01, 0.02, 0.04]).values()
    assert at.tolist() == [0.25, 0.5, 0.75]  # a success exactly at the budget counts (within means <=)
    (_, rm), = budget_curves(rows[:4], "rmsd", grid=[0.0, 0.15, 1.0]).values()
    assert rm.tolist() == [0.0, 0.25, 0.75]
    with pytest.raises(ValueError, match="norm must be"):
        budget_curves(rows, "l1")
    # several objectives: the label says which
    keys = budget_curves([_row("a"), _row("h", settings={"objective": "hide-all"})], "linf")
    assert sorted(k[3] for k in keys) == ["MLA-LP [hide-all]", "MLA-LP [hide-one]"]
    assert curve_groups({"linf": keys}) == [("ml-gcn", "voc2007")]
    assert curve_groups({"a": {("m", "d", "x", "X"): 0, ("n", "d", "x", "X"): 0}, "b": {("m", "d", "y", "Y"): 0}}) \
        == [("m", "d"), ("n", "d")]
    assert curve_names(("m", "d", "ml-cw", "ML-CW (seed 2)")) == ("ml-cw", "ML-CW (seed 2)")
    assert curve_names("ml-cw") == ("ml-cw", "ML-CW") and curve_names(("m", "pgd")) == ("pgd", "PGD")


def _two_blocks():
    rows = [_row("a1", linf=0.03, success=True), _row("a1", linf=0.01, success=False),
            _row("a2", attack="ml-cw", linf=0.02), _row("a3", attack="ml-deepfool", success=False),
            _row("b1", dataset="voc2012", linf=0.05), _row("b2", dataset="voc2012", attack="ml-cw", linf=0.05)]
    return table3(rows)


def test_csv_has_raw_values_and_the_run_behind_each_row():
    table = _two_blocks()
    parsed = list(csv.DictReader(io.StringIO(to_csv(table))))
    header = to_csv(table).splitlines()[0].split(",")
    assert header[:7] == ["model", "dataset", "norm", "attack", "label", "attacked", "success_rate"]
    assert header[-5:] == ["time_s", "model_calls", "run_key", "seed", "settings"] or header[-4:] == \
        ["run_key", "seed", "settings", "numerics"]
    assert [r["run_key"] for r in parsed] == [r["run_key"] for r in table]
    mla = next(r for r in parsed if r["run_key"] == "a1")
    assert float(mla["success_rate"]) == 0.5 and float(mla["linf"]) == 0.03 and mla["label"] == "MLA-LP"
    df = next(r for r in parsed if r["attack"] == "ml-deepfool")
    assert df["linf"] == "nan" and df["success_rate"] == "0.0"
    assert mla["numerics"] == "numerics not recorded"
    # other columns (Table II) as given
    t2 = [{"model": "m", "dataset": "d", "split": "test", "test_examples": 10, "to_attack": 4}]
    assert to_csv(t2).splitlines() == ["model,dataset,split,test_examples,to_attack", "m,d,test,10,4"]
    assert to_csv(t2, TABLE2_COLUMNS) == to_csv(t2)


def test_markdown_formats_and_lists_the_runs():
    table = _two_blocks()
    md = to_markdown(table)
    lines = md.splitlines()
    assert lines[0].startswith("| model | dataset | norm | attack | attacked | success rate |")
    assert lines[1].startswith("|---|---|---|---|---:|---:|")
    df = next(line for line in lines if "| ML-DeepFool |" in line)
    assert "| 0.0000 | - | - |" in df  # no success: no distortion, shown as '-'
    assert "| 0.5000 | 0.3000 | 0.1500 | 3.0000 | 0.0300 |" in next(line for line in lines if "| MLA-LP |" in line)
    assert lines[lines.index("Runs (one row each):") + 1].startswith("- ML-CW: run a2")
    assert md.count("\n- ") == 5
    t2 = to_markdown([{"model": "m", "dataset": "d", "split": "test", "test_examples": 10, "to_attack": 4}])
    assert "Runs" not in t2 and "| m | d | test | 10 | 4 |" in t2


def test_latex_bolds_the_best_of_each_block_as_the_paper_does():
    table = _two_blocks()
    tex = to_latex(table, caption="Table III", label="tab:3")
    assert tex.startswith("% needs \\usepackage{booktabs}") and "\\caption{Table III}" in tex
    assert "\\label{tab:3}" in tex
    body = [line for line in tex.splitlines() if line.startswith("ml-gcn &")]
    assert len(body) == 5
    cw07, df07, mla07, cw12, mla12 = body
    # voc2007: ML-CW has the best success rate (1.0) and the smallest linf (0.02); ties are both bold
    assert "\\bfseries 1.0000" in cw07 and "\\bfseries 0.0200" in cw07 and "\\bfseries" not in mla07.split("&")[5]
    assert "\\bfseries 0.0300" not in mla07 and "-" in df07
    assert cw12.count("\\bfseries 0.0500") == 1 and mla12.count("\\bfseries 0.0500") == 1  # a tie in voc2012
    # the five columns with a best value, per block: ML-CW's five in voc2007, both rows' five in voc2012 (ties);
    # no other column (attacked, time, calls) is ever bold
    assert tex.count("\\bfseries") == 15
    assert "\\begin{tabular}{llll" + "r" * 8 + "}" in tex  # text columns left, numbers right
    notes = tex.index("Runs (one row each)")
    assert tex.index("\\end{tabular}") < notes < tex.index("\\end{table}")
    assert tex.count(";") >= 4  # the five runs, separated


def test_export_routes_each_format():
    table = _two_blocks()
    assert export(table, "CSV") == to_csv(table) and export(table, "md") == to_markdown(table)
    assert export(table, "markdown") == to_markdown(table)
    assert export(table, "tex", caption="c") == to_latex(table, caption="c") and export(table, "latex") == \
        to_latex(table)
    with pytest.raises(ValueError, match="unknown format 'xls'"):
        export(table, "xls")


def test_rows_of_one_run_without_a_key_are_one_row_whatever_their_settings_order():
    a = _row(None, settings={"max_iterations": 2, "box": True})
    b = _row(None, settings={"box": True, "max_iterations": 2}, linf=0.03)
    for r in (a, b):
        r.pop("run_key")
    (row,) = table3([a, b])
    assert row["attacked"] == 2 and row["linf"] == pytest.approx(0.02)


def test_rows_without_a_key_may_hold_numpy_values():
    """Rows made by hand often carry numpy scalars (a seed from an array, a budget from a grid):
    they still group into one row per run, and runs that differ only in such a value stay apart."""
    rows = [_row(None, seed=np.int64(s), settings={"max_iterations": np.int64(2), "eps": np.float32(0.5)},
                 linf=0.01 * (k + 1)) for s in (0, 1) for k in range(2)]
    for r in rows:
        r.pop("run_key")
    table = table3(rows)
    assert len(table) == 2 and [t["attacked"] for t in table] == [2, 2]
    assert [t["linf"] for t in table] == pytest.approx([0.015, 0.015])


def test_an_empty_table_exports_its_header_and_no_row():
    from mlalp_core.experiments.reporting import TABLE2_COLUMNS, TABLE3_COLUMNS

    for columns in (TABLE2_COLUMNS, TABLE3_COLUMNS):
        assert to_csv([], columns).splitlines() == [",".join(columns)]
        lines = to_markdown([], columns).splitlines()
        assert lines[0] == "| " + " | ".join(h for h, _, _ in columns.values()) + " |" and len(lines) == 2


def test_latex_escapes_names_and_centres_its_float_and_markdown_keeps_the_run_list_apart():
    """A model named with an underscore or an ampersand must compile in LaTeX; the table float is
    centred; in Markdown the run list is a list after a blank line, not a row of the table."""
    table = [dict(r, model="my_model & co") for r in _two_blocks()]
    tex = to_latex(table, caption="c")
    assert "my\\_model \\& co" in tex and "my_model & co" not in tex
    assert "\\centering" in tex
    md = to_markdown(_two_blocks()).splitlines()
    at = md.index("Runs (one row each):")
    assert md[at - 1] == "" and md[at - 2].startswith("|")


def test_hand_made_rows_that_differ_only_in_numerics_are_two_runs():
    rows = [_row("", linf=0.01, numerics=dict(NUMERICS, threads=1)), _row("", linf=0.03, numerics=NUMERICS)]
    t3 = table3(rows)
    assert len(t3) == 2 and sorted(r["linf"] for r in t3) == pytest.approx([0.01, 0.03])


def test_latex_escapes_the_headers_a_caller_names():
    """to_latex's docstring: every cell AND header is escaped (a column titled l_inf or 50% must compile)."""
    table = [{"model": "m", "share": 0.5}]
    tex = to_latex(table, columns={"model": ("model", "{}", None), "share": ("l_inf share 50%", "{:.2f}", None)})
    assert "l\\_inf share 50\\%" in tex and "l_inf share 50%" not in tex
