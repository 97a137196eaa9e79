"""A newcomer's and a hostile user's first contact: every bad input gets one line (exit code 2 on
the command line, InvalidInputError/ConfigurationError in the API), nothing is silently
reinterpreted, and finished work is kept. Each test here failed on the code before the
trust-on-first-contact issue."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from mlalp_core.cli.main import main as cli_main
from mlalp_core.errors import ConfigurationError, InvalidInputError, MlalpError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _plain(monkeypatch, tmp_path):
    for k in list(os.environ):
        if k.startswith("MLALP_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)  # no mlalp.toml unless a test writes one


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli_main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc: int, err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------------------------------------
# --set goes through the attack's schema
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("item, words", [
    ("mla-lp.lp_tol=abc", ["mla-lp.lp_tol must be a finite number", "'abc'"]),
    ("mla-lp.lp_tol=nan", ["mla-lp.lp_tol", "'nan'"]),
    ("mla-lp.max_iterations=true", ["mla-lp.max_iterations must be an integer", "'true'"]),
    ("mla-lp.box=maybe", ["mla-lp.box must be true or false", "'maybe'"]),
    ("mla-lp.device=tpu", ["mla-lp has no setting 'device'", "known: max_iterations", "--device"]),
    ("ml-cw.learning_rate=-1", ["ml-cw.learning_rate", "'-1'"]),
    ("nope.x=1", ["unknown attack 'nope'"]),
    ("mla-lp", ["ATTACK.SETTING=VALUE"]),
])
def test_bad_set_values_are_refused_before_any_work(capsys, tmp_path, item, words):
    store = tmp_path / "store.sqlite"
    rc, _, err = run_cli(capsys, "bench", "--models", "demo-gcn", "--attacks", "mla-lp", "--n", "1",
                         "--store", str(store), "--quiet", "--set", item)
    line = one_line_error(rc, err)
    for w in words:
        assert w in line
    assert not store.exists()  # refused before the run, not after it


def test_box_false_means_no_box_in_a_real_run(capsys, tmp_path):
    store = tmp_path / "store.sqlite"
    rc, out, err = run_cli(capsys, "bench", "--models", "demo-gcn", "--attacks", "mla-lp", "--n", "1",
                           "--store", str(store), "--quiet", "--set", "mla-lp.box=False",
                           "--set", "mla-lp.max_iterations=3")
    assert rc == 0, err
    from mlalp_core.experiments.store import ResultsStore

    (row,) = ResultsStore(store).rows()
    assert row["settings"]["box"] is False and row["settings"]["max_iterations"] == 3
    from mlalp_core.cli.bench import parse_sets

    for spelling, value in (("False", False), ("no", False), ("0", False), ("TRUE", True), ("Yes", True),
                            ("1", True)):
        assert parse_sets([f"mla-lp.box={spelling}"]) == {"mla-lp": {"box": value}}


def test_the_api_parses_booleans_the_same_way():
    from mlalp_core.attacks import make_attack
    from mlalp_core.models.registry import load_model

    model = load_model("demo-gcn", device="cpu")
    assert make_attack("mla-lp", model, box="False").box is False
    assert make_attack("mla-lp", model, box="yes").box is True
    assert make_attack("mla-lp", model, box=0).box is False
    with pytest.raises(InvalidInputError, match="mla-lp.box must be true or false"):
        make_attack("mla-lp", model, box="False-ish")
    with pytest.raises(InvalidInputError, match="max_iterations must be an integer"):
        make_attack("mla-lp", model, max_iterations=True)
    with pytest.raises(InvalidInputError, match="known: max_iterations"):
        make_attack("mla-lp", model, max_iteration=3)


def test_mlalp_toml_attack_tables_go_through_the_schema(capsys, tmp_path):
    """The settings keep the tables as written; each attack's schema parses its own where they are
    used (the CLI's bench and attack, the app), with one line naming the file and the table."""
    (tmp_path / "mlalp.toml").write_text('[attacks.MLA-LP]\nmax_iterations = 2\nbox = "no"\n')
    from mlalp_core.attacks import file_settings
    from mlalp_core.settings import load_settings

    assert load_settings().attacks == {"MLA-LP": {"max_iterations": 2, "box": "no"}}
    assert file_settings() == {"mla-lp": {"max_iterations": 2, "box": False}}
    (tmp_path / "mlalp.toml").write_text('[attacks.mla-lp]\nlp_tol = 0.0\n')
    message = "mlalp.toml [attacks.mla-lp]: mla-lp.lp_tol must be a finite number in (0, 0.5], got 0.0"
    store = tmp_path / "store.sqlite"
    rc, _, err = run_cli(capsys, "bench", "--models", "demo-gcn", "--attacks", "mla-lp", "--n", "1",
                         "--store", str(store), "--quiet")
    assert message in one_line_error(rc, err)
    assert not store.exists()  # refused before the run
    rc, _, err = run_cli(capsys, "attack", "scene_000", "--out", str(tmp_path / "out"))
    assert message in one_line_error(rc, err)
    (tmp_path / "mlalp.toml").write_text('[attacks.nope]\nx = 1\n')
    rc, _, err = run_cli(capsys, "bench", "--models", "demo-gcn", "--n", "1", "--quiet")
    assert "mlalp.toml: unknown attack 'nope'" in one_line_error(rc, err)


# ---------------------------------------------------------------------------------------------
# Settings files and devices
# ---------------------------------------------------------------------------------------------


def test_non_utf8_mlalp_toml(capsys, tmp_path):
    (tmp_path / "mlalp.toml").write_bytes(b'voc_root = "caf\xe9"\n')
    rc, _, err = run_cli(capsys, "models")
    assert "mlalp.toml: not UTF-8 text" in one_line_error(rc, err)


@pytest.mark.parametrize("value", ["quantum", "tpu", "mps", "cuda:x"])
def test_an_unusable_device_names_the_value_and_its_origin(capsys, monkeypatch, value):
    monkeypatch.setenv("MLALP_DEVICE", value)
    rc, _, err = run_cli(capsys, "devices")
    line = one_line_error(rc, err)
    assert repr(value) in line and "environment variable MLALP_DEVICE" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", [["bench", "--models", "demo-gcn", "--attacks", "mla-lp", "--n", "1", "--quiet"],
                                     ["check-model", "demo-gcn"],
                                     ["eval", "demo-gcn", "--data", "demo", "--limit", "2", "--quiet"]])
def test_the_device_in_mlalp_toml_is_honoured_by_every_command(capsys, tmp_path, command):
    (tmp_path / "mlalp.toml").write_text('device = "cuda"\n')
    rc, _, err = run_cli(capsys, *command)
    line = one_line_error(rc, err)
    assert "device 'cuda' (from " in line and "mlalp.toml (device)) was asked for but no CUDA GPU" in line
    # the order: the command-line flag, then the environment, then the file
    os.environ["MLALP_DEVICE"] = "cpu"
    try:
        from mlalp_core.device import device_choice, resolve_device

        assert device_choice() == ("cpu", "environment variable MLALP_DEVICE")
        assert device_choice("cpu")[1] == "--device or the device argument"
    finally:
        del os.environ["MLALP_DEVICE"]
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ConfigurationError, match="mlalp.toml"):
        resolve_device(None)


# ---------------------------------------------------------------------------------------------
# Models must fit the data
# ---------------------------------------------------------------------------------------------


def _user_model(folder: Path, name: str, labels: list[str], size: int = 96) -> Path:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, len(labels))).eval()
    folder.mkdir(parents=True, exist_ok=True)
    torch.jit.script(net).save(str(folder / f"{name}.pt"))
    manifest = folder / f"{name}.json"
    manifest.write_text(json.dumps({"name": name, "file": f"{name}.pt", "labels": labels,
                                    "input_size": [size, size], "normalization": "none"}))
    return manifest


def test_a_model_with_other_label_names_is_refused_by_bench_eval_and_the_runner(capsys, monkeypatch, tmp_path):
    from mlalp_core.data.demo import DEMO_LABELS

    renamed = list(DEMO_LABELS)
    renamed[3] = "tree"
    same_count = _user_model(tmp_path / "m", "renamed", renamed)
    fewer = _user_model(tmp_path / "m", "fewer", list(DEMO_LABELS)[:7])
    monkeypatch.setenv("MLALP_USER_MODELS", os.pathsep.join([str(same_count), str(fewer)]))
    store = tmp_path / "s.sqlite"
    rc, _, err = run_cli(capsys, "bench", "--models", "renamed", "--attacks", "mla-lp", "--n", "1",
                         "--store", str(store), "--quiet")
    line = one_line_error(rc, err)
    assert f"renamed does not fit demo: 10 vs 10 labels; label 3 is 'tree' in the model and '{DEMO_LABELS[3]}'" in line
    from mlalp_core.experiments.store import ResultsStore

    assert not store.exists() or not ResultsStore(store).rows()
    rc, _, err = run_cli(capsys, "bench", "--models", "fewer", "--attacks", "mla-lp", "--n", "1",
                         "--store", str(store), "--quiet")
    assert "fewer does not fit demo: 7 vs 10 labels; the data set goes on with" in one_line_error(rc, err)
    rc, _, err = run_cli(capsys, "eval", "renamed", "--data", "demo", "--quiet")
    assert "label 3 is 'tree'" in one_line_error(rc, err)
    from mlalp_core.data.registry import load_dataset
    from mlalp_core.experiments.runner import select_examples
    from mlalp_core.models.registry import load_model

    with pytest.raises(ConfigurationError, match="does not fit"):
        select_examples(load_model("renamed", device="cpu"), load_dataset("demo"), model_name="renamed",
                        dataset_name="demo", split="gallery", device="cpu")


# ---------------------------------------------------------------------------------------------
# Output paths, limits, empty batches
# ---------------------------------------------------------------------------------------------


def test_bench_out_on_an_existing_file_is_refused_before_the_run(capsys, tmp_path):
    (tmp_path / "tables").write_text("not a folder")
    store = tmp_path / "s.sqlite"
    rc, _, err = run_cli(capsys, "bench", "--models", "demo-gcn", "--attacks", "mla-lp", "--n", "1",
                         "--store", str(store), "--out", str(tmp_path / "tables"), "--quiet")
    assert "--out" in one_line_error(rc, err) and "is an existing file" in err
    assert not store.exists()


def test_outputs_into_missing_folders_are_created(capsys, tmp_path):
    store = tmp_path / "s.sqlite"
    rc, _, err = run_cli(capsys, "bench", "--models", "demo-gcn", "--attacks", "mla-lp", "--n", "1",
                         "--store", str(store), "--quiet", "--set", "mla-lp.max_iterations=2")
    assert rc == 0, err
    rc, out, err = run_cli(capsys, "report", "--store", str(store), "--out", str(tmp_path / "new" / "t3.md"))
    assert rc == 0, err and (tmp_path / "new" / "t3.md").is_file()
    rc, out, err = run_cli(capsys, "eval", "demo-gcn", "--data", "demo", "--limit", "2", "--quiet",
                           "--json", str(tmp_path / "also" / "new" / "t1.json"))
    assert rc == 0, err
    assert json.loads((tmp_path / "also" / "new" / "t1.json").read_text())["examples"] == 2


@pytest.mark.parametrize("args, words", [
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--limit", "-5"], "--limit must be at least 1"),
    (["--limit", "0"], "--limit must be at least 1"),
])
def test_eval_limits(capsys, args, words):
    rc, _, err = run_cli(capsys, "eval", "demo-gcn", "--data", "demo", "--quiet", *args)
    line = one_line_error(rc, err)
    assert words in line and "holds no example" not in line


def test_an_empty_batch_is_refused_by_every_attack():
    from mlalp_core.attacks import ATTACKS, make_attack
    from mlalp_core.models.registry import load_model

    model = load_model("demo-gcn", device="cpu")
    for name in ATTACKS:
        with pytest.raises(InvalidInputError, match="no image"):
            make_attack(name, model)(torch.zeros(0, 3, 96, 96), torch.zeros(0, 10, dtype=torch.bool))


def test_an_unreadable_jpeg_in_a_voc_folder_is_one_line_naming_it(capsys, monkeypatch, tmp_path):
    from test_voc import make_voc

    from mlalp_core.data.voc import VOC_CLASSES

    root = make_voc(tmp_path / "data")
    (root / "VOC2007" / "JPEGImages" / "000005.jpg").write_bytes(b"\xff\xd8\xff this is no JPEG")
    monkeypatch.setenv("MLALP_VOC_ROOT", str(root))
    monkeypatch.setenv("MLALP_USER_MODELS", str(_user_model(tmp_path / "m", "vocnet", list(VOC_CLASSES), 48)))
    monkeypatch.setenv("MLALP_CACHE_DIR", str(tmp_path / "cache"))
    rc, _, err = run_cli(capsys, "eval", "vocnet", "--data", "voc2007", "--quiet")
    line = one_line_error(rc, err)
    assert "000005.jpg" in line and ("not a readable image" in line or "corrupt" in line)


# ---------------------------------------------------------------------------------------------
# Safe loading: pickles and manifests
# ---------------------------------------------------------------------------------------------


def test_a_refused_pickle_names_the_refused_global(tmp_path):
    import argparse

    import numpy as np

    from mlalp_core.models.checkpoints import safe_torch_load

    torch.save({"best_score": np.float64(0.9), "args": argparse.Namespace(lr=1)}, tmp_path / "c.pth")
    with pytest.raises(MlalpError) as info:
        safe_torch_load(tmp_path / "c.pth", "checkpoint")
    msg = str(info.value)
    assert "argparse.Namespace" in msg and "weights_only=False" not in msg and "\n" not in msg


def test_a_manifest_named_like_a_built_in_is_refused_and_never_hides_it(capsys, monkeypatch, tmp_path):
    from mlalp_core.data.demo import DEMO_LABELS
    from mlalp_core.models.registry import list_models, load_model

    clash = _user_model(tmp_path / "m", "demo-gcn", list(DEMO_LABELS))
    monkeypatch.setenv("MLALP_USER_MODELS", str(clash))
    infos = list_models()
    assert [i.kind for i in infos if i.name == "demo-gcn"] == ["demo"]
    refused = [i for i in infos if i.source == str(clash)]
    assert len(refused) == 1 and not refused[0].available and "is a built-in model's" in refused[0].reason
    assert type(load_model("demo-gcn", device="cpu")).__name__ != "UserModel"
    assert load_model("demo-gcn", device="cpu").registry_name == "demo-gcn"
    rc, _, err = run_cli(capsys, "check-model", "user", "--manifest", str(clash))
    assert "the name 'demo-gcn' is a built-in model's" in one_line_error(rc, err)


@pytest.mark.parametrize("file", ["../outside.pt", "/etc/passwd", "sub/../../outside.pt"])
def test_a_manifest_file_outside_its_folder_is_refused(tmp_path, file):
    from mlalp_core.errors import ModelLoadError
    from mlalp_core.models.user import read_manifest

    manifest = _user_model(tmp_path / "m", "net", ["a", "b"])
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(tmp_path / "outside.pt"))
    spec = json.loads(manifest.read_text())
    spec["file"] = file
    manifest.write_text(json.dumps(spec))
    with pytest.raises(ModelLoadError, match="must be inside the manifest's folder"):
        read_manifest(manifest)


# ---------------------------------------------------------------------------------------------
# The results store: written only when asked to; foreign files untouched; failures one line
# ---------------------------------------------------------------------------------------------


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _small_store(capsys, path: Path, n: int = 2) -> None:
    rc, _, err = run_cli(capsys, "bench", "--models", "demo-gcn", "--attacks", "mla-lp", "--n", str(n),
                         "--batch", "1", "--store", str(path), "--quiet", "--set", "mla-lp.max_iterations=2")
    assert rc == 0, err


def test_report_opens_the_store_read_only(capsys, tmp_path):
    folder = tmp_path / "st"
    folder.mkdir()
    _small_store(capsys, folder / "s.sqlite")
    before = _digest(folder)
    rc, out, err = run_cli(capsys, "report", "--store", str(folder / "s.sqlite"))
    assert rc == 0 and "MLA-LP" in out, err
    assert _digest(folder) == before  # not a byte changed, no -wal/-shm left behind
    rc, _, err = run_cli(capsys, "report", "--store", str(tmp_path / "none.sqlite"))
    assert "no results store at" in one_line_error(rc, err) and not (tmp_path / "none.sqlite").exists()


@contextmanager
def _read_only_folder(folder: Path):
    """``folder`` made read-only for this process: a read-only tmpfs mount as root (permission
    bits do not bind root), or permission bits otherwise; yields a callable that makes it so."""
    folder.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "mlalp-test", str(folder)],
                          capture_output=True).returncode != 0:
            pytest.skip("running as root without the right to mount a read-only file system")
        try:
            yield lambda: subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        finally:
            subprocess.run(["umount", str(folder)], capture_output=True)
    else:
        def lock() -> None:
            for p in folder.iterdir():
                p.chmod(0o444)
            folder.chmod(0o555)
        try:
            yield lock
        finally:
            folder.chmod(0o755)


def test_report_on_a_read_only_store(capsys, tmp_path):
    """A store on a read-only file system (or without write permission) can be reported."""
    with _read_only_folder(tmp_path / "ro") as lock:
        _small_store(capsys, tmp_path / "ro" / "s.sqlite")
        lock()
        with pytest.raises(OSError):
            (tmp_path / "ro" / "probe").write_text("x")
        rc, out, err = run_cli(capsys, "report", "--store", str(tmp_path / "ro" / "s.sqlite"))
        assert rc == 0 and "MLA-LP" in out, err
        rc, _, err = run_cli(capsys, "bench", "--models", "demo-gcn", "--attacks", "mla-lp", "--n", "3",
                             "--store", str(tmp_path / "ro" / "s.sqlite"), "--quiet")
        line = one_line_error(rc, err)
        assert "s.sqlite" in line and ("read-only" in line or "readonly" in line)


def test_a_foreign_sqlite_file_is_refused_untouched(capsys, tmp_path):
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
        conn.execute("INSERT INTO users VALUES ('ada')")
    conn.close()
    before = _digest(tmp_path)
    for argv in (["bench", "--models", "demo-gcn", "--attacks", "mla-lp", "--n", "1", "--quiet"], ["report"]):
        rc, _, err = run_cli(capsys, *argv, "--store", str(other))
        assert "not an mlalp results store (tables: users)" in one_line_error(rc, err)
    assert _digest(tmp_path) == before


def test_a_store_from_a_newer_mlalp_is_refused_untouched(capsys, tmp_path):
    path = tmp_path / "s.sqlite"
    _small_store(capsys, path, 1)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    conn.close()
    before = _digest(tmp_path)
    rc, _, err = run_cli(capsys, "bench", "--models", "demo-gcn", "--attacks", "mla-lp", "--n", "1",
                         "--store", str(path), "--quiet")
    assert "written by a newer mlalp (store schema 99" in one_line_error(rc, err)
    assert _digest(tmp_path) == before


def test_a_corrupt_store_is_one_line(capsys, tmp_path):
    path = tmp_path / "s.sqlite"
    _small_store(capsys, path, 2)
    data = bytearray(path.read_bytes())
    assert len(data) > 3 * 4096
    data[2 * 4096:3 * 4096] = b"\x5a" * 4096  # a page in the middle
    path.write_bytes(bytes(data))
    rc, _, err = run_cli(capsys, "report", "--store", str(path))
    line = one_line_error(rc, err)
    assert str(path) in line and ("malformed" in line or "not a database" in line)


def test_a_full_disk_stops_the_run_with_one_line_and_keeps_finished_examples(capsys, tmp_path):
    """The store may grow by only a few kB: the run stops at the first example that does not
    fit, with one line and exit code 2, and the examples finished before are intact."""
    path = tmp_path / "s.sqlite"
    _small_store(capsys, path, 2)
    size = path.stat().st_size + sum(p.stat().st_size for p in tmp_path.glob("s.sqlite-*"))
    limit = size + 8 * 1024
    code = ("import resource, signal, sys\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
            "from mlalp_core.cli.main import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-c", code, "bench", "--models", "demo-gcn", "--attacks", "mla-lp",
                           "--n", "12", "--batch", "1", "--store", str(path), "--quiet",
                           "--set", "mla-lp.max_iterations=2"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("note: ")]  # the estimate
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert str(path) in lines[0] and ("full" in lines[0] or "I/O" in lines[0])
    from mlalp_core.experiments.store import ResultsStore

    rows = ResultsStore(path).rows()
    assert 2 <= len(rows) < 12  # the first two, maybe a few more, and no half-written one
    with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
