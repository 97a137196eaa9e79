"""Settings precedence, and the model and data registries (configured and not)."""

from __future__ import annotations

import json
import os
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from mlalp_core.cli.main import main as cli_main
from mlalp_core.data.registry import list_datasets, load_dataset
from mlalp_core.data.voc import VOC_CLASSES
from mlalp_core.errors import ConfigurationError, DataError
from mlalp_core.models.registry import list_models, load_model
from mlalp_core.settings import SETTING_NAMES, Settings, load_settings

try:
    from test_voc import make_voc
except ImportError:
    from tests.test_voc import make_voc

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No MLALP_* variable of the developer's shell, no mlalp.toml of the current directory."""
    for key in list(os.environ):
        if key.startswith("MLALP_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_defaults(tmp_path: Path) -> None:
    s = load_settings()
    assert s.voc_root is None and s.mlgcn_checkpoint is None and s.user_models == ()
    assert s.results == tmp_path / "results" / "mlalp.sqlite" and s.device == "auto"
    assert s.config_file is None and set(s.sources.values()) == {"default"}
    assert set(SETTING_NAMES) >= {"voc_root", "mlgcn_checkpoint", "mlgcn_word_vectors", "mlgcn_adjacency",
                                  "mlliw_checkpoint", "user_models", "results", "cache_dir", "device"}


def test_precedence_env_over_toml_over_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "mlalp.toml").write_text(
        'voc_root = "voc"\n'
        'mlgcn_checkpoint = "/abs/ckpt.pth.tar"\n'
        'device = "cpu"\n'
        'user_models = ["a.toml", "/x/b.json"]\n'
    )
    monkeypatch.chdir(tmp_path / "conf")
    s = load_settings()
    assert s.config_file == tmp_path / "conf" / "mlalp.toml"
    assert s.voc_root == tmp_path / "conf" / "voc"  # relative to the file
    assert s.mlgcn_checkpoint == Path("/abs/ckpt.pth.tar") and s.device == "cpu"
    assert s.user_models == (tmp_path / "conf" / "a.toml", Path("/x/b.json"))
    assert s.sources["voc_root"] == "file" and s.sources["results"] == "default"

    monkeypatch.setenv("MLALP_VOC_ROOT", "/data/VOCdevkit")
    monkeypatch.setenv("MLALP_DEVICE", "cuda:1")
    monkeypatch.setenv("MLALP_USER_MODELS", os.pathsep.join(["/m/one.toml", "two.toml"]))
    monkeypatch.setenv("MLALP_RESULTS", "out/r.sqlite")
    s = load_settings()
    assert s.voc_root == Path("/data/VOCdevkit") and s.device == "cuda:1"
    assert s.user_models == (Path("/m/one.toml"), tmp_path / "conf" / "two.toml")
    assert s.results == tmp_path / "conf" / "out" / "r.sqlite"
    assert s.mlgcn_checkpoint == Path("/abs/ckpt.pth.tar")  # still from the file
    assert s.sources["voc_root"] == "env" and s.sources["mlgcn_checkpoint"] == "file"

    s = load_settings({"voc_root": "/sidebar/voc", "device": None, "mlgcn_checkpoint": ""})
    assert s.voc_root == Path("/sidebar/voc") and s.sources["voc_root"] == "override"
    assert s.device == "cuda:1"  # None = no override
    assert s.mlgcn_checkpoint is None  # "" clears
    assert isinstance(s, Settings)
    with pytest.raises(Exception):
        s.voc_root = None  # frozen


def test_mlalp_config_and_bad_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "elsewhere.toml"
    cfg.write_text('mlliw_checkpoint = "liw.pth"\n')
    monkeypatch.setenv("MLALP_CONFIG", str(cfg))
    assert load_settings().mlliw_checkpoint == tmp_path / "liw.pth"
    cfg.write_text('mlliw_checkpont = "typo"\n')
    with pytest.raises(ConfigurationError, match="unknown setting\\(s\\) mlliw_checkpont"):
        load_settings()
    cfg.write_text("voc_root = [1, 2\n")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        load_settings()
    cfg.write_text("voc_root = 3\n")
    with pytest.raises(ConfigurationError, match="voc_root must be a path string"):
        load_settings()
    monkeypatch.setenv("MLALP_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigurationError, match="not a file"):
        load_settings()
    monkeypatch.delenv("MLALP_CONFIG")
    with pytest.raises(ConfigurationError, match="unknown setting 'colour'"):
        load_settings({"colour": "red"})


# ---------------------------------------------------------------------------------------------
# Model registry
# ---------------------------------------------------------------------------------------------


def test_unconfigured_paper_models_are_listed_with_reasons() -> None:
    infos = {i.name: i for i in list_models(load_settings())}
    assert {"demo-gcn", "demo-liw", "ml-gcn", "ml-liw"} <= set(infos)
    gcn, liw = infos["ml-gcn"], infos["ml-liw"]
    assert not gcn.available and not liw.available
    assert gcn.reason == ("ml-gcn: set MLALP_MLGCN_CHECKPOINT (voc_checkpoint.pth.tar) and set "
                          "MLALP_MLGCN_WORD_VECTORS (voc_glove_word2vec.pkl)")
    assert liw.reason.startswith("ml-liw: set MLALP_MLLIW_CHECKPOINT")
    assert gcn.input_size == (448, 448) and liw.input_size == (299, 299)
    # ML-GCN's label count (VOC's 20 or COCO's 80) is read from its checkpoint, so unknown until then.
    assert gcn.num_labels is None and "20" in gcn.description and "80" in gcn.description
    with pytest.raises(ConfigurationError) as err:
        load_model("ml-gcn", device="cpu")
    assert str(err.value) == gcn.reason
    with pytest.raises(ConfigurationError, match="unknown model 'nope'"):
        load_model("nope", device="cpu")


def test_missing_files_are_reasons_not_crashes(tmp_path: Path) -> None:
    s = load_settings({"mlgcn_checkpoint": str(tmp_path / "a.pth"), "mlgcn_word_vectors": str(tmp_path / "w.pkl"),
                       "mlliw_checkpoint": str(tmp_path / "l.pth"), "user_models": [str(tmp_path / "u.toml")]})
    infos = {i.name: i for i in list_models(s)}
    assert "MLALP_MLGCN_CHECKPOINT names" in infos["ml-gcn"].reason and "does not exist" in infos["ml-gcn"].reason
    assert "MLALP_MLLIW_CHECKPOINT names" in infos["ml-liw"].reason
    assert not infos["u"].available and "no such manifest" in infos["u"].reason


def test_cli_models_lists_availability(capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["models"]) == 0
    out = capsys.readouterr().out
    assert "ml-gcn" in out and "unavailable" in out and "-> ml-gcn: set MLALP_MLGCN_CHECKPOINT" in out
    assert cli_main(["check-model", "ml-liw"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "set MLALP_MLLIW_CHECKPOINT" in err


def _scripted_voc_model(tmp_path: Path, name: str = "mine") -> Path:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 20)).eval()
    torch.jit.script(net).save(str(tmp_path / f"{name}.pt"))
    (tmp_path / f"{name}.json").write_text(json.dumps({
        "name": name, "file": f"{name}.pt", "labels": list(VOC_CLASSES), "input_size": [48, 48],
        "normalization": "none", "description": "a VOC-labelled test network"}))
    return tmp_path / f"{name}.json"


def test_user_models_through_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = _scripted_voc_model(tmp_path)
    clash = tmp_path / "clash.json"
    clash.write_text(good.read_text().replace('"mine"', '"ml-gcn"'))
    broken = tmp_path / "broken.toml"
    broken.write_text("name = ")
    monkeypatch.setenv("MLALP_USER_MODELS", os.pathsep.join(map(str, [good, clash, broken])))
    infos = {i.name: i for i in list_models()}
    assert infos["mine"].available and infos["mine"].kind == "user" and infos["mine"].input_size == (48, 48)
    assert infos["mine"].description == "a VOC-labelled test network"
    assert not infos["broken"].available and "not valid TOML" in infos["broken"].reason
    clash_entries = [i for i in list_models() if i.source == str(clash)]
    assert len(clash_entries) == 1 and "is a built-in model's" in clash_entries[0].reason
    assert infos["ml-gcn"].kind == "paper"  # the built-in is not hidden by the clash
    model = load_model("mine", device="cpu")
    assert model.label_names == VOC_CLASSES and not model.training and model.registry_name == "mine"


# ---------------------------------------------------------------------------------------------
# Data registry, and eval on VOC through both registries
# ---------------------------------------------------------------------------------------------


def test_unconfigured_and_misconfigured_voc(tmp_path: Path) -> None:
    infos = {i.name: i for i in list_datasets(load_settings())}
    assert infos["voc2007"].reason == "voc2007: set MLALP_VOC_ROOT (the VOCdevkit folder)"
    assert infos["demo-test"].available
    with pytest.raises(ConfigurationError, match="set MLALP_VOC_ROOT"):
        load_dataset("voc2012")
    (tmp_path / "notvoc").mkdir()
    s = load_settings({"voc_root": str(tmp_path / "notvoc")})
    infos = {i.name: i for i in list_datasets(s)}
    assert not infos["voc2007"].available and "is not a VOCdevkit folder" in infos["voc2007"].reason


def test_voc_data_sets_by_name(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "d", years=(2007, 2012))
    s = load_settings({"voc_root": str(root), "cache_dir": str(tmp_path / "cache")})
    infos = {i.name: i for i in list_datasets(s)}
    assert infos["voc2007"].available and infos["voc2012"].available
    test = load_dataset("voc2007", settings=s)
    assert test.name == "voc2007-test" and len(test) == 3
    with pytest.raises(DataError, match=r"trainval\.txt: missing split file"):
        load_dataset("voc2007", "trainval", settings=s)
    fit, select = load_dataset("voc2012", "train80", settings=s), load_dataset("voc2012", "train20", settings=s)
    assert (len(fit), len(select)) == (4, 1) and not set(fit.ids()) & set(select.ids())
    assert load_dataset("voc2012", settings=s).name == "voc2012-val"
    with pytest.raises(ConfigurationError, match="voc2012 has no split 'test'"):
        load_dataset("voc2012", "test", settings=s)
    ign = load_dataset("voc2007", "train", settings=s, difficult="ignore")
    assert (~ign.valid()).sum() == 2
    assert list((tmp_path / "cache").rglob("*.npz"))


def test_eval_cli_prints_table_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    root = make_voc(tmp_path / "d")
    monkeypatch.setenv("MLALP_VOC_ROOT", str(root))
    monkeypatch.setenv("MLALP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MLALP_USER_MODELS", str(_scripted_voc_model(tmp_path)))
    out_json = tmp_path / "t1.json"
    rc = cli_main(["eval", "mine", "--data", "voc2007", "--quiet", "--batch-size", "2", "--device", "cpu",
                   "--json", str(out_json)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "Table I: mine on voc2007-test (3 images" in out
    for title in ("hamming loss", "ranking loss", "micro-F1", "macro-F1", "average precision"):
        assert title in out
    # the printed numbers are classification_report of the model's outputs on those images
    from mlalp_core.data.base import stack_images
    from mlalp_core.training.quality import classification_report

    model = load_model("mine", device="cpu")
    ds = load_dataset("voc2007")
    with torch.no_grad():
        probs = model.probabilities(stack_images(ds, [0, 1, 2], (48, 48)))
    expect = classification_report(probs, ds.labels())
    got = json.loads(out_json.read_text())
    for key in ("hamming_loss", "ranking_loss", "micro_f1", "macro_f1", "average_precision"):
        assert got[key] == pytest.approx(expect[key], abs=1e-6)
        assert f"{expect[key]:.4f}" in out
    # a model whose labels are not VOC's is refused with a reason
    other = _scripted_voc_model(tmp_path, "other")
    spec = json.loads(other.read_text())
    spec["labels"] = [f"l{i}" for i in range(20)]
    other.write_text(json.dumps(spec))
    monkeypatch.setenv("MLALP_USER_MODELS", str(other))
    rc = cli_main(["eval", "other", "--data", "voc2007", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "other does not fit voc2007" in err and "label 0 is 'l0' in the model and 'aeroplane'" in err


def test_paper_models_through_the_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ml-liw from an authors'-layout file and ml-gcn from the official layout, by name."""
    from mlalp_core.models import ml_gcn, ml_liw

    torch.manual_seed(0)
    liw = ml_liw.MLLIW().eval()
    torch.save(ml_liw.authors_state_dict(liw), tmp_path / "liw.pth", _use_new_zipfile_serialization=False)
    wv = np.random.default_rng(0).standard_normal((20, 300)).astype(np.float32)
    with open(tmp_path / "wv.pkl", "wb") as fh:
        pickle.dump(wv, fh)
    gcn = ml_gcn.MLGCN(wv, np.eye(20, dtype=np.float32)).eval()
    state = OrderedDict((k, v) for k, v in gcn.state_dict().items() if not k.endswith("num_batches_tracked"))
    torch.save({"epoch": 1, "arch": "resnet101", "state_dict": state, "best_score": np.float64(1.0)},
               tmp_path / "gcn.pth.tar", _use_new_zipfile_serialization=False)
    monkeypatch.setenv("MLALP_MLLIW_CHECKPOINT", str(tmp_path / "liw.pth"))
    monkeypatch.setenv("MLALP_MLGCN_CHECKPOINT", str(tmp_path / "gcn.pth.tar"))
    monkeypatch.setenv("MLALP_MLGCN_WORD_VECTORS", str(tmp_path / "wv.pkl"))
    infos = {i.name: i for i in list_models()}
    assert infos["ml-liw"].available and infos["ml-gcn"].available
    x = torch.rand(1, 3, 80, 80)
    for name, ref in (("ml-liw", liw), ("ml-gcn", gcn)):
        model = load_model(name, device="cpu")
        assert not model.training and model.registry_name == name
        with torch.no_grad():
            assert torch.equal(model(x), ref(x))


def test_a_setting_is_used_only_where_its_schema_says_and_a_run_records_only_those():
    from mlalp_core.attacks import attack_class
    from mlalp_core.attacks.schema import Schema, Setting

    schema = attack_class("mla-lp").schema
    polish = {"polish_factor", "polish_steps", "polish_step", "polish_rounds"}
    assert schema.unused(schema.defaults()) == polish  # the paper's MLA-LP has no polish
    assert schema.unused({**schema.defaults(), "polish": "scale"}) == polish - {"polish_steps"}
    assert schema.unused({**schema.defaults(), "polish": "pgd"}) == set()
    pgd = attack_class("pgd").schema
    assert pgd.unused(pgd.defaults()) == {"margin", "max_eps", "budget_steps"}
    assert pgd.unused({**pgd.defaults(), "random_start": False, "loss": "margin"}) == {
        "restarts", "seed", "max_eps", "budget_steps"}
    assert pgd.setting("seed").used_note() == "used only when random_start is true"
    # a declaration that names no setting, or a value that setting does not take, is refused at import
    base = Setting("loss", str, "bce", "the loss", choices=("bce", "margin"))
    with pytest.raises(ValueError, match="used_when"):
        Schema("x", (base, Setting("k", float, 0.0, "kappa", used_when=("lost", ("margin",)))))
    with pytest.raises(ValueError, match="used_when"):
        Schema("x", (base, Setting("k", float, 0.0, "kappa", used_when=("loss", ("hinge",)))))


def test_the_cli_warns_about_a_setting_that_has_no_effect(tmp_path, capsys):
    from mlalp_core.cli.main import main

    code = main(["attack", "scene_009", "--model", "demo-gcn", "--attack", "fgsm", "--set", "fgsm.margin=2",
                 "--set", "fgsm.loss=bce", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "mlalp attack: warning: fgsm.margin has no effect here: it is used only when loss is margin" in err
    code = main(["attack", "scene_009", "--model", "demo-gcn", "--attack", "fgsm", "--set", "fgsm.margin=2",
                 "--set", "fgsm.loss=margin", "--out", str(tmp_path / "b")])
    assert code == 0 and "no effect" not in capsys.readouterr().err
