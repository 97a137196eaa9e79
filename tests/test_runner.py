"""The results store, the aggregates, and batch runs that resume and shard."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import TinyScenes, load_tiny

from mlalp_core.experiments.reporting import budget_curves, table3, to_csv, to_latex, to_markdown
from mlalp_core.experiments.runner import BenchConfig, attack_batches, run_benchmark, select_examples
from mlalp_core.experiments.store import ResultsStore

HERE = Path(__file__).parent
WORKER = HERE / "bench_worker.py"


def _run(weights, store, attacks, **kw):
    cfg = BenchConfig(models=["tiny"], dataset="tiny", split="all", attacks=attacks, seed=3, batch_size=4,
                      device="cpu", store=store, precision="float32",
                      attack_settings={"ml-cw": {"max_iterations": 50, "binary_search_steps": 2}}, **kw)
    return run_benchmark(cfg, model_loader=lambda name, device=None: load_tiny(weights),
                         dataset_loader=lambda name, split=None: TinyScenes())


def _results(store_path):
    """(run attack, example id) -> metrics and perturbation, for comparing stores."""
    store = ResultsStore(store_path)
    out = {}
    for r in store.rows():
        ex = store.example(r["run_key"], r["example_id"])
        out[(r["attack"], r["example_id"])] = (r["success"], r["linf"], r["l2"], r["iterations"], ex["perturbation"])
    return out


def test_selection_follows_the_papers_rule(weights, tmp_path):
    model = load_tiny(weights)
    ds = TinyScenes()
    store = ResultsStore(tmp_path / "s.sqlite", readonly=False)
    sel = select_examples(model, ds, model_name="tiny", dataset_name="tiny", split="all", store=store, device="cpu")
    x = torch.stack([ds.image(i, (16, 16)) for i in range(len(ds))])
    ok = (model.predict(x) == ds.labels()).all(1) & (ds.labels().sum(1) >= 2)
    assert sel.indices == ok.nonzero().flatten().tolist()
    assert len(sel.indices) >= 5
    (counts,) = store.selections()
    assert counts["test_examples"] == len(ds) and counts["to_attack"] == len(sel.indices)
    # cached: a second selection reads the store
    again = select_examples(model, ds, model_name="tiny", dataset_name="tiny", split="all", store=store)
    assert again.indices == sel.indices


def test_run_stores_every_example_and_successes_recheck(weights, tmp_path):
    store_path = tmp_path / "run.sqlite"
    t3 = _run(weights, store_path, ["mla-lp", "ml-deepfool"])
    store = ResultsStore(store_path)
    model = load_tiny(weights)
    ds = TinyScenes()
    n_sel = store.selections()[0]["to_attack"]
    assert {r["attack"]: r["attacked"] for r in t3} == {"mla-lp": n_sel, "ml-deepfool": n_sel}
    for r in store.rows(attack="mla-lp"):
        ex = store.example(r["run_key"], r["example_id"])
        x = ds.image(ex["idx"], (16, 16))
        x_adv = (x + ex["perturbation"]).clamp(0, 1)
        again = model.predict(x_adv[None])[0] == ex["target"]
        assert bool(again.all()) == r["success"]
        assert ex["linf"] == pytest.approx(float(ex["perturbation"].abs().max()), rel=1e-6)
    mla = next(r for r in t3 if r["attack"] == "mla-lp")
    assert mla["success_rate"] >= 0.8


def test_rerun_does_not_redo_or_double_count(weights, tmp_path):
    store_path = tmp_path / "run.sqlite"
    _run(weights, store_path, ["mla-lp"])
    first = {r["example_id"]: r for r in ResultsStore(store_path).rows()}
    t3 = _run(weights, store_path, ["mla-lp"])
    rows = ResultsStore(store_path).rows()
    assert len(rows) == len(first) == t3[0]["attacked"]
    assert all(first[r["example_id"]]["time_s"] == r["time_s"] for r in rows)  # not recomputed


def test_a_killed_run_resumes_where_it_stopped(weights, tmp_path):
    store_path = tmp_path / "killed.sqlite"
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    proc = subprocess.run([sys.executable, str(WORKER), str(weights), str(store_path), "mla-lp", "--die-after", "4"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 17, proc.stderr[-2000:]
    partial = {r["example_id"]: r for r in ResultsStore(store_path).rows()}
    assert len(partial) == 4  # the first batch was stored before the crash
    proc = subprocess.run([sys.executable, str(WORKER), str(weights), str(store_path), "mla-lp"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = ResultsStore(store_path).rows()
    n_sel = ResultsStore(store_path).selections()[0]["to_attack"]
    assert len(rows) == n_sel and len({r["example_id"] for r in rows}) == n_sel
    for r in rows:  # what finished before the crash was kept, not redone
        if r["example_id"] in partial:
            assert r["time_s"] == partial[r["example_id"]]["time_s"]
    # and the resumed run equals an uninterrupted one
    clean = tmp_path / "clean.sqlite"
    _run(weights, clean, ["mla-lp"])
    a, b = _results(store_path), _results(clean)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k][:4] == b[k][:4]
        assert torch.allclose(a[k][4], b[k][4], atol=1e-6)


def test_two_processes_equal_one(weights, tmp_path):
    one = tmp_path / "one.sqlite"
    two = tmp_path / "two.sqlite"
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "MLALP_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(WORKER), str(weights), str(one), "mla-lp,ml-cw"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(WORKER), str(weights), str(two), "mla-lp,ml-cw"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _results(one), _results(two)
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        assert a[k][:4] == b[k][:4], k
        assert torch.equal(a[k][4], b[k][4]), k
    workers = {r["worker"] for r in _raw_workers(two)}
    assert workers == {"rank0/2", "rank1/2"}  # both processes did work, each example once


def test_the_process_group_fits_the_gpus():
    from mlalp_core.experiments.runner import process_group_plan

    assert process_group_plan(False, 1, 2, 0) == ("gloo", None)
    assert [process_group_plan(True, r, 2, 2) for r in range(2)] == [("nccl", 0), ("nccl", 1)]
    # NCCL refuses two ranks on one GPU: ranks that share one exchange their results over gloo
    assert [process_group_plan(True, r, 2, 1) for r in range(2)] == [("gloo", 0), ("gloo", 0)]
    assert [process_group_plan(True, r, 4, 2)[1] for r in range(4)] == [0, 1, 0, 1]
    assert process_group_plan(True, 0, 1, 1) == ("nccl", 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("ranks", [1, 2])
def test_sharded_runs_on_a_gpu_equal_one_process(weights, tmp_path, ranks):
    # 1 rank under torchrun: the NCCL path; 2 ranks on one GPU: gloo (NCCL refuses to share a GPU)
    one = tmp_path / "one.sqlite"
    many = tmp_path / "many.sqlite"
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "MLALP_DEVICE": "cuda", "OMP_NUM_THREADS": "1"}
    args = [str(weights), "mla-lp,ml-cw", "--device", "cuda"]
    proc = subprocess.run([sys.executable, str(WORKER), args[0], str(one), *args[1:]], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(ranks), str(WORKER), args[0], str(many), *args[1:]],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = _results(one), _results(many)
    assert a.keys() == b.keys() and len(a) > 0
    for k in a:
        assert a[k][0] == b[k][0] and a[k][1] == pytest.approx(b[k][1], abs=1e-4), k
        assert torch.allclose(a[k][4], b[k][4], atol=1e-4), k
    assert {r["worker"] for r in _raw_workers(many)} == {f"rank{r}/{ranks}" for r in range(ranks)}


def _raw_workers(path):
    import sqlite3

    with sqlite3.connect(path) as conn:
        return [{"worker": w} for (w,) in conn.execute("SELECT worker FROM results")]


def test_attack_batches_are_fixed():
    assert attack_batches(10, 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


# ---- aggregates on hand-made rows ---------------------------------------------------------------


def _row(attack, success, linf, l2, rmsd, t=1.0):
    return {"model": "m", "dataset": "d", "attack": attack, "success": success, "linf": linf, "l2": l2,
            "rmsd": rmsd, "rmsd_paper": rmsd / 2, "time_s": t, "model_calls": 10}


def test_table3_averages_distortion_over_successes_only():
    rows = [_row("mla-lp", True, 0.01, 1.0, 0.4), _row("mla-lp", True, 0.03, 3.0, 0.8),
            _row("mla-lp", False, 0.9, 90.0, 50.0), _row("ml-cw", True, 0.05, 2.0, 1.0)]
    t = {r["attack"]: r for r in table3(rows)}
    assert t["mla-lp"]["attacked"] == 3
    assert t["mla-lp"]["success_rate"] == pytest.approx(2 / 3)
    assert t["mla-lp"]["linf"] == pytest.approx(0.02)
    assert t["mla-lp"]["rmsd"] == pytest.approx(0.6) and t["mla-lp"]["rmsd_paper"] == pytest.approx(0.3)
    assert t["mla-lp"]["time_s"] == pytest.approx(1.0)
    assert [r["attack"] for r in table3(rows)] == ["ml-cw", "mla-lp"]  # the paper's order


def test_budget_curves_count_successes_within_the_budget():
    rows = [_row("a", True, 0.01, 1, 1), _row("a", True, 0.03, 1, 1), _row("a", False, 0.001, 1, 1),
            _row("a", True, 0.02, 1, 1)]
    (eps, rate), = budget_curves(rows, "linf", grid=[0.0, 0.015, 0.025, 1.0]).values()
    assert rate.tolist() == [0.0, 0.25, 0.5, 0.75]  # the failure never counts


def test_exports():
    rows = table3([_row("mla-lp", True, 0.01, 1.0, 0.4), _row("ml-cw", True, 0.05, 2.0, 1.0)])
    csv_text = to_csv(rows)
    assert csv_text.splitlines()[0].startswith("model,dataset,norm,attack,label,attacked,success_rate")
    assert csv_text.splitlines()[0].endswith(",run_key,seed,settings,numerics")
    md = to_markdown(rows)
    assert "| MLA-LP |" in md or "| MLA-LP" in md
    tex = to_latex(rows, caption="Table III")
    assert r"\bfseries 0.0100" in tex  # the smallest linf is bold
    assert r"\toprule" in tex and tex.count(r"\\") >= 3 and tex.startswith("% needs \\usepackage{booktabs}")
    # every LaTeX special character is escaped, in cells and in the caption
    odd = table3([dict(_row("mla-lp", True, 0.01, 1.0, 0.4), model="m_1#x $y^2~{a}\\ 50% & co")])
    tex = to_latex(odd, caption="r & s 5% #1")
    assert r"m\_1\#x \$y\textasciicircum 2\textasciitilde \{a\}\textbackslash \space 50\% \& co" in tex
    assert r"\caption{r \& s 5\% \#1}" in tex


def test_store_rejects_a_file_that_is_not_a_store(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_text("this is not a database")
    from mlalp_core.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="not a database"):
        ResultsStore(bad, readonly=False)


def test_model_identity_covers_every_tensor_including_scalars():
    from torch import nn

    from mlalp_core.experiments.store import model_identity

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))  # num_batches_tracked is a 0-d tensor
    a = model_identity(m)
    assert a == model_identity(m)
    with torch.no_grad():
        m[0].weight[0, 0, 0, 0] += 1e-3
    assert model_identity(m) != a


def _open_store_at(path, start):
    from mlalp_core.experiments.store import ResultsStore

    start.wait()
    ResultsStore(path, readonly=False)


def test_many_processes_create_one_store_at_once(tmp_path):
    # the ranks of a sharded run open a brand-new store at the same moment; none may fail
    import multiprocessing as mp

    ctx = mp.get_context("fork")  # the children only touch SQLite
    for trial in range(4):
        path = tmp_path / f"s{trial}.sqlite"
        start = ctx.Barrier(6)
        procs = [ctx.Process(target=_open_store_at, args=(path, start)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        assert [p.exitcode for p in procs] == [0] * 6
        assert ResultsStore(path).rows() == []
