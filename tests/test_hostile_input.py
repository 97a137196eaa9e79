"""Hostile and broken input, second audit (issue 23): each case gets one line naming the problem and
what to do (CLI: exit code 2; API: an mlalp error), checked before the work starts, nothing lost."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mlalp_core.cli import main as cli_main
from mlalp_core.data import voc
from mlalp_core.errors import DataError, InvalidInputError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _plain(monkeypatch, tmp_path):
    for k in list(os.environ):
        if k.startswith("MLALP_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("MLALP_DEVICE", "cpu")
    monkeypatch.setenv("MLALP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli_main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc: int, err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------------------------------------
# 1. XML: DOCTYPE and entities refused in every encoding, none expanded
# ---------------------------------------------------------------------------------------------

ENCODINGS = {  # name -> (codec, byte order mark written in front)
    "utf-8": ("utf-8", b""),
    "utf-8-bom": ("utf-8", b"\xef\xbb\xbf"),
    "utf-16-le": ("utf-16-le", b""),
    "utf-16-le-bom": ("utf-16-le", b"\xff\xfe"),
    "utf-16-be": ("utf-16-be", b""),
    "utf-16-be-bom": ("utf-16-be", b"\xfe\xff"),
    "utf-32-le": ("utf-32-le", b""),
    "utf-32-le-bom": ("utf-32-le", b"\xff\xfe\x00\x00"),
    "utf-32-be": ("utf-32-be", b""),
    "utf-32-be-bom": ("utf-32-be", b"\x00\x00\xfe\xff"),
}
DECLARED = {"utf-8": "UTF-8", "utf-16-le": "UTF-16", "utf-16-be": "UTF-16", "utf-32-le": "UTF-32",
            "utf-32-be": "UTF-32"}


def hostile_annotation(kind: str, entity: str, label: str, secret_file: Path, doctype_case: str) -> str:
    """A VOC annotation whose label comes from an entity (or that only declares a DOCTYPE)."""
    doctype = {"upper": "DOCTYPE", "lower": "doctype", "mixed": "DocType"}[doctype_case]
    body = (f"<annotation><object><name>&{entity};</name><difficult>0</difficult></object></annotation>"
            if kind != "doctype-only" else
            f"<annotation><object><name>{label}</name><difficult>0</difficult></object></annotation>")
    decl = {
        "doctype-only": "",
        "internal": f'<!ENTITY {entity} "{label}">',
        "external": f'<!ENTITY {entity} SYSTEM "{secret_file.as_uri()}">',
        "parameter": f'<!ENTITY % p{entity} "<!ENTITY {entity} \'{label}\'>"> %p{entity};',
        "laughs": f'<!ENTITY l0 "{label}"><!ENTITY l1 "&l0;&l0;&l0;&l0;&l0;&l0;&l0;&l0;&l0;&l0;">'
                  f'<!ENTITY {entity} "&l1;&l1;&l1;&l1;&l1;&l1;&l1;&l1;&l1;&l1;">',
    }[kind]
    return f"<!{doctype} annotation [{decl}]>\n{body}"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(encoding=st.sampled_from(sorted(ENCODINGS)),
       kind=st.sampled_from(["doctype-only", "internal", "external", "parameter", "laughs"]),
       entity=st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True).filter(lambda e: e not in ("l0", "l1")),
       label=st.sampled_from(voc.VOC_CLASSES), prolog=st.booleans(),
       doctype_case=st.sampled_from(["upper", "lower", "mixed"]))
def test_declarations_are_refused_in_every_encoding_and_never_expanded(tmp_path, encoding, kind, entity, label,
                                                                       prolog, doctype_case):
    codec, bom = ENCODINGS[encoding]
    secret = tmp_path / "secret.txt"
    secret.write_text(label)
    text = hostile_annotation(kind, entity, label, secret, doctype_case)
    if prolog:
        text = f'<?xml version="1.0" encoding="{DECLARED[codec]}"?>\n' + text
    raw = bom + text.encode(codec)
    path = tmp_path / "a.xml"
    path.write_bytes(raw)
    # the whole reader: refused with one line, nothing parsed
    with pytest.raises(DataError) as info:
        voc.parse_annotation(path)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and ("DOCTYPE/ENTITY" in msg or "malformed XML" in msg)
    if codec.startswith(("utf-8", "utf-16")) and doctype_case == "upper":
        assert "DOCTYPE/ENTITY" in msg
    # each line of defence alone refuses it: the byte scan ...
    with pytest.raises(DataError, match="DOCTYPE/ENTITY"):
        voc._refuse_declarations(raw, path)
    # ... and the parser, which never returns a tree with the entity expanded
    with pytest.raises(DataError) as info:
        voc._parse_xml(raw, path)
    if codec.startswith(("utf-8", "utf-16")) and doctype_case == "upper":  # expat reads these encodings
        assert "DOCTYPE/ENTITY" in str(info.value)


def test_a_utf16_annotation_with_an_entity_label_is_refused(tmp_path):
    from test_voc import make_voc

    root = make_voc(tmp_path / "data")
    xml = root / "VOC2007" / "Annotations" / "000004.xml"
    text = ('<?xml version="1.0" encoding="UTF-16"?>\n<!DOCTYPE annotation [<!ENTITY p "person">]>\n'
            "<annotation><object><name>&p;</name><difficult>0</difficult></object></annotation>")
    xml.write_bytes(text.encode("utf-16"))
    with pytest.raises(DataError, match="DOCTYPE/ENTITY") as info:
        voc.VOCDataset(root, 2007, "val", cache_dir=False)
    assert str(xml) in str(info.value)
    # a plain UTF-16 annotation is still read
    plain = text.replace('<!DOCTYPE annotation [<!ENTITY p "person">]>\n', "").replace("&p;", "person")
    xml.write_bytes(plain.encode("utf-16"))
    ds = voc.VOCDataset(root, 2007, "val", cache_dir=False)
    assert bool(ds.labels()[0, voc.VOC_CLASSES.index("person")])


# ---------------------------------------------------------------------------------------------
# 2. JSON nested too deep
# ---------------------------------------------------------------------------------------------


def test_a_coco_file_nested_200000_deep_is_one_line(capsys, tmp_path, monkeypatch):
    from test_coco_nuswide import make_coco

    root = make_coco(tmp_path / "coco")
    ann = root / "annotations" / "instances_val2014.json"
    ann.write_text("[" * 200_000 + "]" * 200_000)
    monkeypatch.setenv("MLALP_COCO_ROOT", str(root))
    rc, _, err = run_cli(capsys, "eval", "demo-gcn", "--data", "coco2014", "--quiet")
    line = one_line_error(rc, err)
    assert str(ann) in line and "nested too deeply" in line
    cats = tmp_path / "category.json"
    cats.write_text("{" + '"a":{' * 100_000 + "}" * 100_001)
    from mlalp_core.data.coco import read_category_order

    with pytest.raises(DataError, match="nested too deeply"):
        read_category_order(cats)


def test_a_json_manifest_nested_too_deep_is_one_line(capsys, tmp_path):
    manifest = tmp_path / "m.json"
    manifest.write_text("[" * 100_000 + "]" * 100_000)
    rc, _, err = run_cli(capsys, "check-model", "user", "--manifest", str(manifest))
    assert "nested too deeply" in one_line_error(rc, err)


# ---------------------------------------------------------------------------------------------
# 3. A torch.save pickle given as a model file
# ---------------------------------------------------------------------------------------------


def _manifest(folder: Path, file: str, fmt: str | None, labels=("a", "b")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = (f'name = "net"\nfile = "{file}"\nlabels = {json.dumps(list(labels))}\ninput_size = [16, 16]\n'
            'normalization = "none"\n' + (f'format = "{fmt}"\n' if fmt else ""))
    (folder / "m.toml").write_text(text)
    return folder / "m.toml"


@pytest.mark.parametrize("fmt", ["export", "torchscript", None])
@pytest.mark.parametrize("what", ["module", "state_dict", "legacy"])
def test_a_torch_save_pickle_as_a_model_file_is_one_line_and_never_unpickled(capsys, tmp_path, fmt, what):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 2))
    obj = net if what == "module" else net.state_dict()
    (tmp_path / "m").mkdir()
    torch.save(obj, tmp_path / "m" / "net.pt", _use_new_zipfile_serialization=what != "legacy")
    manifest = _manifest(tmp_path / "m", "net.pt", fmt)
    rc, _, err = run_cli(capsys, "check-model", "user", "--manifest", str(manifest))
    line = one_line_error(rc, err)
    assert "torch.save" in line and "pickle" in line and "torch.jit.save" in line


# ---------------------------------------------------------------------------------------------
# 4. Outputs that cannot be written are refused before the work
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["bench", "--models", "demo-gcn", "--attacks", "mla-lp", "--n", "1", "--quiet", "--out", "/proc/self"],
    ["report", "--out", "/proc/version"],
    ["eval", "demo-gcn", "--data", "demo", "--limit", "1", "--quiet", "--json", "/proc/x"],
    ["attack", "scene_005", "--out", "/proc"],
    ["attack", "scene_005", "--figures", "/proc/self"],
])
def test_an_output_under_proc_is_refused_before_the_work(capsys, tmp_path, argv):
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc on this system")
    if argv[0] == "report":
        _small_store(capsys, tmp_path / "results" / "mlalp.sqlite")
    rc, out, err = run_cli(capsys, *argv)
    line = one_line_error(rc, err)
    assert "/proc" in line and "cannot write" in line
    assert not (tmp_path / "results" / "mlalp.sqlite").exists() or argv[0] == "report"
    assert "reached the target" not in out


def _small_store(capsys, path: Path, n: int = 1) -> None:
    rc, _, err = run_cli(capsys, "bench", "--models", "demo-gcn", "--attacks", "mla-lp", "--n", str(n),
                         "--store", str(path), "--quiet", "--set", "mla-lp.max_iterations=2")
    assert rc == 0, err


# ---------------------------------------------------------------------------------------------
# 5. mlalp report --out does not replace a file mlalp did not write
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["md", "csv", "latex"])
def test_report_out_keeps_an_unrelated_file_unless_forced(capsys, tmp_path, fmt):
    store = tmp_path / "s.sqlite"
    _small_store(capsys, store)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes of three weeks\n")
    rc, _, err = run_cli(capsys, "report", "--store", str(store), "--format", fmt, "--out", str(notes))
    line = one_line_error(rc, err)
    assert str(notes) in line and "--force" in line
    assert notes.read_text() == "my notes of three weeks\n"
    # mlalp's own report is replaced (a re-run), and --force replaces anything
    out = tmp_path / f"t.{fmt}"
    for _ in range(2):
        rc, _, err = run_cli(capsys, "report", "--store", str(store), "--format", fmt, "--out", str(out))
        assert rc == 0, err
    rc, _, err = run_cli(capsys, "report", "--store", str(store), "--format", fmt, "--out", str(notes), "--force")
    assert rc == 0, err
    assert notes.read_text() == out.read_text()


def test_eval_json_keeps_an_unrelated_file_unless_forced(capsys, tmp_path):
    other = tmp_path / "config.json"
    other.write_text('{"lr": 0.1}')
    rc, _, err = run_cli(capsys, "eval", "demo-gcn", "--data", "demo", "--limit", "2", "--quiet", "--json", str(other))
    assert "--force" in one_line_error(rc, err) and other.read_text() == '{"lr": 0.1}'
    rc, _, err = run_cli(capsys, "eval", "demo-gcn", "--data", "demo", "--limit", "2", "--quiet", "--json",
                         str(tmp_path / "q.json"))
    assert rc == 0, err
    rc, _, err = run_cli(capsys, "eval", "demo-gcn", "--data", "demo", "--limit", "2", "--quiet", "--json",
                         str(tmp_path / "q.json"))
    assert rc == 0, err


# ---------------------------------------------------------------------------------------------
# 6. Stores: unreadable, not a regular file, and none left behind by a refused run
# ---------------------------------------------------------------------------------------------


def _without_root_powers() -> list[str]:
    """A command prefix under which permission bits bind this process (root ignores them)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("root without setpriv: permission bits cannot be made to bind")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}"]


def test_an_unreadable_store_is_called_unreadable(capsys, tmp_path):
    store = tmp_path / "s.sqlite"
    _small_store(capsys, store)
    store.chmod(0)
    try:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for argv in (["report"], ["bench", "--models", "demo-gcn", "--attacks", "mla-lp", "--n", "1", "--quiet"]):
            proc = subprocess.run([*_without_root_powers(), sys.executable, "-m", "mlalp_core.cli", *argv,
                                   "--store", str(store)], capture_output=True, text=True, env=env, cwd=tmp_path,
                                  timeout=300)
            line = one_line_error(proc.returncode, proc.stderr)
            assert str(store) in line and "cannot be read" in line and "write permission" not in line
    finally:
        store.chmod(0o644)


@pytest.mark.parametrize("argv", [["report"], ["bench", "--models", "demo-gcn", "--attacks", "mla-lp", "--n", "1",
                                               "--quiet"]])
def test_a_device_as_store_is_not_called_a_folder(capsys, argv):
    rc, _, err = run_cli(capsys, *argv, "--store", "/dev/null")
    line = one_line_error(rc, err)
    assert "/dev/null" in line and "folder" not in line and "not a regular file" in line


def test_a_refused_objective_leaves_no_new_store(capsys, tmp_path):
    store = tmp_path / "new.sqlite"
    rc, _, err = run_cli(capsys, "bench", "--models", "demo-gcn", "--attacks", "ml-rank1", "--objective",
                         "hide-all", "--n", "2", "--store", str(store), "--quiet")
    assert "cannot pursue the objective hide-all" in one_line_error(rc, err)
    assert not any(tmp_path.glob("new.sqlite*"))
    # an existing store is kept as it was
    _small_store(capsys, store)
    before = store.read_bytes()
    rc, _, err = run_cli(capsys, "bench", "--models", "demo-gcn", "--attacks", "ml-rank1", "--objective",
                         "hide-all", "--n", "2", "--store", str(store), "--quiet")
    assert rc == 2 and store.exists()
    from mlalp_core.experiments.store import ResultsStore

    assert len(ResultsStore(store).rows()) == 1 and len(before) > 0


# ---------------------------------------------------------------------------------------------
# 7-10. Settings and environment, checked at start
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("var, value", [("MLALP_LP_BATCH", "2"), ("MLALP_LP_BATCH", "yes"),
                                        ("MLALP_LP_THREADS", "two"), ("MLALP_TF32", "maybe")])
@pytest.mark.parametrize("argv", [["attack", "scene_005", "--out", "o"],
                                  ["bench", "--models", "demo-gcn", "--attacks", "ml-deepfool", "mla-lp", "--n", "1",
                                   "--quiet", "--store", "s.sqlite"]])
def test_a_bad_environment_setting_is_refused_before_any_work(capsys, tmp_path, monkeypatch, var, value, argv):
    monkeypatch.setenv(var, value)
    rc, out, err = run_cli(capsys, *argv)
    line = one_line_error(rc, err)
    assert var in line and repr(value) in line
    assert not (tmp_path / "o").exists() and not (tmp_path / "s.sqlite").exists() and "reached" not in out


def test_a_folder_named_mlalp_toml_is_refused(capsys, tmp_path):
    (tmp_path / "mlalp.toml").mkdir()
    rc, _, err = run_cli(capsys, "models")
    line = one_line_error(rc, err)
    assert "mlalp.toml" in line and "folder" in line


def test_more_lp_threads_than_cores_is_said(capsys, monkeypatch):
    monkeypatch.setenv("MLALP_LP_THREADS", "1000")
    rc, _, err = run_cli(capsys, "devices")
    assert rc == 0
    warning = [ln for ln in err.splitlines() if "MLALP_LP_THREADS" in ln]
    assert len(warning) == 1 and "1000" in warning[0] and "cores" in warning[0]
    monkeypatch.setenv("MLALP_LP_THREADS", "1")
    rc, _, err = run_cli(capsys, "devices")
    assert rc == 0 and "MLALP_LP_THREADS" not in err


@pytest.mark.parametrize("command", ["attack", "bench"])
def test_a_setting_given_twice_is_refused(capsys, tmp_path, command):
    argv = (["attack", "scene_005", "--out", "o"] if command == "attack" else
            ["bench", "--models", "demo-gcn", "--attacks", "mla-lp", "--n", "1", "--quiet", "--store", "s.sqlite"])
    rc, _, err = run_cli(capsys, *argv, "--set", "mla-lp.box=true", "--set", "mla-lp.box=false")
    line = one_line_error(rc, err)
    assert "mla-lp.box" in line and "twice" in line
    assert not (tmp_path / "o").exists() and not (tmp_path / "s.sqlite").exists()


# ---------------------------------------------------------------------------------------------
# 11. mlalp models does not call an unchecked or broken model "available"
# ---------------------------------------------------------------------------------------------


class NaNOnRealImages(torch.nn.Module):
    """Finite on a blank image; NaN once the image has more contrast than a blank one."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = x.mean(dim=(2, 3)).repeat(1, 4)[:, :10] - 0.5
        spread = x.flatten(1).std(dim=1, keepdim=True)
        return torch.where(spread > 1e-3, torch.full_like(logits, float("nan")), logits)


def _scripted_user_model(folder: Path, net: torch.nn.Module, name: str = "nanny", output: str = "logits",
                         size: int = 24) -> Path:
    from mlalp_core.data.demo import DEMO_LABELS

    folder.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(net), folder / "net.pt")
    (folder / "m.toml").write_text(f'name = "{name}"\nfile = "net.pt"\nlabels = {json.dumps(list(DEMO_LABELS))}\n'
                                   f'input_size = [{size}, {size}]\nnormalization = "none"\noutput = "{output}"\n')
    return folder / "m.toml"


def test_models_lists_pickles_as_unavailable_and_unchecked_networks_as_unchecked(capsys, tmp_path, monkeypatch):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 2))
    (tmp_path / "p").mkdir()
    torch.save(net, tmp_path / "p" / "net.pt")
    pickled = _manifest(tmp_path / "p", "net.pt", None)
    nan = _scripted_user_model(tmp_path / "n", NaNOnRealImages())
    monkeypatch.setenv("MLALP_USER_MODELS", os.pathsep.join([str(pickled), str(nan)]))
    rc, out, err = run_cli(capsys, "models")
    assert rc == 0, err
    lines = out.splitlines()
    net_line = next(k for k, ln in enumerate(lines) if ln.startswith("net "))
    assert "unavailable" in lines[net_line] and "torch.save" in lines[net_line + 1]
    nanny = next(ln for ln in lines if ln.startswith("nanny "))
    assert "available" not in nanny.replace("unavailable", "") and "not checked" in nanny
    rc, out, err = run_cli(capsys, "models", "--check")
    assert rc == 0, err
    lines = out.splitlines()
    k = next(k for k, ln in enumerate(lines) if ln.startswith("nanny "))
    assert "unavailable" in lines[k] and "not finite" in lines[k + 1] and "scene_" in lines[k + 1]
    assert any(ln.startswith("demo-gcn ") and " available " in ln for ln in lines)


# ---------------------------------------------------------------------------------------------
# 12. Images or a model on a device without data
# ---------------------------------------------------------------------------------------------


def test_images_on_the_meta_device_are_one_line():
    import mlalp_core as ml

    model = ml.load_model("demo-gcn", device="cpu")
    x = torch.empty(1, 3, 96, 96, device="meta")
    target = torch.zeros(1, 10, dtype=torch.bool)
    for name in ("mla-lp", "fgsm"):
        with pytest.raises(InvalidInputError, match="meta") as info:
            ml.make_attack(name, model, device="cpu")(x, target)
        assert "\n" not in str(info.value)
    meta_model = ml.load_model("demo-gcn", device="cpu").to("meta")
    with pytest.raises(InvalidInputError, match="meta"):
        ml.make_attack("fgsm", meta_model, device="cpu")(torch.rand(1, 3, 96, 96), target)


# ---------------------------------------------------------------------------------------------
# 13. A wrapped network that returns NaN on real images, named at attack time
# ---------------------------------------------------------------------------------------------


def test_attacks_name_a_model_whose_output_on_the_image_is_not_finite():
    import mlalp_core as ml
    from mlalp_core.attacks.base import Attack
    from mlalp_core.data.demo import DEMO_LABELS
    from mlalp_core.models.wrap import WrappedModel

    # built without ml.wrap's check (which now refuses it): what an attack meets at run time
    model = WrappedModel(NaNOnRealImages(), DEMO_LABELS, (96, 96), (0, 0, 0), (1, 1, 1), 0.5, "logits", "nanny")
    x = ml.load_dataset("demo").image(3, (96, 96))[None]
    target = torch.zeros(1, 10, dtype=torch.bool)
    for name in ("mla-lp", "fgsm", "ml-deepfool"):
        attack: Attack = ml.make_attack(name, model, device="cpu")
        with pytest.raises(InvalidInputError) as info:
            attack(x, target)
        msg = str(info.value)
        assert "nanny" in msg and "image 0 of the batch" in msg and "not finite" in msg and "\n" not in msg
        with pytest.raises(InvalidInputError, match="example scene_003"):
            attack(x, target, example_ids=["scene_003"])


# ---------------------------------------------------------------------------------------------
# 14. What the image loader did to an image is said
# ---------------------------------------------------------------------------------------------


def _scene(size=(96, 96)) -> np.ndarray:
    import mlalp_core as ml

    return (ml.load_dataset("demo").image(5, size).permute(1, 2, 0).numpy() * 255).round().astype("uint8")


def test_the_image_loader_reports_flattening_frames_and_stretching(tmp_path):
    from mlalp_core.data.images import open_image

    rgba = Image.fromarray(_scene()).convert("RGBA")
    alpha = np.full((96, 96), 255, np.uint8)
    alpha[:, :30] = 0
    rgba.putalpha(Image.fromarray(alpha, "L"))
    rgba.save(tmp_path / "a.png")
    img, notes = open_image(tmp_path / "a.png", size=(96, 96))
    assert img.mode == "RGB" and len(notes) == 1 and "transparent" in notes[0] and "white" in notes[0]
    frames = [Image.fromarray(_scene()), Image.fromarray(255 - _scene())]
    frames[0].save(tmp_path / "g.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    img, notes = open_image(tmp_path / "g.gif", size=(96, 96))
    assert len(notes) == 1 and "2 frames" in notes[0] and "first" in notes[0]
    Image.fromarray(_scene((60, 150))).save(tmp_path / "w.png")
    img, notes = open_image(tmp_path / "w.png", size=(96, 96))
    assert len(notes) == 1 and "150x60" in notes[0] and "96x96" in notes[0] and "stretch" in notes[0]
    Image.fromarray(_scene((150, 150))).save(tmp_path / "s.png")  # same aspect: a plain resize, no note
    assert open_image(tmp_path / "s.png", size=(96, 96))[1] == []
    opaque = Image.fromarray(_scene()).convert("RGBA")  # alpha present but all opaque: nothing changed
    opaque.save(tmp_path / "o.png")
    assert open_image(tmp_path / "o.png", size=(96, 96))[1] == []


def test_mlalp_attack_prints_what_was_done_to_the_image(capsys, tmp_path):
    frames = [Image.fromarray(_scene((60, 150))).convert("RGBA"), Image.fromarray(_scene((60, 150)))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    rc, out, err = run_cli(capsys, "attack", str(tmp_path / "anim.gif"), "--attack", "fgsm", "--out", "o")
    assert rc == 0, err
    notes = [ln for ln in out.splitlines() if ln.startswith("note:")]
    assert any("2 frames" in n for n in notes) and any("stretch" in n for n in notes)
    report = json.loads((tmp_path / "o" / "anim_fgsm_metrics.json").read_text())
    assert report["image_notes"] == [n.removeprefix("note: ") for n in notes]
