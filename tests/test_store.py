"""The results store beyond the happy path, against its schema and its docstrings: Table II's
counts by the paper's rule, every stored column read back as written, run keys resolved by
prefix, schema 1 stores read and upgraded in place, WAL journaling, SQLite's errors explained,
locks retried, and a store that holds no run discarded (only that)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

from mlalp_core.errors import ConfigurationError
from mlalp_core.experiments import store as store_mod
from mlalp_core.experiments.store import (
    ResultsStore,
    _explain,
    _retry_locked,
    data_identity,
    discard_unused_store,
    pack_array,
    tensor_identity,
    unpack_array,
)

NUMERICS = {"threads": 1, "torch": "2.x", "device": "cpu (avx2)", "tf32": False, "deterministic": False,
            "lp_threads": 1, "lp_batched": False}
IDENT = dict(model="m", model_id="mid", dataset="d", split="test", data_id="did", attack="mla-lp",
             settings={"max_iterations": 3}, threshold=0.5, label_names=["a", "b", "c"], input_size=[4, 4],
             device="cpu", numerics=NUMERICS)


def _metrics(k: int) -> dict:
    """Distinct values in every column, so that a column read from another cannot pass."""
    return {"success": k % 2 == 0, "l1": 1.5 + k, "l2": 0.25 + k, "linf": 0.125 + k, "rmsd": 3.5 + k,
            "rmsd_paper": 1.75 + k, "labels_wrong": 10 + k, "collateral": 20 + k, "attacked_reached": 30 + k,
            "attacked_total": 40 + k, "iterations": 50 + k, "model_calls": 60 + k, "time_s": 0.0625 + k}


def _add(store: ResultsStore, key: str, example: str, idx: int, k: int, pert: torch.Tensor | None = None,
         precision: str = "float16") -> None:
    pert = torch.full((3, 4, 4), -0.25) if pert is None else pert
    store.add_result(key, example, idx, _metrics(k), torch.tensor([True, False, k % 2 == 1]),
                     torch.tensor([0.9, 0.2, 0.4]), torch.tensor([0.8, 0.1, 0.7]), pert,
                     [{"iteration": 1, "k": k}], worker="w", precision=precision)


def test_every_column_reads_back_as_written(tmp_path):
    store = ResultsStore(tmp_path / "s.sqlite", readonly=False)
    key = store.open_run(seed=7, **IDENT)
    for k, (ex, idx) in enumerate([("e2", 5), ("e1", 2), ("e3", 9)]):
        _add(store, key, ex, idx, k)
    rows = store.rows()
    assert [r["example_id"] for r in rows] == ["e1", "e2", "e3"]  # by index in the data set
    for r in rows:
        k = {"e2": 0, "e1": 1, "e3": 2}[r["example_id"]]
        assert {c: r[c] for c in _metrics(k)} == _metrics(k)
        assert type(r["success"]) is bool
        assert r["target"] == [1, 0, int(k % 2 == 1)]
        assert (r["model"], r["dataset"], r["split"], r["attack"], r["seed"]) == ("m", "d", "test", "mla-lp", 7)
        assert r["settings"] == {"max_iterations": 3} and r["numerics"] == NUMERICS and r["run_key"] == key
    ex = store.example(key, "e3")
    assert torch.equal(ex["perturbation"], torch.full((3, 4, 4), -0.25))
    assert ex["probs_clean"].tolist() == pytest.approx([0.9, 0.2, 0.4]) and ex["probs_adv"].tolist() == \
        pytest.approx([0.8, 0.1, 0.7])
    assert ex["target"].tolist() == [True, False, False] and ex["trace"] == [{"iteration": 1, "k": 2}]
    assert ex["label_names"] == ["a", "b", "c"] and ex["threshold"] == 0.5 and ex["success"] is True
    assert ex["worker"] == "w" and ex["idx"] == 9
    with pytest.raises(ConfigurationError, match="no stored result for example 'e9'"):
        store.example(key, "e9")
    # a second write of a finished example is ignored, not doubled nor replaced
    _add(store, key, "e1", 2, 5)
    assert len(store.rows()) == 3 and store.rows()[0]["l1"] == _metrics(1)["l1"]


def test_rows_filter_by_each_part_of_a_runs_identity(tmp_path):
    store = ResultsStore(tmp_path / "s.sqlite", readonly=False)
    keys = {}
    for model in ("m", "n"):
        for attack in ("mla-lp", "fgsm"):
            keys[model, attack] = store.open_run(seed=0, **{**IDENT, "model": model, "model_id": model,
                                                             "attack": attack, "dataset": "d" + model})
            _add(store, keys[model, attack], f"{model}-{attack}", 0, 0)
    assert {r["run_key"] for r in store.rows(model="m")} == {keys["m", "mla-lp"], keys["m", "fgsm"]}
    assert {r["run_key"] for r in store.rows(attack="fgsm")} == {keys["m", "fgsm"], keys["n", "fgsm"]}
    assert {r["run_key"] for r in store.rows(dataset="dn", attack="mla-lp")} == {keys["n", "mla-lp"]}
    assert [r["run_key"] for r in store.rows(run_key=keys["n", "fgsm"])] == [keys["n", "fgsm"]]
    assert store.rows(split="train") == [] and len(store.rows(split="test")) == 4
    runs = store.runs()
    assert len(runs) == 4 and all(r["examples"] == 1 and r["numerics"] == NUMERICS for r in runs)
    assert runs[0]["settings"] == {"max_iterations": 3}


def test_perturbations_round_trip_in_both_precisions():
    g = torch.Generator().manual_seed(0)
    r = (torch.rand(3, 5, 7, generator=g) - 0.7) * 0.1  # mostly negative
    for dtype, tol in (("float16", 1e-4), ("float32", 0.0)):
        blob, shape, kind = pack_array(r, dtype)
        back = unpack_array(blob, shape, kind)
        assert kind == dtype and json.loads(shape) == [3, 5, 7] and back.dtype == np.float32
        assert np.abs(back - r.numpy()).max() <= tol
    assert unpack_array(*pack_array(np.arange(6.0).reshape(2, 3), "float32")).tolist() == [[0, 1, 2], [3, 4, 5]]


def test_table_two_counts_follow_the_papers_rule(tmp_path):
    """Table II: the examples to be attacked are those predicted right with >= 2 positive labels."""
    store = ResultsStore(tmp_path / "s.sqlite", readonly=False)
    rows = [("a", 0, True, 2, [1, 1, 0]), ("b", 1, True, 1, [1, 0, 0]), ("c", 2, False, 3, [1, 1, 1]),
            ("d", 3, True, 3, [1, 1, 1]), ("e", 4, True, 0, [0, 0, 0])]
    store.save_selection(model="m", model_id="mid", dataset="d", split="test", data_id="did", rows=rows)
    store.save_selection(model="n", model_id="nid", dataset="d", split="test", data_id="did", rows=rows[:2])
    (m, n) = store.selections()
    assert (m["model"], m["test_examples"], m["to_attack"]) == ("m", 5, 2)
    assert (n["model"], n["test_examples"], n["to_attack"]) == ("n", 2, 1)
    sel = store.selection("mid", "did")
    assert [s["example_id"] for s in sel] == ["a", "b", "c", "d", "e"]
    assert [s["correct"] for s in sel] == [True, True, False, True, True] and sel[2]["labels"] == [1, 1, 1]
    assert store.selection("mid", "other") == []


def test_a_run_is_found_by_a_unique_prefix_of_its_key(tmp_path):
    store = ResultsStore(tmp_path / "s.sqlite", readonly=False)
    keys = [store.open_run(seed=s, **IDENT) for s in range(40)]
    k = keys[0]
    assert store.resolve_run(k) == k and store.resolve_run(f"  {k[:12]} ") == k
    shared = next(p for n in range(1, 4) for p in {x[:n] for x in keys} if sum(x.startswith(p) for x in keys) > 1)
    with pytest.raises(ConfigurationError, match="ambiguous"):
        store.resolve_run(shared)
    with pytest.raises(ConfigurationError, match=r"no run 'zzz'.* \.\.\. \(`mlalp report"):  # the list of 40 is cut
        store.resolve_run("zzz")
    few = ResultsStore(tmp_path / "few.sqlite", readonly=False)
    (only,) = [few.open_run(seed=0, **IDENT)]
    with pytest.raises(ConfigurationError, match=rf"its runs: {only[:8]} \(`mlalp report"):  # one run: no '...'
        few.resolve_run("zzz")
    with pytest.raises(ConfigurationError, match="no run ''"):
        store.resolve_run("   ")


def test_identities_change_with_what_they_identify():
    labels = torch.tensor([[1, 0], [0, 1]])
    base = data_identity("voc2007", "test", ["a", "b"], labels)
    assert base == data_identity("voc2007", "test", ["a", "b"], labels.clone())
    others = {data_identity("voc2012", "test", ["a", "b"], labels), data_identity("voc2007", "val", ["a", "b"], labels),
              data_identity("voc2007", "test", ["a", "c"], labels), data_identity("voc2007", "test", ["b", "a"], labels),
              data_identity("voc2007", "test", ["a", "b"], labels.flip(0))}
    assert base not in others and len(others) == 5
    w = torch.arange(6.0).reshape(2, 3)
    t = tensor_identity([("w", w)])
    assert t == tensor_identity([("w", w.clone())]) and len(t) == 16
    assert len({t, tensor_identity([("v", w)]), tensor_identity([("w", w.reshape(3, 2))]),
                tensor_identity([("w", w.double())]), tensor_identity([("w", w + 1)])}) == 5
    assert tensor_identity([("e", torch.zeros(0))]) != tensor_identity([("e", torch.zeros(0, 1))])


def _schema1_store(path):
    """A store as mlalp wrote it before schema 2: no numerics column."""
    schema1 = store_mod._SCHEMA.replace(", numerics TEXT\n", "\n")
    assert schema1 != store_mod._SCHEMA
    conn = sqlite3.connect(path)
    conn.executescript(schema1 + "\nINSERT INTO meta VALUES ('schema', '1');")
    conn.execute("INSERT INTO runs (run_key, created, model, model_id, dataset, split, data_id, attack, settings, "
                 "seed, threshold, label_names, input_size, device, version) VALUES "
                 "('old', 1.0, 'm', 'mid', 'd', 'test', 'did', 'fgsm', '{}', 0, 0.5, '[\"a\"]', '[4, 4]', 'cpu', '0')")
    conn.commit()
    conn.close()


def test_a_schema_1_store_is_read_and_upgraded_in_place(tmp_path):
    path = tmp_path / "old.sqlite"
    _schema1_store(path)
    ro = ResultsStore(path)  # read-only: read as it is
    assert [(r["run_key"], r["numerics"]) for r in ro.runs()] == [("old", None)]
    assert ro.rows() == []
    rw = ResultsStore(path, readonly=False)  # opened to write: upgraded to schema 2
    conn = sqlite3.connect(path)
    assert "numerics" in {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
    assert conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == str(store_mod.SCHEMA_VERSION)
    conn.close()
    key = rw.open_run(seed=0, **IDENT)
    assert {r["run_key"]: r["numerics"] for r in rw.runs()} == {"old": None, key: NUMERICS}
    ResultsStore(path, readonly=False)  # opening an upgraded store again changes nothing
    assert len(ResultsStore(path).runs()) == 2


def test_stores_use_write_ahead_logging(tmp_path):
    path = tmp_path / "s.sqlite"
    ResultsStore(path, readonly=False)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    conn.close()


@pytest.mark.parametrize("text, words", [
    ("database disk image is malformed", "corrupt or not an SQLite database"),
    ("file is not a database", "corrupt or not an SQLite database"),
    ("database or disk is full", "is the disk full"),
    ("disk I/O error", "is the disk full"),
    ("attempt to write a readonly database", "no write permission"),
    ("unable to open database file", "no write permission"),
    ("permission denied", "no write permission"),
])
def test_sqlite_errors_are_explained(text, words):
    line = _explain(sqlite3.OperationalError(text))
    assert line.startswith(text) and words in line and "\n" not in line
    assert _explain(sqlite3.OperationalError("no such table: x")) == "no such table: x"


def test_a_locked_store_is_retried_and_other_errors_are_not():
    calls = []

    def locked_a_while():
        calls.append(1)
        if len(calls) <= 6:
            raise sqlite3.OperationalError("database is locked")
        return "done"

    assert _retry_locked(locked_a_while, attempts=8, pause_s=1e-4) == "done" and len(calls) == 7
    calls.clear()

    def broken():
        calls.append(1)
        raise sqlite3.OperationalError("disk I/O error")

    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        _retry_locked(broken, attempts=5, pause_s=0.0)
    assert len(calls) == 1
    calls.clear()

    def always_locked():
        calls.append(1)
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _retry_locked(always_locked, attempts=4, pause_s=0.0)
    assert len(calls) == 4


def test_only_a_store_without_runs_is_discarded(tmp_path):
    empty = tmp_path / "empty.sqlite"
    s = ResultsStore(empty, readonly=False)
    s.save_selection(model="m", model_id="mid", dataset="d", split="t", data_id="did", rows=[("a", 0, True, 2, [1, 1])])
    assert discard_unused_store(empty) is True
    assert not empty.exists() and not (tmp_path / "empty.sqlite-wal").exists()
    used = tmp_path / "used.sqlite"
    ResultsStore(used, readonly=False).open_run(seed=0, **IDENT)
    assert discard_unused_store(used) is False and len(ResultsStore(used).runs()) == 1
    other = tmp_path / "notes.txt"
    other.write_text("not a store")
    assert discard_unused_store(other) is False and other.read_text() == "not a store"
    assert discard_unused_store(tmp_path / "missing.sqlite") is False


def test_what_cannot_be_a_store_is_refused_without_a_change(tmp_path):
    with pytest.raises(ConfigurationError, match="no results store at"):
        ResultsStore(tmp_path / "missing.sqlite")
    with pytest.raises(ConfigurationError, match="is a folder"):
        ResultsStore(tmp_path, readonly=False)
    foreign = tmp_path / "foreign.sqlite"
    conn = sqlite3.connect(foreign)
    for name in ("runs", "zeta", "alpha", "notes", "beta", "gamma"):
        conn.execute(f"CREATE TABLE {name} (x)")
    conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    conn.execute("INSERT INTO meta VALUES ('schema', '2')")  # a schema mark, but not the store's tables
    conn.commit()
    conn.close()
    before = foreign.read_bytes()
    for readonly in (True, False):
        with pytest.raises(ConfigurationError, match=r"not an mlalp results store \(tables: alpha, beta, gamma, meta, notes, runs, zeta\)"):
            ResultsStore(foreign, readonly=readonly)
    assert foreign.read_bytes() == before
    for schema, words in (("3", "newer mlalp"), ("x", "newer mlalp"), ("0", "old store schema 0")):
        path = tmp_path / f"schema{schema}.sqlite"
        ResultsStore(path, readonly=False)
        conn = sqlite3.connect(path)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (schema,))
        conn.commit()
        conn.close()
        with pytest.raises(ConfigurationError, match=words):
            ResultsStore(path)
    # an SQLite file with a header and no table yet: another rank is creating the store
    fresh = tmp_path / "fresh.sqlite"
    conn = sqlite3.connect(fresh)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    assert fresh.stat().st_size > 0
    with pytest.raises(ConfigurationError, match=r"not an mlalp results store \(tables: none\)"):
        ResultsStore(fresh)  # to read, it is no store
    ResultsStore(fresh, readonly=False)  # to write, it becomes one
    assert ResultsStore(fresh).rows() == []
    blank = tmp_path / "blank.sqlite"
    blank.write_bytes(b"")
    ResultsStore(blank, readonly=False)  # an empty file: a store another rank is creating
    assert ResultsStore(blank).rows() == []


def test_a_store_locked_while_it_is_created_is_retried(tmp_path, monkeypatch):
    """Several ranks create one store at once: SQLite answers "database is locked" to all but one
    (switching to WAL does not wait), and creating retries instead of failing."""
    real = sqlite3.connect
    fails = {"n": 2}

    def locked(sql):
        if fails["n"] > 0:
            fails["n"] -= 1
            raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: _Conn(real(*a, **k), locked))
    monkeypatch.setattr(store_mod.time, "sleep", lambda s: None)
    store = ResultsStore(tmp_path / "s.sqlite", readonly=False)
    assert fails["n"] == 0 and store.runs() == []


def test_identities_and_run_keys_are_those_earlier_versions_wrote():
    """A store written by one version is resumed by the next only if the same run gets the same key:
    the hashes are pinned (computed by this version; change them only with a store schema change)."""
    assert data_identity("voc2007", "test", ["a", "b"], torch.tensor([[1, 0], [0, 1]])) == "34e0d08b692064cc"
    assert tensor_identity([("w", torch.arange(6.0).reshape(2, 3))]) == "e2f6bbef144d9823"
    key = store_mod.run_key("m" * 16, "d" * 16, "mla-lp", {"max_iterations": 3}, 0, {"threads": 1})
    assert key == "007eabe1714cb2b24a29"
    assert store_mod.run_key("m" * 16, "d" * 16, "mla-lp", {"max_iterations": 3}, 0) == "74844cbeb1723a21da6a"  # schema 1


def test_a_missing_run_lists_at_most_twelve_runs_and_says_when_there_are_more(tmp_path):
    store = ResultsStore(tmp_path / "s.sqlite", readonly=False)
    keys = [store.open_run(seed=s, **IDENT) for s in range(13)]
    with pytest.raises(ConfigurationError) as info:
        store.resolve_run("zzz")
    listed = str(info.value).split("its runs: ", 1)[1].split(" (`mlalp report", 1)[0]
    assert listed.endswith(" ...") and len(listed.removesuffix(" ...").split(", ")) == 12  # the 13th is not shown
    twelve = ResultsStore(tmp_path / "twelve.sqlite", readonly=False)
    keys = [twelve.open_run(seed=s, **IDENT) for s in range(12)]
    with pytest.raises(ConfigurationError) as info:
        twelve.resolve_run("zzz")
    listed = str(info.value).split("its runs: ", 1)[1].split(" (`mlalp report", 1)[0]
    assert sorted(listed.split(", ")) == sorted(k[:8] for k in keys)  # every run shown: no '...'


class _Conn:
    """A connection proxy: ``fail(sql)`` may raise before a statement reaches SQLite."""

    def __init__(self, conn, fail):
        object.__setattr__(self, "_c", conn)
        object.__setattr__(self, "_fail", fail)

    def execute(self, sql, *args):
        self._fail(sql)
        return self._c.execute(sql, *args)

    def executescript(self, sql):
        self._fail(sql)
        return self._c.executescript(sql)

    def __getattr__(self, name):
        return getattr(self._c, name)

    def __setattr__(self, name, value):
        setattr(self._c, name, value)

    def __enter__(self):
        self._c.__enter__()
        return self

    def __exit__(self, *exc):
        return self._c.__exit__(*exc)


def _sqlite_as_built(monkeypatch, tmp_path, *, uri_filenames: bool = True, read_lock_error: str | None = None):
    """Emulate two environments in sqlite3.connect. ``uri_filenames=False``: SQLite built without
    SQLITE_USE_URI (SQLite's own default; Debian turns it on), where a name that starts with
    ``file:`` is a URI only when the caller says uri=True, else a plain file name (here: relative
    to ``tmp_path``, where no folder ``file:`` exists, so it cannot be opened). ``read_lock_error``:
    a plain read-only connection to a store with a ``-wal`` cannot take its read lock (a read-only
    folder or file system: no ``-shm`` can be made or written), and its first statement fails so."""
    real = sqlite3.connect
    monkeypatch.chdir(tmp_path)

    def connect(database, *args, uri=False, **kw):
        name = str(database)
        if name.startswith("file:") and not uri and not uri_filenames:
            database = "./" + name
        conn = real(database, *args, uri=uri, **kw)
        if read_lock_error and uri and "mode=ro" in name and "immutable=1" not in name:
            def fail(sql):
                raise sqlite3.OperationalError(read_lock_error)
            return _Conn(conn, fail)
        return conn

    monkeypatch.setattr(sqlite3, "connect", connect)


def _folder(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_a_store_is_read_where_sqlite_reads_uri_names_only_when_asked(tmp_path, monkeypatch):
    path = tmp_path / "st" / "s.sqlite"
    store = ResultsStore(path, readonly=False)
    key = store.open_run(seed=0, **IDENT)
    _add(store, key, "e0", 0, 0)
    unused = tmp_path / "st" / "unused.sqlite"
    ResultsStore(unused, readonly=False)
    before = _folder(tmp_path / "st")
    _sqlite_as_built(monkeypatch, tmp_path, uri_filenames=False)
    ro = ResultsStore(path)
    assert [r["run_key"] for r in ro.runs()] == [key] and [r["example_id"] for r in ro.rows()] == ["e0"]
    assert _folder(tmp_path / "st") == before and not (tmp_path / "file:").exists()  # nothing written anywhere
    assert discard_unused_store(unused) is True and not unused.exists()  # a store without runs is still found
    assert discard_unused_store(path) is False and path.exists()


@pytest.mark.parametrize("error", ["unable to open database file", "attempt to write a readonly database"])
@pytest.mark.parametrize("uri_filenames", [True, False])
def test_a_store_whose_read_lock_cannot_be_taken_is_read_as_it_is(tmp_path, monkeypatch, error, uri_filenames):
    """A store left with a -wal in a folder this process cannot write: a plain read-only connection
    cannot take its read lock (SQLite says one of these two); the store is read as it is on disk
    (immutable), and nothing is written."""
    path = tmp_path / "st" / "s.sqlite"
    store = ResultsStore(path, readonly=False)
    key = store.open_run(seed=0, **IDENT)
    _add(store, key, "e0", 0, 0)
    Path(f"{path}-wal").write_bytes(b"")  # as a writer that did not close left it
    before = _folder(tmp_path / "st")
    _sqlite_as_built(monkeypatch, tmp_path, uri_filenames=uri_filenames, read_lock_error=error)
    ro = ResultsStore(path)
    assert [r["run_key"] for r in ro.runs()] == [key] and [r["example_id"] for r in ro.rows()] == ["e0"]
    assert _folder(tmp_path / "st") == before and not (tmp_path / "file:").exists()
    # any other failure of that connection is not taken for a missing read lock
    monkeypatch.undo()
    _sqlite_as_built(monkeypatch, tmp_path, read_lock_error="database disk image is malformed")
    with pytest.raises(ConfigurationError, match="malformed"):
        ResultsStore(path)


def test_an_upgrade_that_finds_the_store_locked_is_retried(tmp_path, monkeypatch):
    """A schema 1 store opened to write by several processes at once: the one whose upgrade finds
    the write lock taken (SQLite says "locked" before any transaction began) retries, as creating
    does, and the store is upgraded."""
    path = tmp_path / "old.sqlite"
    _schema1_store(path)
    real = sqlite3.connect
    locked = {"n": 1}

    def fail(sql):
        if "ALTER TABLE runs ADD COLUMN" in sql and locked["n"] > 0:
            locked["n"] -= 1
            raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: _Conn(real(*a, **k), fail))
    monkeypatch.setattr(store_mod.time, "sleep", lambda s: None)
    rw = ResultsStore(path, readonly=False)
    assert locked["n"] == 0
    monkeypatch.undo()
    conn = sqlite3.connect(path)
    assert "numerics" in {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
    assert conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == str(store_mod.SCHEMA_VERSION)
    conn.close()
    key = rw.open_run(seed=0, **IDENT)
    assert {r["run_key"] for r in ResultsStore(path).runs()} == {"old", key}


def test_numpy_and_tensor_settings_key_a_run_as_their_python_values():
    """Settings built in a notebook often hold numpy or tensor scalars: the same values, the same run."""
    import numpy as np

    from mlalp_core.experiments.store import run_key

    plain = run_key("m", "d", "pgd", {"eps": 0.25, "steps": 10, "where": "x"}, 0)
    assert run_key("m", "d", "pgd", {"eps": np.float64(0.25), "steps": np.int64(10), "where": "x"}, 0) == plain
    assert run_key("m", "d", "pgd", {"eps": torch.tensor(0.25), "steps": 10, "where": "x"}, 0) == plain
    assert run_key("m", "d", "pgd", {"eps": 0.5, "steps": 10, "where": "x"}, 0) != plain


def test_a_models_identity_depends_on_its_weights_not_on_the_order_it_registered_them():
    from mlalp_core.experiments.store import model_identity

    class AB(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(3, 2)
            self.b = torch.nn.Linear(2, 2)

    class BA(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.b = torch.nn.Linear(2, 2)
            self.a = torch.nn.Linear(3, 2)

    one, two = AB(), BA()
    two.load_state_dict(one.state_dict())
    assert list(one.state_dict()) != list(two.state_dict())  # the same names in another order
    assert model_identity(one) == model_identity(two)
    with torch.no_grad():
        two.a.weight[0, 0] += 1.0
    assert model_identity(one) != model_identity(two)
