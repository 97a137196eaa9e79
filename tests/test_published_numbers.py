"""The path from an attack's result to a published number, checked against the definitions
(the paper's Table III: success over all attacked examples, l_2, l_inf and RMSD averaged over the
successful ones, l_2 / l_inf in [0,1] units; README: a table row is one run, targets seeded per
example; the store's schema: a run is its model, data, attack, settings, seed and numerics).

The fixtures are made to tell wrong numbers apart: one store with two models (whose selections
differ, so an example sits at different positions), two data sets, two seeds, two settings of
one attack and two attacks; perturbations that are negative or asymmetric; failures that take
longer than successes. Every oracle here is computed from the raw data (SQLite rows, numpy),
not through the code under test.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections import defaultdict

import numpy as np
import pytest
import torch
from tiny import TinyScenes, load_tiny, train_tiny

from mlalp_core.attacks import make_attack
from mlalp_core.attacks.targets import build_target, hide_one
from mlalp_core.experiments.metrics import attack_metrics, label_changes, perturbation_norms
from mlalp_core.experiments.reporting import budget_curves, table3, to_csv
from mlalp_core.experiments.runner import BenchConfig, run_benchmark
from mlalp_core.experiments.store import ResultsStore, run_key
from mlalp_core.models.base import MultiLabelClassifier

DATA = {"tiny-a": 7, "tiny-b": 11}
MODELS = {"m1": 200, "m2": 30}  # training steps: m2 classifies fewer scenes right (another selection)
#: (model, data set, seed, MLA-LP settings) of every configuration run into the one store
CONFIGS = [("m1", "tiny-a", 3, {}), ("m1", "tiny-a", 4, {}), ("m1", "tiny-b", 3, {}), ("m2", "tiny-a", 3, {}),
           ("m2", "tiny-b", 3, {}), ("m2", "tiny-a", 3, {"max_iterations": 3})]
SETTINGS = {"mla-lp": {"max_iterations": 2}, "fgsm": {"eps": 0.1}}  # a mix of successes and failures


def _dataset(name: str) -> TinyScenes:
    return TinyScenes(n=32, seed=DATA[name])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("published")
    weights = {}
    for name, steps in MODELS.items():
        weights[name] = tmp / f"{name}.pt"
        torch.save(train_tiny(steps).state_dict(), weights[name])
    path = tmp / "many.sqlite"
    for model, data, seed, extra in CONFIGS:
        attacks = ["mla-lp"] if extra else ["mla-lp", "fgsm"]
        cfg = BenchConfig(models=[model], dataset=data, split="all", attacks=attacks, seed=seed, batch_size=4,
                          device="cpu", store=path, threads=1,
                          attack_settings={**SETTINGS, "mla-lp": {**SETTINGS["mla-lp"], **extra}})
        run_benchmark(cfg, model_loader=lambda name, device=None: load_tiny(weights[name]),
                      dataset_loader=lambda name, split=None: _dataset(name))
    return path


def _raw_runs(path) -> dict[tuple, list[dict]]:
    """The store's results grouped by the identity of a run (the schema's definition), read with
    plain SQL: (model, dataset, attack, settings, seed, numerics) -> its examples."""
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    runs: dict[tuple, list[dict]] = defaultdict(list)
    for r in conn.execute("SELECT x.*, r.model, r.dataset, r.attack, r.settings AS run_settings, r.seed, r.numerics "
                          "FROM results x JOIN runs r ON r.run_key = x.run_key"):
        d = dict(r)
        runs[(d["model"], d["dataset"], d["attack"], d["run_settings"], d["seed"], d["numerics"])].append(d)
    conn.close()
    return runs


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12, abs=1e-300)


# ---- Table III on hand-made rows --------------------------------------------------------------


def _row(run, model="m", dataset="d", attack="mla-lp", seed=0, success=True, linf=0.01, time_s=1.0, calls=10):
    return {"run_key": run, "model": model, "dataset": dataset, "attack": attack, "settings": {}, "seed": seed,
            "numerics": None, "success": success, "linf": linf, "l2": 10 * linf, "rmsd": 100 * linf,
            "rmsd_paper": 50 * linf, "time_s": time_s, "model_calls": calls, "attacked_reached": int(success)}


def test_time_and_model_calls_are_per_attacked_example_not_per_success():
    # failures run to the iteration limit: slow and many calls
    rows = [_row("a", success=True, linf=0.01, time_s=1.0, calls=10),
            _row("a", success=True, linf=0.03, time_s=2.0, calls=20),
            _row("a", success=False, linf=0.5, time_s=9.0, calls=90)]
    (r,) = table3(rows)
    assert r["attacked"] == 3 and r["success_rate"] == pytest.approx(2 / 3)
    assert r["time_s"] == pytest.approx(4.0) and r["model_calls"] == pytest.approx(40.0)
    assert r["linf"] == pytest.approx(0.02) and r["l2"] == pytest.approx(0.2)
    assert r["rmsd"] == pytest.approx(2.0) and r["rmsd_paper"] == pytest.approx(1.0)


def test_runs_of_two_data_sets_models_or_seeds_are_never_merged():
    rows = []
    for k, (model, dataset, seed) in enumerate([("m", "voc2007", 0), ("m", "voc2012", 0), ("n", "voc2007", 0),
                                                ("m", "voc2007", 1)]):
        rows += [_row(f"run{k}", model, dataset, seed=seed, linf=0.01 * (k + 1), time_s=k + 1.0),
                 _row(f"run{k}", model, dataset, seed=seed, success=False, time_s=10.0 * (k + 1))]
    table = table3(rows)
    assert len(table) == 4
    got = {(r["model"], r["dataset"], r["seed"]): r for r in table}
    for k, key in enumerate([("m", "voc2007", 0), ("m", "voc2012", 0), ("n", "voc2007", 0), ("m", "voc2007", 1)]):
        assert got[key]["attacked"] == 2 and got[key]["linf"] == pytest.approx(0.01 * (k + 1))
        assert got[key]["time_s"] == pytest.approx((k + 1.0 + 10.0 * (k + 1)) / 2)
    assert [(r["model"], r["dataset"]) for r in table] == [("m", "voc2007")] * 2 + [("m", "voc2012"), ("n", "voc2007")]
    labels = {(r["model"], r["dataset"], r["seed"]): r["label"] for r in table}
    assert labels[("m", "voc2012", 0)] == labels[("n", "voc2007", 0)] == "MLA-LP"
    assert labels[("m", "voc2007", 0)] == "MLA-LP (seed 0)" and labels[("m", "voc2007", 1)] == "MLA-LP (seed 1)"
    # rows made by hand without run keys: the same four runs, the same numbers
    bare = table3([{k: v for k, v in r.items() if k != "run_key"} for r in rows])
    strip = lambda t: sorted((r["model"], r["dataset"], r["seed"], r["attacked"], r["linf"], r["time_s"]) for r in t)
    assert strip(bare) == strip(table)


def test_rows_without_a_run_key_are_grouped_by_their_whole_identity():
    """Rows made by hand (no run key): one row per (model, data set, attack, settings, seed,
    numerics), never a merge of two."""
    rows = []
    for k, (dataset, seed, settings) in enumerate([("d1", 0, {}), ("d2", 0, {}), ("d1", 1, {}),
                                                   ("d1", 0, {"max_iterations": 3})]):
        for s in (True, False):
            r = _row(None, dataset=dataset, seed=seed, success=s, linf=0.01 * (k + 1), time_s=k + 2.0 * s)
            r.pop("run_key")
            r["settings"] = settings
            rows.append(r)
    table = table3(rows)
    assert len(table) == 4 and all(r["attacked"] == 2 for r in table)
    assert sorted(r["linf"] for r in table) == pytest.approx([0.01, 0.02, 0.03, 0.04])


def test_the_papers_table_lists_its_attacks_in_its_order():
    order = ["ml-cw", "ml-rank1", "ml-rank2", "ml-deepfool", "mla-lp"]
    rows = [_row(a, attack=a) for a in reversed(order)] + [_row("f", attack="fgsm"), _row("p", attack="pgd-l2")]
    got = [r["attack"] for r in table3(rows)]
    assert got == ["ml-cw", "ml-rank1", "ml-rank2", "ml-deepfool", "pgd-l2", "mla-lp", "fgsm"]
    assert [r["norm"] for r in table3(rows)] == ["l_2"] * 5 + ["l_inf"] * 2


# ---- metrics ----------------------------------------------------------------------------------


def test_norms_of_negative_and_asymmetric_perturbations_follow_their_definitions():
    g = torch.Generator().manual_seed(0)
    r = torch.zeros(4, 3, 5, 7)
    r[0] = -torch.rand(3, 5, 7, generator=g) * 0.1  # all negative
    r[1] = torch.rand(3, 5, 7, generator=g) * 0.02
    r[1, 2, 4, 6] = -0.3  # the largest magnitude is negative
    r[2, 0, 0, 0] = 0.25  # one pixel
    n = perturbation_norms(r)
    flat = r.reshape(4, -1).double().numpy()
    for i in range(4):
        v = flat[i]
        assert float(n["l1"][i]) == pytest.approx(float(np.sum(np.abs(v))), rel=1e-12, abs=0)
        assert float(n["l2"][i]) == pytest.approx(float(np.sqrt(np.sum(v * v))), rel=1e-12, abs=0)
        assert float(n["linf"][i]) == pytest.approx(float(np.max(np.abs(v))), rel=1e-12, abs=0)
        rms = float(np.sqrt(np.mean(v * v)))
        assert float(n["rmsd"][i]) == pytest.approx(255.0 * rms, rel=1e-12, abs=0)  # 0..255 scale
        assert float(n["rmsd_paper"][i]) == pytest.approx(127.5 * rms, rel=1e-12, abs=0)  # as printed
    assert float(n["linf"][1]) == pytest.approx(0.3) and float(n["linf"][0]) > 0
    assert float(n["linf"][3]) == 0.0 and float(n["l2"][3]) == 0.0
    assert all(v.dtype == torch.float64 and v.shape == (4,) for v in n.values())
    empty = perturbation_norms(torch.zeros(3, 0))  # no pixel: no distortion, one value per example
    assert all(v.shape == (3,) and v.dtype == torch.float64 for v in empty.values())
    assert not any(bool(empty[k].any()) for k in ("l1", "l2", "linf"))


class _Linear(MultiLabelClassifier):
    """Label 0's logit rises with the red channel (visible at 0.5), label 1 is always on: to
    hide label 0 FGSM moves every red pixel DOWN by eps, an all-negative perturbation."""

    def __init__(self) -> None:
        super().__init__(["red", "on"], (6, 6))
        self.w = torch.nn.Parameter(torch.tensor(40.0))

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        red = z[:, 0].flatten(1).mean(1)
        return torch.stack([self.w * (red - 0.45), torch.full_like(red, 4.0)], 1)


def test_metrics_of_an_attack_that_only_darkens():
    model = _Linear().eval()
    x = torch.full((3, 3, 6, 6), 0.5)
    x[1] = 0.55  # needs more than eps: a failure
    x[2, 0, :3] = 0.47  # asymmetric: some pixels nearer the threshold
    target = torch.tensor([[False, True]] * 3)
    res = make_attack("fgsm", model, eps=0.08, device="cpu")(x, target)
    rows = attack_metrics(res)
    assert [r["success"] for r in rows] == [True, False, True]
    for i, row in enumerate(rows):
        r = (res.x_adv[i] - x[i]).double()
        assert float(r.max()) <= 0.0 and float(r.min()) == pytest.approx(-0.08, abs=1e-6)
        assert row["linf"] == pytest.approx(0.08, abs=1e-6)  # |r| max, not max r (which is 0)
        assert row["l2"] == pytest.approx(0.08 * 6, abs=1e-5)  # 36 red pixels at 0.08
        assert row["rmsd"] == pytest.approx(255 * 0.08 * math.sqrt(36 / 108), rel=1e-5)
        assert row["time_s"] == float(res.elapsed_s[i]) and row["model_calls"] == int(res.model_calls[i])
        assert row["iterations"] == int(res.iterations[i]) and row["attack"] == "fgsm"
        # plain Python values, as the store, CSV and JSON take them
        assert all(type(v) in (bool, int, float, str) for v in row.values()), row
        assert type(row["success"]) is bool and type(row["iterations"]) is int and type(row["linf"]) is float
        assert row["attacked_total"] == 1 and row["attacked_reached"] == int(row["success"])


def test_label_bookkeeping_counts_hidden_added_and_collateral_labels():
    clean = torch.tensor([[0.9, 0.8, 0.1, 0.2, 0.7], [0.9, 0.1, 0.1, 0.6, 0.2]])
    adv = torch.tensor([[0.2, 0.7, 0.8, 0.1, 0.3], [0.95, 0.3, 0.7, 0.7, 0.1]])
    # example 0: hide 0 (done), add 2 (done), keep 1 (kept), keep 4 (lost: collateral)
    # example 1: hide 0 (not done), add 1 (not done), keep 2 (gained: collateral), keep 3
    target = torch.tensor([[False, True, True, False, True], [False, True, False, True, False]])
    c = label_changes(clean, adv, target)
    assert c["attacked_total"].tolist() == [2, 2]
    assert c["attacked_reached"].tolist() == [2, 0]
    assert c["collateral"].tolist() == [1, 1]
    assert c["labels_wrong"].tolist() == [1, 3]
    # the threshold is the one given: at 0.75 example 0's label 4 (0.7) is absent, so it must be
    # added (and is not), and label 1 (0.8 -> 0.7) is lost
    c = label_changes(clean, adv, target, threshold=0.75)
    assert (c["attacked_total"][0], c["attacked_reached"][0], c["collateral"][0], c["labels_wrong"][0]) == (3, 2, 1, 2)
    # REFERENCE: label j is predicted positive when o_j >= t; an output exactly at t is positive
    c = label_changes(torch.tensor([[0.5, 0.2]]), torch.tensor([[0.2, 0.5]]), torch.tensor([[False, True]]))
    assert (c["attacked_total"].item(), c["attacked_reached"].item(), c["collateral"].item()) == (2, 2, 0)
    assert c["labels_wrong"].item() == 0


# ---- targets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("objective", ["hide-one", "show-k:2"])
def test_a_target_depends_on_the_example_id_not_on_its_position(objective):
    g = torch.Generator().manual_seed(1)
    y = torch.rand(40, 8, generator=g) < 0.5
    y[:, 0] = True  # at least one positive, and three absent labels, per example
    y[:, 1:4] = False
    ids = [int(i) for i in torch.randperm(1000, generator=g)[:40]]
    whole = build_target(objective, y, seed=5, example_ids=ids)
    perm = torch.randperm(40, generator=g)
    shuffled = build_target(objective, y[perm], seed=5, example_ids=[ids[i] for i in perm])
    assert torch.equal(shuffled, whole[perm])
    # a subset (another process's share, a resume) gets the same targets
    part = build_target(objective, y[10:17], seed=5, example_ids=ids[10:17])
    assert torch.equal(part, whole[10:17])
    # and the seed matters
    assert not torch.equal(build_target(objective, y, seed=6, example_ids=ids), whole)


# ---- the run key ------------------------------------------------------------------------------


def test_the_run_key_covers_everything_that_determines_a_runs_numbers():
    numerics = {"threads": 1, "torch": "2.x", "device": "cpu (avx2)", "tf32": False, "deterministic": False,
                "lp_threads": 1, "lp_batched": False}
    base = dict(model_id="m" * 16, data_id="d" * 16, attack="mla-lp", settings={"max_iterations": 3}, seed=0,
                numerics=numerics)
    key = run_key(**base)
    assert key == run_key(**dict(base, settings={"max_iterations": 3}))  # the same run resumes
    changes = [("model_id", "n" * 16), ("data_id", "e" * 16), ("attack", "ml-cw"), ("settings", {"max_iterations": 4}),
               ("settings", {}), ("seed", 1), ("numerics", {**numerics, "threads": 2}), ("numerics", None)]
    keys = {run_key(**dict(base, **{field: value})) for field, value in changes}
    assert key not in keys and len(keys) == len(changes)


def test_a_store_opens_a_new_run_for_a_new_seed(tmp_path):
    store = ResultsStore(tmp_path / "s.sqlite", readonly=False)
    numerics = {"threads": 1}
    ident = dict(model="m", model_id="mid", dataset="d", split="all", data_id="did", attack="fgsm", settings={},
                 threshold=0.5, label_names=["a", "b"], input_size=[4, 4], device="cpu", numerics=numerics)
    k0 = store.open_run(seed=0, **ident)
    x = torch.zeros(3, 4, 4)
    store.add_result(k0, "e1", 0, {"success": True, "l1": 1.0, "l2": 0.5, "linf": 0.25, "rmsd": 2.0, "rmsd_paper": 1.0,
                                   "labels_wrong": 0, "collateral": 0, "attacked_reached": 1, "attacked_total": 1,
                                   "iterations": 2, "model_calls": 5, "time_s": 0.125},
                     torch.tensor([False, True]), torch.tensor([0.9, 0.8]), torch.tensor([0.1, 0.8]), x - 0.25, [])
    assert store.open_run(seed=0, **ident) == k0 and store.finished_ids(k0) == {"e1"}  # resumed
    k1 = store.open_run(seed=1, **ident)
    assert k1 != k0 and store.finished_ids(k1) == set()  # a new seed starts from nothing
    assert sorted((r["seed"], r["examples"]) for r in store.runs()) == [(0, 1), (1, 0)]
    (row,) = store.rows()
    assert (row["seed"], row["success"], row["linf"], row["time_s"], row["model_calls"]) == (0, True, 0.25, 0.125, 5)
    ex = store.example(k0, "e1")
    assert float(ex["perturbation"].min()) == -0.25 and ex["target"].tolist() == [False, True]


# ---- Table III from the store -----------------------------------------------------------------


def test_every_run_in_a_mixed_store_is_one_row_with_the_papers_averages(store):
    raw = _raw_runs(store)
    expected_runs = sum(1 if extra else 2 for *_, extra in CONFIGS)
    assert len(raw) == expected_runs  # the fixture holds what it says: no run merged into another
    table = table3(ResultsStore(store).rows())
    assert len(table) == expected_runs
    matched = set()
    for row in table:
        (ident,) = [k for k, rs in raw.items() if (k[0], k[1], k[2], k[4]) == (row["model"], row["dataset"],
                    row["attack"], row["seed"]) and {x["run_key"] for x in rs} == {row["run_key"]}]
        matched.add(ident)
        rs = raw[ident]
        ok = [r for r in rs if r["success"]]
        assert row["attacked"] == len(rs)
        assert row["success_rate"] == pytest.approx(len(ok) / len(rs), rel=1e-12)
        for col in ("l2", "linf", "rmsd", "rmsd_paper"):  # over the successful examples only
            assert _same(row[col], _mean([r[col] for r in ok])), (row["label"], col)
        # time and model calls per attacked example: every example, successes and failures
        assert _same(row["time_s"], _mean([r["time_s"] for r in rs])), row["label"]
        assert _same(row["model_calls"], _mean([r["model_calls"] for r in rs])), row["label"]
    assert matched == set(raw)


def test_the_fixture_can_tell_the_averages_apart(store):
    """Successes and failures in most runs, and times that differ: a mean over the wrong set
    of examples cannot agree by chance."""
    raw = _raw_runs(store)
    mixed = [rs for rs in raw.values() if 0 < sum(r["success"] for r in rs) < len(rs)]
    assert len(mixed) >= 5
    for rs in mixed:
        ok = [r["time_s"] for r in rs if r["success"]]
        assert _mean(ok) != pytest.approx(_mean([r["time_s"] for r in rs]), rel=1e-9)


def test_the_table_is_ordered_as_the_papers_blocks(store):
    """One block per (model, data set), in order; in each, the l_2 attacks before the l_inf ones
    (MLA-LP first among those, as in the paper's Table III)."""
    table = table3(ResultsStore(store).rows())
    blocks = [(r["model"], r["dataset"]) for r in table]
    assert blocks == sorted(blocks)  # contiguous and sorted, never interleaved
    assert sorted(set(blocks)) == sorted({(m, d) for m, d, *_ in CONFIGS})
    for block in set(blocks):
        attacks = [r["attack"] for r in table if (r["model"], r["dataset"]) == block]
        assert attacks.index("fgsm") > max(i for i, a in enumerate(attacks) if a == "mla-lp")


def test_labels_name_what_differs_within_a_block_and_nothing_else(store):
    table = table3(ResultsStore(store).rows())
    labels = defaultdict(list)
    for r in table:
        labels[(r["model"], r["dataset"])].append(r["label"])
    # two seeds in one block: each row says its seed; the other blocks need no qualifier
    fgsm, mla = "FGSM (budget eps 0.1", "MLA-LP (max iterations 2"  # the settings that differ from the paper's
    assert sorted(labels[("m1", "tiny-a")]) == [f"{fgsm}, seed 3)", f"{fgsm}, seed 4)", f"{mla}, seed 3)",
                                                f"{mla}, seed 4)"]
    assert sorted(labels[("m1", "tiny-b")]) == [f"{fgsm})", f"{mla})"]
    assert sorted(labels[("m2", "tiny-b")]) == [f"{fgsm})", f"{mla})"]
    assert sorted(labels[("m2", "tiny-a")]) == [f"{fgsm})", f"{mla})", "MLA-LP (max iterations 3)"]
    # every export names the run behind each row: one distinct key per row
    parsed = to_csv(table).splitlines()
    assert len(parsed) == len(table) + 1 and len({r["run_key"] for r in table}) == len(table)


def test_budget_curves_have_one_curve_per_run(store):
    rows = ResultsStore(store).rows()
    raw = _raw_runs(store)
    curves = budget_curves(rows, "linf", grid=[0.0, 0.01, 0.05, 0.2, 1.0])
    assert len(curves) == len(raw)
    for (model, dataset, attack, label), (eps, rate) in curves.items():
        (rs,) = [v for k, v in raw.items() if k[:3] == (model, dataset, attack)
                 and (f"seed {k[4]}" in label or "seed" not in label)
                 and ("max iterations 3" in label) == ("max_iterations\": 3" in k[3])]
        expect = [sum(1 for r in rs if r["success"] and r["linf"] <= e) / len(rs) for e in eps]
        assert rate.tolist() == pytest.approx(expect, rel=1e-12)


# ---- runs, seeds and targets in the store -----------------------------------------------------


def test_a_second_seed_is_a_run_of_its_own_with_its_own_targets(store):
    """The same command with another seed must not "resume" the first seed's run: both runs hold
    every selected example, each with the targets its own seed draws."""
    raw = _raw_runs(store)
    by_seed = {k[4]: rs for k, rs in raw.items() if k[:3] == ("m1", "tiny-a", "mla-lp")}
    assert sorted(by_seed) == [3, 4]
    ids3 = {r["example_id"] for r in by_seed[3]}
    assert ids3 == {r["example_id"] for r in by_seed[4]} and len(ids3) >= 10
    t3 = {r["example_id"]: json.loads(r["target"]) for r in by_seed[3]}
    t4 = {r["example_id"]: json.loads(r["target"]) for r in by_seed[4]}
    assert any(t3[e] != t4[e] for e in ids3)  # another seed hides other labels
    runs = ResultsStore(store).runs()
    assert {r["seed"] for r in runs if (r["model"], r["dataset"], r["attack"]) == ("m1", "tiny-a", "mla-lp")} == {3, 4}


def test_each_stored_target_hides_one_label_drawn_from_the_seed_and_the_example_id(store):
    """README: one positive label per example hidden at random, seeded per example: an example's
    target is the one it gets alone, by its id, whatever its position in the selection."""
    raw = _raw_runs(store)
    labels = {name: _dataset(name).labels() for name in DATA}
    moved = 0
    for (model, dataset, attack, _, seed, _), rs in raw.items():
        for pos, r in enumerate(sorted(rs, key=lambda r: r["idx"])):
            y = labels[dataset][r["idx"]]
            alone = hide_one(y[None], seed=seed, example_ids=[r["idx"]])[0]
            target = torch.tensor(json.loads(r["target"]), dtype=torch.bool)
            assert torch.equal(target, alone), (model, dataset, seed, r["example_id"])
            assert int((y & ~target).sum()) == 1 and not bool((target & ~y).any())
            moved += pos != r["idx"]
    assert moved > 20  # examples sit at other positions than their ids: the fixture can tell


def test_two_models_hide_the_same_label_of_a_shared_example(store):
    raw = _raw_runs(store)
    targets: dict[str, dict[str, list]] = defaultdict(dict)
    positions: dict[str, dict[str, int]] = defaultdict(dict)
    for (model, dataset, attack, settings, seed, _), rs in raw.items():
        if (dataset, attack, seed, json.loads(settings).get("max_iterations")) == ("tiny-a", "mla-lp", 3, 2):
            for pos, r in enumerate(sorted(rs, key=lambda r: r["idx"])):
                targets[model][r["example_id"]] = json.loads(r["target"])
                positions[model][r["example_id"]] = pos
    shared = set(targets["m1"]) & set(targets["m2"])
    assert len(shared) >= 5 and any(positions["m1"][e] != positions["m2"][e] for e in shared)
    assert all(targets["m1"][e] == targets["m2"][e] for e in shared)
