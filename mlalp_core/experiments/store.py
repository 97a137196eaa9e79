"""The results store: one SQLite file that every batch run writes into, example by example.

Each finished (run, example) pair is written in its own transaction, so an interrupted run
loses nothing and a re-run skips what is already there. A *run* is one attack with fixed
settings on one model and data split; its key is a hash of everything that determines its
results (model weights, data identity, attack, settings, seed), so the same command resumes
the same run and a changed setting starts a new one. The run's numerics (threads, torch version,
instruction set, TF32: :mod:`mlalp_core.numerics`) are part of that identity since store schema 2,
so a resume under other numerics starts a run of its own instead of mixing two numerics in one.

Stored per example: the target, success, the distortion metrics (units in their names), label
bookkeeping, iterations, model calls, time, the probabilities before and after, the
per-iteration trace, and the perturbation itself (zlib-compressed float16 by default, float32
on request) so the app can show an example later without re-running it. The examples each
model would attack (Table II) are stored too, in ``selection``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import zlib
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigurationError, exception_line
from ..version import __version__

SCHEMA_VERSION = 2
#: Older schemas this code still reads (and upgrades in place when it opens one to write).
READABLE_SCHEMAS = (1, 2)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS runs (
    run_key TEXT PRIMARY KEY,
    created REAL, model TEXT, model_id TEXT, dataset TEXT, split TEXT, data_id TEXT,
    attack TEXT, settings TEXT, seed INTEGER, threshold REAL, label_names TEXT,
    input_size TEXT, device TEXT, version TEXT, numerics TEXT
);
CREATE TABLE IF NOT EXISTS results (
    run_key TEXT NOT NULL, example_id TEXT NOT NULL, idx INTEGER,
    target TEXT, success INTEGER,
    l1 REAL, l2 REAL, linf REAL, rmsd REAL, rmsd_paper REAL,
    labels_wrong INTEGER, collateral INTEGER, attacked_reached INTEGER, attacked_total INTEGER,
    iterations INTEGER, model_calls INTEGER, time_s REAL,
    probs_clean BLOB, probs_adv BLOB, perturbation BLOB, pert_shape TEXT, pert_dtype TEXT,
    trace TEXT, finished REAL, worker TEXT,
    PRIMARY KEY (run_key, example_id)
);
CREATE TABLE IF NOT EXISTS selection (
    model_id TEXT NOT NULL, data_id TEXT NOT NULL, model TEXT, dataset TEXT, split TEXT,
    example_id TEXT NOT NULL, idx INTEGER, correct INTEGER, positives INTEGER, labels TEXT,
    PRIMARY KEY (model_id, data_id, example_id)
);
"""

_METRIC_COLUMNS = ("success", "l1", "l2", "linf", "rmsd", "rmsd_paper", "labels_wrong", "collateral",
                   "attacked_reached", "attacked_total", "iterations", "model_calls", "time_s")


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=_json_default)


def _json_default(o: Any):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot store {type(o).__name__} as JSON")


def tensor_identity(tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """A short hash of named tensors (model weights): same weights, same identity."""
    h = hashlib.sha256()
    for name, t in tensors:
        h.update(name.encode())
        arr = t.detach().cpu().contiguous()
        h.update(str(arr.dtype).encode() + str(tuple(arr.shape)).encode())
        h.update(arr.reshape(-1).view(torch.uint8).numpy().tobytes() if arr.numel() else b"")
    return h.hexdigest()[:16]


def model_identity(model: torch.nn.Module) -> str:
    named = sorted(list(model.state_dict().items()) + [(f"buffer:{n}", b) for n, b in model.named_buffers()],
                   key=lambda kv: kv[0])
    return tensor_identity(named)


def data_identity(name: str, split: str, ids: Sequence[str], labels: torch.Tensor) -> str:
    h = hashlib.sha256()
    h.update(f"{name}/{split}".encode())
    h.update("\n".join(ids).encode())
    h.update(labels.to(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def run_key(model_id: str, data_id: str, attack: str, settings: dict, seed: int,
            numerics: dict | None = None) -> str:
    """The identity of a run: everything that determines its numbers (``numerics`` None: the keys
    of schema-1 runs, which did not record them)."""
    parts: list[Any] = [model_id, data_id, attack, settings, seed]
    if numerics is not None:
        parts.append(numerics)
    return hashlib.sha256(_json(parts).encode()).hexdigest()[:20]


def pack_array(a: torch.Tensor | np.ndarray, dtype: str = "float16") -> tuple[bytes, str, str]:
    arr = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
    arr = arr.astype(dtype)
    return zlib.compress(arr.tobytes(), 6), _json(list(arr.shape)), dtype


def unpack_array(blob: bytes, shape: str, dtype: str) -> np.ndarray:
    return np.frombuffer(zlib.decompress(blob), dtype=dtype).reshape(json.loads(shape)).astype(np.float32)


def _explain(exc: BaseException) -> str:
    """SQLite's message with what to do about it."""
    text = exception_line(exc)
    low = text.lower()
    if "malformed" in low or "not a database" in low:
        return f"{text} (the file is corrupt or not an SQLite database; restore a copy or use another --store)"
    if "disk is full" in low or "disk i/o" in low:
        return f"{text} (is the disk full or the file too large? free space; finished examples are kept)"
    if "readonly" in low or "unable to open" in low or "permission" in low:
        return f"{text} (no write permission or a read-only file system; pass a writable --store)"
    return text


def _retry_locked(fn, attempts: int = 50, pause_s: float = 0.1):
    """Call ``fn``, retrying while another process holds a lock SQLite will not wait for."""
    for k in range(attempts):
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or k == attempts - 1:
                raise
            time.sleep(pause_s * (1 + k % 5))


def check_store_path(path: Path) -> None:
    """A path that cannot hold a store, named for what it is before SQLite says something vaguer."""
    if not path.exists():
        return
    if path.is_dir():
        raise ConfigurationError(f"the results store {path} is a folder, not a file; name a file")
    if not path.is_file():
        raise ConfigurationError(f"the results store {path} is not a regular file (a device, pipe or socket); "
                                 "name a file")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigurationError(f"the results store {path} cannot be read ({exc.strerror or exc}): give yourself "
                                 "read permission or pass another --store") from None


def discard_unused_store(path: str | Path) -> bool:
    """Remove a store that holds no run (one a refused command created, with at most the
    selection it cached); returns whether it did. A store with any run is never touched."""
    p = Path(path)
    if not p.is_file():
        return False
    try:
        with sqlite3.connect(f"{p.absolute().as_uri()}?mode=ro", uri=True) as conn:
            runs = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
        conn.close()
    except sqlite3.Error:
        return False
    if runs:
        return False
    for q in (p, Path(f"{p}-wal"), Path(f"{p}-shm")):
        q.unlink(missing_ok=True)
    return True


class ResultsStore:
    """Open the store at ``path``: read-only unless ``readonly=False`` (the batch runner), which
    creates it when it does not exist. Safe for several processes writing at once.

    Nothing is written to a file that is not an mlalp store (another SQLite database, a schema
    from a newer mlalp, not a database at all): it is refused before any write, byte for byte
    unchanged. SQLite's failures (a corrupt page, a full disk, no permission) become one line
    naming the file; every example finished before stays intact (each is its own transaction).
    """

    def __init__(self, path: str | Path, *, readonly: bool = True) -> None:
        self.path = Path(path)
        self.readonly = readonly
        check_store_path(self.path)
        if readonly:
            if not self.path.is_file():
                raise ConfigurationError(f"no results store at {self.path}: run `mlalp bench` first or pass --store")
            self._check_existing()
            return
        if self.path.is_file() and self.path.stat().st_size > 0:
            self._check_existing(allow_empty=True)  # empty: a store another rank is creating now
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(f"cannot create the folder of the results store {self.path}: "
                                     f"{exc.strerror or exc}") from None
        self._guard(lambda: _retry_locked(self._create), "create")

    # ---- opening ----------------------------------------------------------------------------------
    def _check_existing(self, allow_empty: bool = False) -> None:
        """Refuse, without writing, a file that is not an mlalp store of a schema this code reads."""
        def look() -> tuple[set[str], str | None]:
            with self._connect(write=False) as conn:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone() if "meta" in tables else None
            return tables, None if row is None else str(row[0])

        tables, schema = self._guard(look, "read")
        if allow_empty and not tables:
            return
        if schema is None or not {"runs", "results", "selection"} <= tables:
            found = ", ".join(sorted(tables)) or "none"
            raise ConfigurationError(f"{self.path} is an SQLite database but not an mlalp results store (tables: "
                                     f"{found}); it was left untouched: pass another --store")
        if not schema.isdigit() or int(schema) > SCHEMA_VERSION:
            raise ConfigurationError(f"{self.path} was written by a newer mlalp (store schema {schema}; this mlalp "
                                     f"{__version__} reads schema {SCHEMA_VERSION}): upgrade mlalp to use it")
        if int(schema) not in READABLE_SCHEMAS:
            raise ConfigurationError(f"{self.path} has the old store schema {schema} (this mlalp reads "
                                     f"{', '.join(map(str, READABLE_SCHEMAS))}): re-run the experiment into a new store")
        self._schema = int(schema)

    def _create(self) -> None:
        # WAL is a property of the file, set once here; switching the journal mode takes an
        # exclusive lock that SQLite's busy handler does not wait for, hence the retry around it
        # when several ranks of a sharded run open a new store at the same moment (untranslated
        # errors, so that the retry sees "locked").
        with self._connect(translate=False) as conn:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            # one transaction: another process sees no table or all of them with the schema mark
            conn.executescript(f"BEGIN IMMEDIATE;\n{_SCHEMA}\nINSERT OR IGNORE INTO meta VALUES ('schema', "
                               f"'{SCHEMA_VERSION}');\nCOMMIT;")
            # schema 1 -> 2: the runs' numerics (NULL for the runs of schema 1: not recorded)
            columns = {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
            if "numerics" not in columns:
                try:
                    conn.executescript("BEGIN IMMEDIATE;\nALTER TABLE runs ADD COLUMN numerics TEXT;\n"
                                       f"UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema';\nCOMMIT;")
                except sqlite3.OperationalError as exc:  # another process upgraded it first
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    if "duplicate column" not in str(exc):
                        raise
        self._schema = SCHEMA_VERSION

    @contextmanager
    def _connect(self, write: bool | None = None, translate: bool = True):
        """A connection in a transaction; with ``translate``, SQLite's errors become one line."""
        write = not self.readonly if write is None else write
        try:
            conn = sqlite3.connect(self.path, timeout=60.0) if write else self._connect_readonly()
        except sqlite3.Error as exc:
            if not translate:
                raise
            raise ConfigurationError(f"results store {self.path}: {_explain(exc)}") from None
        try:
            conn.row_factory = sqlite3.Row
            with conn:
                yield conn
        except sqlite3.Error as exc:
            if not translate:
                raise
            raise ConfigurationError(f"results store {self.path}: {_explain(exc)}") from None
        finally:
            conn.close()

    def _connect_readonly(self) -> sqlite3.Connection:
        """A read-only connection that leaves no trace. Without a ``-wal`` file no process has
        the store open, and it is read as immutable: no ``-shm``/``-wal`` is created next to it
        (nothing at all is written, which also works on a read-only file system). While a writer
        has it open, a plain read-only connection shares the writer's WAL; where even that cannot
        take its read lock (a read-only folder), immutable again."""
        base = self.path.absolute().as_uri()
        quiet = f"{base}?mode=ro&immutable=1"
        if not Path(f"{self.path}-wal").exists():
            return sqlite3.connect(quiet, uri=True, timeout=60.0)
        conn = sqlite3.connect(f"{base}?mode=ro", uri=True, timeout=60.0)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError as exc:
            conn.close()
            if "unable to open" in str(exc) or "readonly" in str(exc):
                return sqlite3.connect(quiet, uri=True, timeout=60.0)
            raise
        return conn

    def _guard(self, fn, action: str):
        """Run ``fn``; SQLite's and the OS's errors become one line naming the store."""
        try:
            return fn()
        except sqlite3.Error as exc:
            raise ConfigurationError(f"results store {self.path}: cannot {action}: {_explain(exc)}") from None
        except OSError as exc:
            raise ConfigurationError(f"results store {self.path}: cannot {action}: {exc.strerror or exc}") from None

    # ---- runs -----------------------------------------------------------------------------------
    def open_run(self, *, model: str, model_id: str, dataset: str, split: str, data_id: str, attack: str,
                 settings: dict, seed: int, threshold: float, label_names: Sequence[str],
                 input_size: Sequence[int], device: str, numerics: dict[str, Any]) -> str:
        """The key of the run with this identity, created if new (existing runs are resumed).
        ``numerics``: :meth:`mlalp_core.numerics.Numerics.as_dict` of the processes that run it."""
        key = run_key(model_id, data_id, attack, settings, seed, numerics)
        with self._connect() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO runs (run_key, created, model, model_id, dataset, split, data_id, attack, "
                "settings, seed, threshold, label_names, input_size, device, version, numerics) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (key, time.time(), model, model_id, dataset, split, data_id, attack, _json(settings), seed,
                 threshold, _json(list(label_names)), _json(list(input_size)), device, __version__,
                 _json(numerics)),
            )
        return key

    def _numerics_column(self) -> str:
        return "r.numerics" if getattr(self, "_schema", SCHEMA_VERSION) >= 2 else "NULL AS numerics"

    def runs(self) -> list[dict[str, Any]]:
        """Every run with its identity and how many examples it finished, oldest first."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT r.run_key, r.created, r.model, r.model_id, r.dataset, r.split, r.data_id, r.attack, r.settings, "
                f"r.seed, r.threshold, r.device, r.version, {self._numerics_column()}, "
                "(SELECT COUNT(*) FROM results x WHERE x.run_key = r.run_key) AS examples "
                "FROM runs r ORDER BY r.created, r.run_key").fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["settings"] = json.loads(d["settings"])
            d["numerics"] = json.loads(d["numerics"]) if d["numerics"] else None
            out.append(d)
        return out

    def resolve_run(self, prefix: str) -> str:
        """The full key of the one run whose key starts with ``prefix`` (as tables print them)."""
        prefix = prefix.strip()
        keys = [r["run_key"] for r in self.runs()]
        hits = [k for k in keys if k.startswith(prefix)] if prefix else []
        if len(hits) == 1:
            return hits[0]
        if not hits:
            shown = ", ".join(k[:8] for k in keys[:12]) + (" ..." if len(keys) > 12 else "")
            raise ConfigurationError(f"no run {prefix!r} in {self.path}; its runs: {shown or 'none'} "
                                     "(`mlalp report --runs` lists them)")
        raise ConfigurationError(f"run {prefix!r} is ambiguous in {self.path}: it starts "
                                 f"{', '.join(h[:12] for h in hits)}; give more of the key")

    def finished_ids(self, key: str) -> set[str]:
        with self._connect() as conn:
            return {r[0] for r in conn.execute("SELECT example_id FROM results WHERE run_key=?", (key,))}

    # ---- results --------------------------------------------------------------------------------
    def add_result(self, key: str, example_id: str, idx: int, metrics: dict[str, Any], target: torch.Tensor,
                   probs_clean: torch.Tensor, probs_adv: torch.Tensor, perturbation: torch.Tensor,
                   trace: list[dict], worker: str = "", precision: str = "float16") -> None:
        """Write one finished example (its own transaction; a second write of it is ignored)."""
        pert, shape, dtype = pack_array(perturbation, precision)
        pc, _, _ = pack_array(probs_clean, "float32")
        pa, _, _ = pack_array(probs_adv, "float32")
        values = [metrics[c] for c in _METRIC_COLUMNS]
        values[0] = int(bool(values[0]))
        with self._connect() as conn:
            conn.execute(
                f"INSERT OR IGNORE INTO results (run_key, example_id, idx, target, {', '.join(_METRIC_COLUMNS)}, "
                "probs_clean, probs_adv, perturbation, pert_shape, pert_dtype, trace, finished, worker) "
                f"VALUES (?,?,?,?,{','.join('?' * len(_METRIC_COLUMNS))},?,?,?,?,?,?,?,?)",
                (key, example_id, idx, _json([int(v) for v in target.tolist()]), *values,
                 pc, pa, pert, shape, dtype, _json(trace), time.time(), worker),
            )

    def rows(self, *, model: str | None = None, dataset: str | None = None, split: str | None = None,
             attack: str | None = None, run_key: str | None = None) -> list[dict[str, Any]]:
        """One flat dict per (run, example): run identity + metrics (no arrays)."""
        where, args = [], []
        for col, val in (("r.model", model), ("r.dataset", dataset), ("r.split", split), ("r.attack", attack),
                         ("r.run_key", run_key)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        sql = ("SELECT r.run_key, r.model, r.dataset, r.split, r.attack, r.seed, r.settings, "
               f"{self._numerics_column()}, x.example_id, x.idx, "
               f"x.target, {', '.join('x.' + c for c in _METRIC_COLUMNS)} "
               "FROM results x JOIN runs r ON r.run_key = x.run_key")
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY r.model, r.dataset, r.attack, r.created, r.run_key, x.idx"
        with self._connect() as conn:
            rows = conn.execute(sql, args).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["success"] = bool(d["success"])
            d["target"] = json.loads(d["target"])
            d["settings"] = json.loads(d["settings"])
            d["numerics"] = json.loads(d["numerics"]) if d["numerics"] else None
            out.append(d)
        return out

    def example(self, key: str, example_id: str) -> dict[str, Any]:
        """Everything stored for one example, arrays as float32 tensors."""
        with self._connect() as conn:
            r = conn.execute("SELECT x.*, r.model, r.dataset, r.split, r.attack, r.label_names, r.threshold "
                             "FROM results x JOIN runs r ON r.run_key = x.run_key "
                             "WHERE x.run_key=? AND x.example_id=?", (key, example_id)).fetchone()
        if r is None:
            raise ConfigurationError(f"no stored result for example {example_id!r} of run {key}")
        d = dict(r)
        d["perturbation"] = torch.from_numpy(unpack_array(d.pop("perturbation"), d.pop("pert_shape"), d.pop("pert_dtype")))
        d["probs_clean"] = torch.from_numpy(np.frombuffer(zlib.decompress(d["probs_clean"]), dtype=np.float32).copy())
        d["probs_adv"] = torch.from_numpy(np.frombuffer(zlib.decompress(d["probs_adv"]), dtype=np.float32).copy())
        d["target"] = torch.tensor(json.loads(d["target"]), dtype=torch.bool)
        d["trace"] = json.loads(d["trace"])
        d["label_names"] = json.loads(d["label_names"])
        d["success"] = bool(d["success"])
        return d

    # ---- selection (Table II) -------------------------------------------------------------------
    def save_selection(self, *, model: str, model_id: str, dataset: str, split: str, data_id: str,
                       rows: Iterable[tuple[str, int, bool, int, list[int]]]) -> None:
        """rows: (example_id, idx, prediction == ground truth, positive labels, labels)."""
        with self._connect() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO selection VALUES (?,?,?,?,?,?,?,?,?,?)",
                [(model_id, data_id, model, dataset, split, eid, idx, int(ok), pos, _json(lab))
                 for eid, idx, ok, pos, lab in rows],
            )

    def selection(self, model_id: str, data_id: str) -> list[dict[str, Any]]:
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM selection WHERE model_id=? AND data_id=? ORDER BY idx",
                                (model_id, data_id)).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["correct"] = bool(d["correct"])
            d["labels"] = json.loads(d["labels"])
            out.append(d)
        return out

    def selections(self) -> list[dict[str, Any]]:
        """Table II counts per (model, data set, split): test examples and examples to be attacked."""
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT model, dataset, split, COUNT(*) AS test_examples, "
                "SUM(CASE WHEN correct = 1 AND positives >= 2 THEN 1 ELSE 0 END) AS to_attack "
                "FROM selection GROUP BY model_id, data_id ORDER BY model, dataset").fetchall()
        return [dict(r) for r in rows]
