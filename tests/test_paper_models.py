"""ML-GCN and ML-LIW: the published file formats, safe loading, check-model, training, eval.

Random weights throughout; full-size forwards (448 / 299) only where the contract is about the
full size (check-model); everything else at reduced resolution (both trunks are convolutional).
"""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from mlalp_core.attacks.jacobian import batched_jacobian
from mlalp_core.attacks.losses import per_label_bce
from mlalp_core.cli.main import main as cli_main
from mlalp_core.data.voc import VOC_CLASSES
from mlalp_core.errors import ConfigurationError, ModelLoadError
from mlalp_core.models import checkpoints, ml_gcn, ml_liw
from mlalp_core.models.gcn import cooccurrence_adjacency
from mlalp_core.training.evaluation import check_model
from mlalp_core.training.paper import TrainConfig, calibrate_batchnorm, train_ml_gcn, train_ml_liw

try:
    from test_voc import make_voc
except ImportError:  # tests run as a package
    from tests.test_voc import make_voc


# ---------------------------------------------------------------------------------------------
# Files in the official layouts
# ---------------------------------------------------------------------------------------------


def _counts(seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    adj = rng.integers(0, 60, (20, 20)).astype(np.int64)
    np.fill_diagonal(adj, 0)
    return {"adj": adj, "nums": rng.integers(60, 120, 20).astype(np.int64)}


@pytest.fixture(scope="module")
def official(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A random ML-GCN written as voc_checkpoint.pth.tar / voc_glove_word2vec.pkl / voc_adj.pkl."""
    d = tmp_path_factory.mktemp("mlgcn")
    wv = np.random.default_rng(0).standard_normal((20, 300)).astype(np.float32)
    counts = _counts()
    with open(d / "voc_glove_word2vec.pkl", "wb") as fh:
        pickle.dump(wv, fh)  # as ML-GCN's file: a bare float32 array
    with open(d / "voc_adj.pkl", "wb") as fh:
        pickle.dump(counts, fh, protocol=2)
    torch.manual_seed(0)
    model = ml_gcn.MLGCN(wv, cooccurrence_adjacency(counts["adj"], counts["nums"])).eval()
    # PyTorch 0.3 layout: no num_batches_tracked, numpy scalars, legacy (non-zip) serialization
    state = OrderedDict((k, v) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked"))
    ckpt = {"epoch": np.int64(20), "arch": "resnet101", "state_dict": state, "best_score": np.float64(93.95)}
    torch.save(ckpt, d / "voc_checkpoint.pth.tar", _use_new_zipfile_serialization=False)
    return {"dir": d, "model": model, "ckpt": d / "voc_checkpoint.pth.tar", "wv": d / "voc_glove_word2vec.pkl",
            "adj": d / "voc_adj.pkl", "word_vectors": wv}


def test_official_mlgcn_checkpoint_loads_strictly_and_identically(official: dict) -> None:
    loaded = ml_gcn.load_ml_gcn(official["ckpt"], official["wv"], official["adj"])
    ref = official["model"]
    assert loaded.checkpoint_info == {"epoch": 20, "arch": "resnet101", "best_score": 93.95}
    assert loaded.adjacency_matches is True
    assert not loaded.training and loaded.input_size == (448, 448) and loaded.label_names == VOC_CLASSES
    assert [k for k in loaded.state_dict() if k.startswith("features.")][0].startswith("features.0.")
    assert "features.7.2.bn3.weight" in loaded.state_dict()
    for (k, a), (k2, b) in zip(ref.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ref(x), loaded(x))


def test_mlgcn_check_model_cli_full_size(official: dict, capsys: pytest.CaptureFixture) -> None:
    rc = cli_main(["check-model", "ml-gcn", "--checkpoint", str(official["ckpt"]), "--word-vectors",
                   str(official["wv"]), "--adjacency", str(official["adj"]), "--device", "cpu"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "ml-gcn: OK" in out and "448x448" in out and "aeroplane" in out and "tvmonitor" in out
    n_params = sum(p.numel() for p in official["model"].parameters())
    assert f"{n_params:,}" in out
    assert "best_score 93.95" in out and "reproduces the checkpoint's graph A" in out


def test_check_model_cli_bad_files_give_one_line(official: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "voc_glove_word2vec.pkl"
    with open(bad, "wb") as fh:
        pickle.dump(np.zeros((20, 299), np.float32), fh)
    rc = cli_main(["check-model", "ml-gcn", "--checkpoint", str(official["ckpt"]), "--word-vectors", str(bad)])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "\n" not in err
    assert str(bad) in err and "299-dimensional but the checkpoint's gc1 takes 300" in err
    bad = _dump(np.zeros((21, 300), np.float32), tmp_path / "wv21.pkl")
    rc = cli_main(["check-model", "ml-gcn", "--checkpoint", str(official["ckpt"]), "--word-vectors", str(bad)])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "\n" not in err and str(bad) in err and "shape 21x300, expected 20x?" in err

    junk = tmp_path / "voc_checkpoint.pth.tar"
    junk.write_bytes(b"this is not a checkpoint")
    rc = cli_main(["check-model", "ml-gcn", "--checkpoint", str(junk), "--word-vectors", str(official["wv"])])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "\n" not in err and str(junk) in err and "not a readable PyTorch" in err

    rc = cli_main(["check-model", "ml-gcn", "--checkpoint", str(official["ckpt"])])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and "needs its word vectors" in err


def test_mlgcn_own_format_round_trip(official: dict, tmp_path: Path) -> None:
    path = ml_gcn.save_ml_gcn(official["model"], tmp_path / "mine.pt", note="x")
    loaded = ml_gcn.load_ml_gcn(path)  # word vectors travel inside
    assert torch.equal(loaded.word_vectors, official["model"].word_vectors)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(official["model"](x), loaded(x))
    with pytest.raises(ModelLoadError, match="holds a 'ml-gcn' model, not 'ml-liw'"):
        ml_liw.load_ml_liw(path)
    # by name: an mlalp file needs no word-vector setting (it carries its own)
    from mlalp_core.models.registry import list_models, load_model
    from mlalp_core.settings import load_settings

    assert checkpoints.looks_like_model_file(path) and not checkpoints.looks_like_model_file(official["ckpt"])
    s = load_settings({"mlgcn_checkpoint": str(path)}, environ={}, cwd=tmp_path)
    assert {i.name: i for i in list_models(s)}["ml-gcn"].available
    with torch.no_grad():
        assert torch.equal(load_model("ml-gcn", device="cpu", settings=s)(x), loaded(x))


def test_mlgcn_strictness(official: dict, tmp_path: Path) -> None:
    obj = checkpoints.safe_torch_load(official["ckpt"])
    state = obj["state_dict"]
    # 'module.' prefixes (DataParallel) are stripped; a missing weight is still an error
    bad = OrderedDict((f"module.{k}", v) for k, v in state.items() if k != "gc1.weight")
    torch.save({"state_dict": bad}, tmp_path / "missing.pth")
    with pytest.raises(ModelLoadError, match=r"1 missing \(e\.g\. gc1\.weight\)"):
        ml_gcn.load_ml_gcn(tmp_path / "missing.pth", official["wv"])
    extra = OrderedDict(state)
    extra["gc3.weight"] = torch.zeros(2, 2)
    extra["gc2.weight"] = torch.zeros(1024, 10)
    torch.save({"state_dict": extra}, tmp_path / "extra.pth")
    with pytest.raises(ModelLoadError, match=r"1 unexpected \(e\.g\. gc3\.weight\).*gc2\.weight: \(1024, 10\)"):
        ml_gcn.load_ml_gcn(tmp_path / "extra.pth", official["wv"])


def test_fill_num_batches_tracked_only_where_statistics_exist() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.BatchNorm2d(4))
    state = OrderedDict((k, v) for k, v in net.state_dict().items() if "num_batches_tracked" not in k)
    del state["2.running_mean"]
    filled = checkpoints.fill_num_batches_tracked(net, state)
    assert "1.num_batches_tracked" in filled and "2.num_batches_tracked" not in filled
    with pytest.raises(ModelLoadError, match="missing"):
        checkpoints.load_state_strict(net, filled, "f")


# ---------------------------------------------------------------------------------------------
# Hostile and malformed files
# ---------------------------------------------------------------------------------------------


class _Payload:
    """Unpickling this would run a shell command that creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _dump(obj, path: Path, protocol: int = 4) -> Path:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=protocol)
    return path


def test_code_running_pickles_are_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = [
        _dump(_Payload(marker), tmp_path / "a.pkl"),
        _dump({"adj": _Payload(marker), "nums": np.zeros(20)}, tmp_path / "b.pkl", protocol=2),
        _dump(np.array([_Payload(marker)], dtype=object), tmp_path / "c.pkl"),
    ]
    for f in hostile:
        for loader in (ml_gcn.load_word_vectors, ml_gcn.load_cooccurrence):
            with pytest.raises(ModelLoadError, match="refused to unpickle") as err:
                loader(f)
            assert str(f) in str(err.value) and "\n" not in str(err.value)
    assert "posix.system" in str(pytest.raises(ModelLoadError, ml_gcn.load_word_vectors, hostile[0]).value)
    # a torch checkpoint smuggling the same payload, in both serializations
    for zipped in (True, False):
        f = tmp_path / f"ckpt{zipped}.pth"
        torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _Payload(marker)}, f, _use_new_zipfile_serialization=zipped)
        with pytest.raises(ModelLoadError, match="refused to load"):
            ml_gcn.load_ml_gcn(f, hostile[0])
        with pytest.raises(ModelLoadError, match="refused to load"):
            ml_liw.load_ml_liw(f)
    assert not marker.exists()


def test_object_arrays_and_non_numeric_data_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="non-numeric dtype"):
        ml_gcn.load_word_vectors(_dump(np.array([1, 2], dtype=object), tmp_path / "o.pkl"))
    with pytest.raises(ModelLoadError, match="must be a numpy array"):
        ml_gcn.load_word_vectors(_dump([[0.0] * 300] * 20, tmp_path / "l.pkl"))
    junk = tmp_path / "t.pkl"
    junk.write_bytes(b"\x80\x04garbage")
    with pytest.raises(ModelLoadError, match="not a readable pickle"):
        ml_gcn.load_word_vectors(junk)
    with pytest.raises(ModelLoadError, match="no such file"):
        ml_gcn.load_word_vectors(tmp_path / "absent.pkl")


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_official_pickle_layouts_load_in_every_protocol(tmp_path: Path, protocol: int) -> None:
    wv = np.random.default_rng(3).standard_normal((20, 300)).astype(np.float32)
    got = ml_gcn.load_word_vectors(_dump(wv, tmp_path / "wv.pkl", protocol))
    assert got.dtype == np.float32 and np.array_equal(got, wv)
    counts = _counts(4)
    adj, nums = ml_gcn.load_cooccurrence(_dump(counts, tmp_path / "adj.pkl", protocol))
    assert np.array_equal(adj, counts["adj"]) and np.array_equal(nums, counts["nums"])
    a = ml_gcn.load_adjacency(tmp_path / "adj.pkl")
    assert np.array_equal(a, cooccurrence_adjacency(counts["adj"], counts["nums"]))


@pytest.mark.parametrize(
    "obj, match",
    [
        (np.zeros((20, 300, 1), np.float32), "shape 20x300x1, expected 20x\\?"),
        (np.zeros((19, 300), np.float32), "shape 19x300"),
        (np.full((20, 300), np.nan, np.float32), "NaN or infinite"),
        (np.zeros((20, 300), np.int64), "dtype int64"),
    ],
)
def test_bad_word_vectors(tmp_path: Path, obj, match: str) -> None:
    with pytest.raises(ModelLoadError, match=match):
        ml_gcn.load_word_vectors(_dump(obj, tmp_path / "wv.pkl"))


@pytest.mark.parametrize(
    "obj, match",
    [
        ({"adj": np.zeros((20, 20))}, "keys 'adj' and 'nums'"),
        ({"adj": np.zeros((20, 19)), "nums": np.ones(20)}, "'adj' count matrix has shape 20x19"),
        ({"adj": np.zeros((20, 20)), "nums": np.ones(21)}, "'nums' count vector has shape 21"),
        ({"adj": np.full((20, 20), np.inf), "nums": np.ones(20)}, "NaN or infinite"),
        ({"adj": -np.ones((20, 20), np.int64), "nums": np.ones(20, np.int64)}, "non-negative"),
        (np.zeros((20, 20)), "expected a dict"),
    ],
)
def test_bad_cooccurrence_files(tmp_path: Path, obj, match: str) -> None:
    with pytest.raises(ModelLoadError, match=match):
        ml_gcn.load_cooccurrence(_dump(obj, tmp_path / "adj.pkl"))


def test_numpy_scalars_are_allowed_only_when_needed(tmp_path: Path) -> None:
    f = tmp_path / "plain.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "best_score": 1.5}, f)
    assert checkpoints.safe_torch_load(f)["best_score"] == 1.5
    f2 = tmp_path / "np.pth"
    torch.save({"best_score": np.float32(2.5), "epoch": np.int64(3)}, f2, _use_new_zipfile_serialization=False)
    got = checkpoints.safe_torch_load(f2)
    assert got == {"best_score": 2.5, "epoch": 3}
    # the allow-list is scoped to the retry: nothing stays registered globally
    registered = torch.serialization.get_safe_globals()
    assert not any(g is np.dtype or (isinstance(g, tuple) and "numpy" in g[1]) for g in registered)


# ---------------------------------------------------------------------------------------------
# ML-LIW
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def liw_model() -> ml_liw.MLLIW:
    torch.manual_seed(1)
    m = ml_liw.MLLIW().eval()
    calibrate_batchnorm(m.trunk, m.normalize(torch.rand(4, 3, 75, 75)))
    return m


def _authors_file(model: ml_liw.MLLIW, path: Path, with_aux: bool = True) -> Path:
    """The authors' layout: Inceptionv3Rank.state_dict() (model.* incl. AuxLogits, mean, std)."""
    import torchvision

    state = ml_liw.authors_state_dict(model)
    if with_aux:
        aux = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False).AuxLogits
        for k, v in aux.state_dict().items():
            state[f"model.AuxLogits.{k}"] = v
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return path


def test_authors_mlliw_state_dict_round_trip(liw_model: ml_liw.MLLIW, tmp_path: Path) -> None:
    f = _authors_file(liw_model, tmp_path / "voc2007_checkpoint.pth.tar")
    loaded = ml_liw.load_ml_liw(f)
    assert loaded.input_size == (299, 299) and loaded.trunk.transform_input and not loaded.trunk.aux_logits
    assert torch.allclose(loaded.norm_mean.flatten(), torch.tensor([0.5] * 3))
    x = torch.rand(2, 3, 75, 75)
    with torch.no_grad():
        assert torch.equal(liw_model(x), loaded(x))
    # training mode keeps the trunk's BatchNorm on its running statistics (as the authors trained)
    loaded.train()
    assert loaded.training and not loaded.trunk.training


def test_mlliw_full_size_check_and_own_format(liw_model: ml_liw.MLLIW, tmp_path: Path) -> None:
    info = check_model(liw_model, "cpu")
    assert info["input_size"] == [299, 299] and info["num_labels"] == 20
    assert 0.0 <= info["prob_min"] <= info["prob_max"] <= 1.0
    path = ml_liw.save_ml_liw(liw_model, tmp_path / "own.pt")
    loaded = ml_liw.load_ml_liw(path)
    x = torch.rand(1, 3, 75, 75)
    with torch.no_grad():
        assert torch.equal(liw_model(x), loaded(x))


def test_mlliw_authors_normalisation_and_bad_keys(liw_model: ml_liw.MLLIW, tmp_path: Path) -> None:
    state = ml_liw.authors_state_dict(liw_model)
    state["mean"] = torch.tensor([0.4, 0.5, 0.6])
    torch.save(state, tmp_path / "m.pth")
    loaded = ml_liw.load_ml_liw(tmp_path / "m.pth")
    assert torch.allclose(loaded.norm_mean.flatten(), torch.tensor([0.4, 0.5, 0.6]))
    state["head.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "k.pth")
    with pytest.raises(ModelLoadError, match="unexpected key 'head.weight'"):
        ml_liw.load_ml_liw(tmp_path / "k.pth")
    del state["head.weight"], state["std"]
    torch.save(state, tmp_path / "s.pth")
    with pytest.raises(ModelLoadError, match="no 'mean'/'std'"):
        ml_liw.load_ml_liw(tmp_path / "s.pth")


def test_mlliw_jacobian_through_the_full_model(liw_model: ml_liw.MLLIW) -> None:
    x = torch.rand(1, 3, 75, 75)
    target = torch.zeros(1, 20, dtype=torch.bool)
    values, jac = batched_jacobian(lambda z: per_label_bce(liw_model(z), target), x)
    assert values.shape == (1, 20) and jac.shape == (1, 20, 3, 75, 75)
    assert torch.isfinite(jac).all() and jac.abs().sum() > 0


def test_missing_imagenet_weights_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(ConfigurationError) as err:
        ml_gcn.imagenet_resnet101_features()
    assert str(err.value) == (f"ImageNet weights for resnet101 are not in {tmp_path / 'hub' / 'checkpoints'}; "
                              "place resnet101-63fe2227.pth there or pass --trunk-weights FILE")
    with pytest.raises(ConfigurationError, match="inception_v3_google-0cc3c7bd.pth"):
        ml_liw.imagenet_inception_v3_trunk()


# ---------------------------------------------------------------------------------------------
# Training (tiny) and evaluation
# ---------------------------------------------------------------------------------------------


def test_mlliw_training_lowers_the_loss_and_resumes(tmp_path: Path) -> None:
    root = make_voc(tmp_path / "data")
    cfg = dict(model="ml-liw", voc_root=root, year=2007, out=tmp_path / "run", image_size=75, random_trunk=True,
               progress=False, cache_dir=tmp_path / "cache", lr=0.05, device="cpu")
    first = train_ml_liw(TrainConfig(epochs=2, **cfg))
    losses = [h["loss"] for h in first["history"]]
    assert losses[-1] < losses[0]
    assert all(np.isfinite(h["val_loss"]) for h in first["history"])
    assert (tmp_path / "run" / "train-checkpoint.pt").is_file()
    assert {p.name for p in (tmp_path / "run").glob("features-*.pt")} == {"features-voc2007-train.pt",
                                                                          "features-voc2007-val.pt"}
    resumed = train_ml_liw(TrainConfig(epochs=3, **cfg))
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    assert resumed["history"][:2] == first["history"]
    assert resumed["history"][-1]["loss"] < losses[-1]
    # the best file holds the epoch with the lowest validation loss
    vals = [h["val_loss"] for h in resumed["history"]]
    assert resumed["best_epoch"] == 1 + int(np.argmin(vals)) and resumed["best"] == min(vals)
    best = ml_liw.load_ml_liw(resumed["model_file"])
    assert best.input_size == (75, 75)
    info = checkpoints.read_model_file(resumed["model_file"])
    assert info["config"]["epoch"] == resumed["best_epoch"]


def test_mlgcn_training_runs_checkpoints_and_resumes(tmp_path: Path, official: dict) -> None:
    root = make_voc(tmp_path / "data")
    cfg = dict(model="ml-gcn", voc_root=root, year=2007, out=tmp_path / "run", image_size=64, random_trunk=True,
               progress=False, cache_dir=tmp_path / "cache", word_vectors=official["wv"], limit=2, batch_size=2,
               lr=1e-3, device="cpu")
    first = train_ml_gcn(TrainConfig(epochs=1, **cfg))
    assert len(first["history"]) == 1 and np.isfinite(first["history"][0]["loss"])
    assert first["best_epoch"] == 1 and (tmp_path / "run" / "ml-gcn-best.pt").is_file()
    # rerunning a finished run resumes from its checkpoint: nothing is retrained, the record stays
    again = train_ml_gcn(TrainConfig(epochs=1, **cfg))
    assert again["history"] == first["history"] and again["best_epoch"] == 1
    model = ml_gcn.load_ml_gcn(tmp_path / "run" / "ml-gcn-last.pt")
    assert model.input_size == (64, 64)
    # the graph was counted from the two training images' labels
    from mlalp_core.data.voc import VOCDataset

    y = VOCDataset(root, 2007, "train", cache_dir=False).labels()[:2]
    expect = cooccurrence_adjacency(*ml_gcn.cooccurrence_from_labels(y), t=0.4)
    assert torch.allclose(model.A, torch.from_numpy(expect))


def test_mlgcn_augmentation_is_a_crop_flip_resize() -> None:
    x = torch.rand(3, 40, 60)
    g = torch.Generator().manual_seed(0)
    outs = [ml_gcn.training_augment(x, (32, 32), generator=g) for _ in range(8)]
    assert all(o.shape == (3, 32, 32) and o.min() >= 0 and o.max() <= 1 for o in outs)
    assert len({o.sum().item() for o in outs}) > 1  # random crops differ
