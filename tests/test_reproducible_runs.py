"""The same command stores the same numbers however it is run: in one process or sharded by
torchrun, killed in the middle of a batch and resumed or not; a resume under other numerics (here
another thread count) never mixes two numerics in one run. Compared cell by cell on the stores
themselves (every column but wall times and the worker's name)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mlalp_core.experiments.reporting import table3
from mlalp_core.experiments.store import ResultsStore

HERE = Path(__file__).parent
ROOT = HERE.parent
WORKER = HERE / "bench_worker.py"
#: what may differ between two runs of one command: when and where it ran, and how long it took
_NOT_NUMBERS = {"time_s", "finished", "worker"}


def _cells(path: Path) -> dict[tuple[str, str], dict]:
    """(run, example) -> every stored column (trace entries without their timings)."""
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    out = {}
    for r in conn.execute("SELECT * FROM results"):
        d = {k: v for k, v in dict(r).items() if k not in _NOT_NUMBERS}
        d["trace"] = [{k: v for k, v in step.items() if not k.endswith("_s")} for step in json.loads(d["trace"])]
        out[(d["run_key"], d["example_id"])] = d
    conn.close()
    return out


def _assert_same_numbers(a: Path, b: Path) -> int:
    x, y = _cells(a), _cells(b)
    assert x.keys() == y.keys() and x
    bad = [(k, c) for k in x for c in x[k] if x[k][c] != y[k][c]]
    assert not bad, bad[:10]
    return len(x)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLALP_")}
    return {**env, "PYTHONPATH": str(ROOT), "MLALP_DEVICE": "cpu", **extra}


def _cli(*args: str, torchrun: int = 0, env: dict | None = None, cwd: Path) -> subprocess.CompletedProcess:
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(torchrun)]
                if torchrun else [sys.executable])
    return subprocess.run([*launcher, "-m", "mlalp_core.cli", *args], env=env or _env(), cwd=cwd,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_torchrun_with_two_ranks_stores_what_one_process_stores(tmp_path):
    """The issue's command on the demo: MLA-LP and ML-DeepFool (whose iterations grow last bits
    into different iterates), batch 4, one process vs 2 gloo ranks. torchrun sets
    OMP_NUM_THREADS=1 in its ranks; the run's own thread count wins in both."""
    cmd = ["bench", "--models", "demo-gcn", "--data", "demo", "--attacks", "mla-lp", "ml-deepfool", "--batch", "4",
           "--limit", "8", "--quiet"]
    one = _cli(*cmd, "--store", str(tmp_path / "one.sqlite"), cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-2000:]
    two = _cli(*cmd, "--store", str(tmp_path / "two.sqlite"), torchrun=2, cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert _assert_same_numbers(tmp_path / "one.sqlite", tmp_path / "two.sqlite") == 16
    workers = {w for (w,) in sqlite3.connect(tmp_path / "two.sqlite").execute("SELECT worker FROM results")}
    assert workers == {"rank0/2", "rank1/2"}


def _worker(weights: Path, store: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(WORKER), str(weights), str(store), "mla-lp,ml-deepfool", *extra],
                          env=_env(), capture_output=True, text=True, timeout=600)


def test_kill_in_the_middle_of_a_batch_then_resume_equals_an_uninterrupted_run(weights, tmp_path):
    killed, clean = tmp_path / "killed.sqlite", tmp_path / "clean.sqlite"
    proc = _worker(weights, killed, "--die-after-stored", "7")  # batches of 4: dies after 3 of the second, so the one left would run alone
    assert proc.returncode == 17, proc.stderr[-2000:]
    assert len(_cells(killed)) == 7
    before = _cells(killed)
    assert _worker(weights, killed).returncode == 0
    assert _worker(weights, clean).returncode == 0
    assert _assert_same_numbers(killed, clean) > 7
    after = _cells(killed)
    assert all(after[k] == before[k] for k in before)  # what was stored before the kill is kept as it was


def test_a_resume_under_another_thread_count_starts_a_run_of_its_own(weights, tmp_path):
    store = tmp_path / "threads.sqlite"
    assert _worker(weights, store, "--threads", "1", "--die-after", "4").returncode == 17
    proc = _worker(weights, store, "--threads", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = ResultsStore(store).runs()
    # killed during MLA-LP with one thread, then resumed with two: the one-thread run is kept apart
    assert sorted((r["numerics"]["threads"], r["attack"]) for r in runs) == [
        (1, "mla-lp"), (2, "ml-deepfool"), (2, "mla-lp")]
    one = {r["attack"]: r for r in runs if r["numerics"]["threads"] == 1}
    assert one["mla-lp"]["examples"] == 4  # the interrupted run holds only what it finished
    labels = sorted(r["label"] for r in table3(ResultsStore(store).rows()))
    assert labels == ["ML-DeepFool (stored as float32)", "MLA-LP (stored as float32, threads 1)",
                      "MLA-LP (stored as float32, threads 2)"]


def test_the_cli_says_why_a_run_starts_anew_under_other_numerics(tmp_path):
    cmd = ["bench", "--models", "demo-gcn", "--data", "demo", "--attacks", "mla-lp", "--limit", "1", "--quiet",
           "--store", str(tmp_path / "s.sqlite"), "--set", "mla-lp.max_iterations=1"]
    assert _cli(*cmd, "--threads", "1", cwd=tmp_path).returncode == 0
    again = _cli(*cmd, "--threads", "2", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "the store has this run under other numerics" in again.stderr and "threads 2 (stored 1)" in again.stderr
    assert "pass --threads 1 to resume that one" in again.stderr
    bad = _cli(*cmd, "--threads", "0", cwd=tmp_path)
    assert bad.returncode == 2 and "threads must be a whole number" in bad.stderr
