"""Aggregates of stored results: the paper's Tables II and III, success-against-budget curves,
and their export as CSV, Markdown and LaTeX.

Conventions (the paper's): success rate over all attacked examples; distortions (RMSD, l_2,
l_inf) averaged over the successful examples only; l_2 and l_inf in [0,1] pixel units; RMSD on
the 0..255 scale (``rmsd``) and as printed in the paper (``rmsd_paper`` = 127.5 * RMS(r)).

A table row is one run (:func:`table3` groups by run key): two runs of the same attack with other
settings, another mode, seed, objective or numerics are two rows, each labelled by what differs
from the paper's settings ("ML-CW (max iterations 100, binary search steps 3)", "MLA-LP
(authors' mode)"), and every export lists the runs behind its rows (:func:`run_notes`). Nothing
averages two runs.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..attacks import DISPLAY_NAMES

#: Column name -> (header, format, best: "max" | "min" | None)
TABLE3_COLUMNS: dict[str, tuple[str, str, str | None]] = {
    "model": ("model", "{}", None),
    "dataset": ("dataset", "{}", None),
    "objective": ("objective", "{}", None),
    "norm": ("norm", "{}", None),
    "label": ("attack", "{}", None),
    "attacked": ("attacked", "{:d}", None),
    "success_rate": ("success rate", "{:.4f}", "max"),
    "rmsd": ("RMSD (0..255)", "{:.4f}", "min"),
    "rmsd_paper": ("RMSD (paper)", "{:.4f}", "min"),
    "l2": ("l2", "{:.4f}", "min"),
    "linf": ("linf", "{:.4f}", "min"),
    # MLA-LP times each example; the other attacks divide their batch's wall time by its size
    "time_s": ("time/example (s)", "{:.3f}", None),
    "model_calls": ("model calls/example", "{:.0f}", None),
    "labels_shown": ("labels shown", "{:.2f}", "max"),
    "success_at_1": ("success, >= 1 shown", "{:.4f}", "max"),
    "success_at_2": ("success, >= 2 shown", "{:.4f}", "max"),
    "success_at_3": ("success, >= 3 shown", "{:.4f}", "max"),
}
#: Raw columns CSV adds to Table III (after the table's own): the run behind each row.
TABLE3_CSV_EXTRA = ("attack", "run_key", "seed", "settings", "numerics")

TABLE2_COLUMNS: dict[str, tuple[str, str, str | None]] = {
    "model": ("model", "{}", None),
    "dataset": ("dataset", "{}", None),
    "split": ("split", "{}", None),
    "test_examples": ("test examples", "{:d}", None),
    "to_attack": ("examples to be attacked", "{:d}", None),
}

#: The paper's Table III, for side-by-side comparison: (model, dataset, attack) ->
#: (success rate, RMSD as printed, l2, linf).
PAPER_TABLE3: dict[tuple[str, str, str], tuple[float, float | None, float | None, float | None]] = {
    ("ml-gcn", "voc2007", "ml-cw"): (0.9757, 0.2868, 1.7456, 0.0243),
    ("ml-gcn", "voc2007", "ml-rank1"): (0.1931, 1.1466, 6.9787, 0.0357),
    ("ml-gcn", "voc2007", "ml-rank2"): (0.9128, 1.1637, 7.0824, 0.0395),
    ("ml-gcn", "voc2007", "ml-deepfool"): (0.0000, None, None, None),
    ("ml-gcn", "voc2007", "mla-lp"): (0.8751, 0.0917, 0.5585, 0.0009),
    ("ml-gcn", "voc2012", "ml-cw"): (0.9361, 0.3229, 1.9652, 0.0151),
    ("ml-gcn", "voc2012", "ml-rank1"): (0.2227, 1.2951, 7.8825, 0.0318),
    ("ml-gcn", "voc2012", "ml-rank2"): (0.8863, 1.1687, 7.1130, 0.0323),
    ("ml-gcn", "voc2012", "ml-deepfool"): (0.0092, 73.6378, 448.1560, 1.0000),
    ("ml-gcn", "voc2012", "mla-lp"): (0.8329, 0.0399, 0.2432, 0.0004),
    ("ml-liw", "voc2007", "ml-cw"): (0.9972, 0.3204, 1.3014, 0.0423),
    ("ml-liw", "voc2007", "ml-rank1"): (0.2070, 1.8699, 7.5953, 0.0496),
    ("ml-liw", "voc2007", "ml-rank2"): (0.9296, 2.0951, 8.5102, 0.0717),
    ("ml-liw", "voc2007", "ml-deepfool"): (0.4492, 64.0180, 260.0303, 0.9978),
    ("ml-liw", "voc2007", "mla-lp"): (0.9052, 0.2418, 0.9824, 0.0026),
    ("ml-liw", "voc2012", "ml-cw"): (0.9948, 0.3209, 1.3036, 0.0349),
    ("ml-liw", "voc2012", "ml-rank1"): (0.1487, 1.8550, 7.5349, 0.0454),
    ("ml-liw", "voc2012", "ml-rank2"): (0.8632, 1.8746, 7.6146, 0.0578),
    ("ml-liw", "voc2012", "ml-deepfool"): (0.3914, 67.4167, 273.8353, 0.9962),
    ("ml-liw", "voc2012", "mla-lp"): (0.8888, 0.1952, 0.7928, 0.0020),
}

PAPER_TABLE2 = {("ml-gcn", "voc2007"): (4952, 1113), ("ml-gcn", "voc2012"): (5823, 862),
                ("ml-liw", "voc2007"): (4952, 739), ("ml-liw", "voc2012"): (5823, 585)}

#: Row order: the paper's Table III (its l_2 attacks, then MLA-LP), then the field's attacks by norm.
_ATTACK_ORDER = ["ml-cw", "ml-rank1", "ml-rank2", "ml-deepfool", "pgd-l2", "mla-lp", "fgsm", "bim", "pgd", "mi-fgsm"]
#: k of the "success at k labels shown" columns of the show objectives
SHOW_K = (1, 2, 3)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def _norm(attack: str) -> str:
    from ..attacks import ATTACKS

    cls = ATTACKS.get(attack)
    return "l_inf" if cls is not None and cls.norm == "linf" else "l_2"


def _objective(r: Mapping[str, Any]) -> str:
    return (r.get("settings") or {}).get("objective", "hide-one")


def _run_of(r: Mapping[str, Any]) -> str:
    """The run a stored row belongs to (rows made by hand without a key: their identity's hash)."""
    if r.get("run_key"):
        return str(r["run_key"])
    ident = [r.get("model"), r.get("dataset"), r.get("attack"), r.get("settings"), r.get("seed"), r.get("numerics")]
    return "~" + hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:19]


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "auto"
    return f"{value:g}" if isinstance(value, float) else str(value)


def run_name(attack: str, settings: Mapping[str, Any] | None) -> tuple[str, set[str]]:
    """What a run of ``attack`` with ``settings`` is called (MLA-LP+ for a polished MLA-LP) and
    the settings that name says already."""
    from ..attacks import ATTACKS

    cls = ATTACKS.get(attack)
    if cls is None:
        return DISPLAY_NAMES.get(attack, attack), set()
    return cls.run_name(dict(settings or {}))


def setting_differences(attack: str, settings: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """(short text, text with the paper's value) for each recorded setting of a run that differs
    from the paper's: the attack's schema defaults, threshold 0.5, and in the authors' mode their
    own batch size; "default" instead of "paper" for a setting or an attack the paper does not
    have (the l_inf family, MLA-LP+'s polish). The objective is a column of its own."""
    from ..attacks import ATTACKS, PAPER_ATTACKS

    settings = dict(settings or {})
    cls = ATTACKS.get(attack)
    out: list[tuple[str, str]] = []
    threshold = settings.pop("threshold", 0.5)
    settings.pop("objective", None)
    batch = settings.pop("batch_size", None)
    precision = settings.pop("precision", None)
    if cls is not None:
        for name, (value, paper) in cls.schema.differences(settings).items():
            setting = cls.schema.settings[name]
            # the paper's value where the paper has the setting; mlalp's default where it does not
            source = "paper" if attack in PAPER_ATTACKS and setting.from_paper else "default"
            if name == "mode" and value == "authors":
                out.append(("authors' mode", "authors' mode (the authors' code, quirks included)"))
            else:
                out.append((f"{setting.title} {_value_text(value)}", f"{setting.title} {_value_text(value)} ({source}: "
                                                                     f"{_value_text(paper)})"))
        unknown = sorted(k for k in settings if k not in cls.schema)
        out += [(f"{k} {_value_text(settings[k])}", f"{k} {_value_text(settings[k])}") for k in unknown]
        paper_batch = getattr(cls, "authors_batch", None)
        if batch is not None and batch != paper_batch:
            out.append((f"batch {batch}", f"batch {batch} (the authors': {paper_batch})"))
    if precision is not None:
        out.append((f"stored as {precision}", f"perturbations stored as {precision} (default float16)"))
    if threshold != 0.5:
        out.append((f"threshold {_value_text(threshold)}", f"threshold {_value_text(threshold)} (paper: 0.5)"))
    return out


def numerics_text(numerics: Mapping[str, Any] | None) -> str:
    """A run's numerics in words (:meth:`mlalp_core.numerics.Numerics.describe`)."""
    from ..numerics import Numerics

    if not numerics:
        return "numerics not recorded"
    try:
        return Numerics(**numerics).describe()
    except TypeError:
        return ", ".join(f"{k} {v}" for k, v in sorted(numerics.items()))


def table3(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table III from :meth:`ResultsStore.rows` output: one row per run, grouped by the attack's
    norm. ``label`` names the attack and what differs from the paper's settings; runs of one
    (model, data set, objective) whose labels would be equal (another seed, other numerics) are
    told apart by that difference. Objectives other than the paper's hide-one get an
    ``objective`` column; the show objectives also the labels shown (of those asked for) and the
    success at k = 1, 2, 3 labels shown."""
    groups = _runs(rows)
    labels = run_labels(rows)
    objectives = {_objective(rs[0]) for rs in groups.values()}
    out = []
    for key, rs in groups.items():
        first = rs[0]
        model, dataset, attack, objective = first["model"], first["dataset"], first["attack"], _objective(first)
        ok = [r for r in rs if r["success"]]
        diffs = setting_differences(attack, first.get("settings"))
        row: dict[str, Any] = {"model": model, "dataset": dataset}
        if objectives != {"hide-one"}:
            row["objective"] = objective
        row.update({
            "norm": _norm(attack), "attack": attack,
            "label": labels[key],
            "attacked": len(rs),
            "success_rate": len(ok) / len(rs) if rs else float("nan"),
            "rmsd": _mean([r["rmsd"] for r in ok]),
            "rmsd_paper": _mean([r["rmsd_paper"] for r in ok]),
            "l2": _mean([r["l2"] for r in ok]),
            "linf": _mean([r["linf"] for r in ok]),
            "time_s": _mean([r["time_s"] for r in rs]),
            "model_calls": _mean([r["model_calls"] for r in rs]),
        })
        if objective.startswith("show"):
            row["labels_shown"] = _mean([r["attacked_reached"] for r in rs])
            for k in SHOW_K:
                row[f"success_at_{k}"] = _mean([float(r["attacked_reached"] >= k) for r in rs])
        row.update({"run_key": key, "seed": first.get("seed"), "settings": "; ".join(d[1] for d in diffs),
                    "numerics": numerics_text(first.get("numerics"))})
        out.append(row)
    order = {a: i for i, a in enumerate(_ATTACK_ORDER)}
    out.sort(key=lambda r: (r["model"], r["dataset"], r.get("objective", ""), r["norm"] != "l_2",
                            order.get(r["attack"], 99), r["attack"], r["label"], r["run_key"]))
    return out


def _runs(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[_run_of(r)].append(r)
    return groups


def run_labels(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Run -> its label: the attack and the settings that differ from the paper's; runs of one
    (model, data set, objective) whose labels would be equal also get what differs between them
    (the seed, then the numerics, e.g. "threads 1", then the run key)."""
    table = []
    for key, rs in _runs(rows).items():
        r = rs[0]
        name, said = run_name(r["attack"], r.get("settings"))
        diffs = setting_differences(r["attack"], {k: v for k, v in (r.get("settings") or {}).items() if k not in said})
        table.append({"run_key": key, "model": r["model"], "dataset": r["dataset"], "objective": _objective(r),
                      "seed": r.get("seed"), "_numerics": _all_numerics(r.get("numerics")),
                      "label": name + (f" ({', '.join(d[0] for d in diffs)})" if diffs else "")})
    _tell_apart(table)
    return {r["run_key"]: r["label"] for r in table}


def _all_numerics(numerics: Mapping[str, Any] | None) -> dict[str, Any]:
    """A run's numerics with what a record leaves out at its default (the first arithmetic)."""
    from dataclasses import MISSING, fields

    from ..numerics import Numerics

    defaults = {f.name: f.default for f in fields(Numerics) if f.default is not MISSING}
    return {**defaults, **numerics} if numerics else {}


def _tell_apart(table: list[dict[str, Any]]) -> None:
    """Append to equal labels (same model, data set, objective) what differs between their runs."""
    clash: dict[tuple, list[dict]] = defaultdict(list)
    for r in table:
        clash[(r["model"], r["dataset"], r["objective"], r["label"])].append(r)
    for same in clash.values():
        if len(same) < 2:
            continue
        extra: dict[int, list[str]] = {id(r): [] for r in same}
        if len({r["seed"] for r in same}) > 1:
            for r in same:
                extra[id(r)].append(f"seed {r['seed']}")
        names = sorted({k for r in same for k in r["_numerics"]})
        for k in names:
            if len({json.dumps(r["_numerics"].get(k)) for r in same}) > 1:
                for r in same:
                    extra[id(r)].append(f"{k.replace('_', ' ')} {_value_text(r['_numerics'].get(k))}")
        if len({tuple(extra[id(r)]) for r in same}) < len(same):
            for r in same:
                extra[id(r)].append(f"run {r['run_key'][:8]}")
        for r in same:
            base, _, inner = r["label"].partition(" (")
            parts = ([inner.rstrip(")")] if inner else []) + extra[id(r)]
            r["label"] = f"{base} ({', '.join(parts)})"


def run_notes(table: Sequence[dict[str, Any]]) -> list[str]:
    """One line per row of a Table III: its run, seed, numerics and the settings that differ from
    the paper's (with the paper's values), for a caption or footnote."""
    notes = []
    for r in table:
        if "run_key" not in r:
            continue
        text = f"{r['label']}: run {str(r['run_key'])[:8]}, seed {r.get('seed')}, {r.get('numerics')}"
        if r.get("objective"):
            text += f", objective {r['objective']}"
        text += f"; {r['settings']}" if r.get("settings") else "; the paper's settings"
        notes.append(text)
    return notes


def table2(store) -> list[dict[str, Any]]:
    """Table II: test examples and examples to be attacked, per (model, data set, split)."""
    return store.selections()


def curve_groups(panels: Mapping[str, Mapping[Any, Any]]) -> list[tuple]:
    """The (model, data set) groups of :func:`budget_curves`' keys, in first-seen order (one
    line style each in the figures)."""
    groups: list[tuple] = []
    for curves in panels.values():
        for key in curves:
            g = tuple(key[:2]) if isinstance(key, tuple) else ()
            if g not in groups:
                groups.append(g)
    return groups


def curve_names(key: Any) -> tuple[str, str]:
    """(attack, legend name) of a curve key: (model, data set, attack, run label) as
    :func:`budget_curves` makes them, or a bare attack name."""
    if isinstance(key, tuple) and len(key) >= 4:
        return str(key[2]), str(key[3])
    attack = str(key[-1]) if isinstance(key, tuple) else str(key)
    return attack, DISPLAY_NAMES.get(attack, attack)


def budget_curves(rows: Sequence[dict[str, Any]], norm: str = "linf", grid: Sequence[float] | None = None,
                  points: int = 60) -> dict[tuple[str, str, str, str], tuple[np.ndarray, np.ndarray]]:
    """Success rate within a budget: for each run, keyed (model, data set, attack, its Table III
    label), the fraction of attacked examples whose attack succeeded with ``norm`` (``linf`` or
    ``l2``, [0,1] units) <= eps. (With several objectives the label names the objective.)

    The default grid is log-spaced over the observed successful distortions, shared by all
    groups so that curves are comparable at equal budget.
    """
    if norm not in ("linf", "l2", "rmsd"):
        raise ValueError(f"norm must be 'linf', 'l2' or 'rmsd', got {norm!r}")
    labels = run_labels(rows)
    several = len({_objective(r) for r in rows}) > 1
    groups: dict[tuple[str, str, str, str], list[dict]] = defaultdict(list)
    for r in rows:
        label = labels[_run_of(r)] + (f" [{_objective(r)}]" if several else "")
        groups[(r["model"], r["dataset"], r["attack"], label)].append(r)
    if grid is None:
        vals = np.array([r[norm] for r in rows if r["success"] and r[norm] > 0])
        if vals.size == 0:
            grid = np.linspace(0, 1, points)
        else:
            grid = np.concatenate([[0.0], np.logspace(math.log10(vals.min() * 0.5), math.log10(vals.max() * 1.05), points)])
    eps = np.asarray(grid, dtype=np.float64)
    out = {}
    for key, rs in groups.items():
        ok = np.array([r[norm] for r in rs if r["success"]])
        rate = np.array([(ok <= e).sum() / len(rs) for e in eps]) if len(rs) else np.zeros_like(eps)
        out[key] = (eps, rate)
    return out


def with_paper(table: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Table III rows with the paper's numbers for the same (model, data set, attack) beside them."""
    out = []
    for r in table:
        paper_objective = r.get("objective", "hide-one") == "hide-one"
        p = PAPER_TABLE3.get((r["model"], r["dataset"], r["attack"])) if paper_objective else None
        row = dict(r)
        row["paper_success_rate"], row["paper_rmsd"], row["paper_l2"], row["paper_linf"] = p if p else (None,) * 4
        out.append(row)
    return out


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


def _columns(table: Sequence[dict[str, Any]], columns: dict | None):
    if columns is None:
        columns = TABLE3_COLUMNS if table and "attack" in table[0] else TABLE2_COLUMNS
    keys = [k for k in columns if not table or any(k in r for r in table)]
    return keys, columns


def _fmt(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, str):
        return DISPLAY_NAMES.get(value, value)
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def _is_table3(table: Sequence[dict[str, Any]], columns: dict | None) -> bool:
    return columns is None and bool(table) and "run_key" in table[0]


def to_csv(table: Sequence[dict[str, Any]], columns: dict | None = None) -> str:
    """CSV with raw (unformatted) values, one header row; Table III also gets the run behind each
    row (its key, seed, the settings that differ from the paper's, its numerics)."""
    keys, _ = _columns(table, columns)
    if _is_table3(table, columns):
        keys = keys[:keys.index("label")] + ["attack"] + keys[keys.index("label"):]
        keys += [k for k in TABLE3_CSV_EXTRA if k not in keys]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(keys)
    for r in table:
        w.writerow(["" if r.get(k) is None else r.get(k) for k in keys])
    return buf.getvalue()


def to_markdown(table: Sequence[dict[str, Any]], columns: dict | None = None) -> str:
    keys, cols = _columns(table, columns)
    lines = ["| " + " | ".join(cols[k][0] for k in keys) + " |",
             "|" + "|".join("---" if cols[k][2] is None and cols[k][1] == "{}" else "---:" for k in keys) + "|"]
    for r in table:
        lines.append("| " + " | ".join(_fmt(r.get(k), cols[k][1]) for k in keys) + " |")
    if _is_table3(table, columns):
        lines += ["", "Runs (one row each):"] + [f"- {n}" for n in run_notes(table)]
    return "\n".join(lines) + "\n"


def _best(table: Sequence[dict[str, Any]], keys, cols) -> set[tuple[int, str]]:
    """(row index, column) of the best value per (model, data set) group, as the paper bolds."""
    best = set()
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, r in enumerate(table):
        groups[(r.get("model"), r.get("dataset"))].append(i)
    for idx in groups.values():
        for k in keys:
            mode = cols[k][2]
            vals = [(table[i].get(k), i) for i in idx if isinstance(table[i].get(k), (int, float))
                    and not math.isnan(table[i].get(k))]
            if mode and vals:
                target = max(v for v, _ in vals) if mode == "max" else min(v for v, _ in vals)
                best |= {(i, k) for v, i in vals if v == target}
    return best


_LATEX_SPECIAL = {"\\": r"\textbackslash ", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde ", "^": r"\textasciicircum "}


def _latex_text(text: str) -> str:
    """Plain text for a LaTeX caption (the cells are escaped by pandas' Styler)."""
    return "".join(_LATEX_SPECIAL.get(c, c) for c in text)


def to_latex(table: Sequence[dict[str, Any]], columns: dict | None = None, caption: str = "",
             label: str = "") -> str:
    """A booktabs table through pandas' Styler (which escapes & % $ # _ { } ~ ^ \\ in every cell and
    header); the best value of each (model, data set) group in bold, as in the paper. The first
    line names the LaTeX package the table needs."""
    import pandas as pd

    keys, cols = _columns(table, columns)
    best = _best(table, keys, cols)
    df = pd.DataFrame([[_fmt(r.get(k), cols[k][1]) for k in keys] for r in table], columns=[cols[k][0] for k in keys])
    bold = pd.DataFrame([["font-weight: bold" if (i, k) in best else "" for k in keys] for i in range(len(table))],
                        columns=df.columns)
    styler = (df.style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1)
              .apply(lambda _: bold, axis=None))
    body = styler.to_latex(hrules=True, column_format="".join("l" if cols[k][1] == "{}" else "r" for k in keys),
                           caption=_latex_text(caption) or None, label=label or None, position="t", environment="table",
                           position_float="centering", convert_css=True)
    if _is_table3(table, columns):  # the runs behind the rows, under the tabular
        notes = "\\par\\smallskip{\\footnotesize Runs (one row each): " + "; ".join(
            _latex_text(n) for n in run_notes(table)) + ".}\n"
        head, sep, tail = body.rpartition("\\end{table}")
        body = head + notes + sep + tail
    return "% needs \\usepackage{booktabs} (\\toprule, \\midrule, \\bottomrule); the best values are in bold\n" + body


def export(table: Sequence[dict[str, Any]], fmt: str, columns: dict | None = None, **kw: Any) -> str:
    """``fmt`` in csv, md/markdown, tex/latex; ``columns`` as in :data:`TABLE3_COLUMNS` (default:
    Table III's or Table II's, by the rows)."""
    fmt = fmt.lower()
    if fmt == "csv":
        return to_csv(table, columns)
    if fmt in ("md", "markdown"):
        return to_markdown(table, columns)
    if fmt in ("tex", "latex"):
        return to_latex(table, columns, **kw)
    raise ValueError(f"unknown format {fmt!r}: use csv, md or latex")
