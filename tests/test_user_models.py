"""A researcher's own model: TorchScript / torch.export file + manifest, loaded and attacked."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from mlalp_core.attacks.jacobian import batched_jacobian
from mlalp_core.attacks.losses import per_label_bce
from mlalp_core.cli.main import main as cli_main
from mlalp_core.errors import ModelLoadError
from mlalp_core.models.base import MultiLabelClassifier
from mlalp_core.models.user import UserModel, load_user_model, read_manifest

# torch.jit.script/trace are deprecated in this torch; users' TorchScript files still load.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")

LABELS = ["cat", "dog", "car", "tree"]
MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]


class SmallNet(nn.Module):
    """(B, 3, 32, 32) -> (B, 4) logits; the Linear needs exactly 32x32 inputs."""

    def __init__(self, labels: int = 4, sigmoid: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.fc = nn.Linear(6 * 16 * 16, labels)
        self.sigmoid = sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(torch.tanh(self.conv(x)).flatten(1))
        return torch.sigmoid(out) if self.sigmoid else out


class TupleNet(SmallNet):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.fc(torch.tanh(self.conv(x)).flatten(1))
        return out, out


def _net(seed: int = 0, **kw) -> SmallNet:
    torch.manual_seed(seed)
    return SmallNet(**kw).eval()


def _toml(path: Path, **fields) -> Path:
    lines = []
    for k, v in fields.items():
        lines.append(f"{k} = {json.dumps(v)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _manifest(tmp_path: Path, file: str, name: str = "my-net", **over) -> Path:
    fields = dict(name=name, file=file, labels=LABELS, input_size=[32, 32], mean=MEAN, std=STD, threshold=0.5,
                  output="logits", description="a test network")
    fields.update(over)
    fields = {k: v for k, v in fields.items() if v is not None}
    return _toml(tmp_path / f"{name}.toml", **fields)


@pytest.fixture
def scripted(tmp_path: Path) -> tuple[SmallNet, Path]:
    net = _net()
    torch.jit.script(net).save(str(tmp_path / "net.pt"))
    return net, _manifest(tmp_path, "net.pt")


def test_scripted_model_loads_and_matches_the_network(scripted) -> None:
    net, manifest = scripted
    model = load_user_model(manifest)
    assert isinstance(model, MultiLabelClassifier) and isinstance(model, UserModel)
    assert model.label_names == tuple(LABELS) and model.input_size == (32, 32) and model.threshold == 0.5
    assert not model.training
    x = torch.rand(3, 3, 32, 32)
    ref = net((x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1))
    with torch.no_grad():
        assert torch.allclose(model(x), ref, atol=1e-6)
        assert torch.allclose(model.probabilities(x), torch.sigmoid(ref), atol=1e-6)
    info = model.describe()
    assert info["labels"] == LABELS and "my-net" in info["model"] and info["output"] == "logits"


def test_traced_json_manifest_probabilities_and_no_normalisation(tmp_path: Path) -> None:
    net = _net(1, sigmoid=True)
    torch.jit.trace(net, torch.rand(1, 3, 32, 32)).save(str(tmp_path / "traced.pt"))
    (tmp_path / "m.json").write_text(json.dumps({
        "name": "traced", "file": "traced.pt", "labels": LABELS, "input_size": [32, 32],
        "normalization": "none", "output": "probabilities", "threshold": 0.3,
    }))
    model = load_user_model(tmp_path / "m.json")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.probabilities(x), net(x), atol=1e-5)
        assert torch.equal(model.predict(x), model.probabilities(x) >= 0.3)


def test_exported_programs_static_and_dynamic_batch(tmp_path: Path) -> None:
    net = _net(2)
    torch.export.save(torch.export.export(net, (torch.rand(1, 3, 32, 32),)), str(tmp_path / "static.pt2"))
    batch = torch.export.Dim("batch", min=1, max=512)
    torch.export.save(torch.export.export(net, (torch.rand(2, 3, 32, 32),), dynamic_shapes={"x": {0: batch}}),
                      str(tmp_path / "dynamic.pt2"))
    x = torch.rand(3, 3, 32, 32)
    ref = net((x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1))
    for file, per_example in (("static.pt2", True), ("dynamic.pt2", False)):
        model = load_user_model(_manifest(tmp_path, file, name=file.split(".")[0]))
        assert model.manifest.format == "export" and model._per_example is per_example
        with torch.no_grad():
            assert torch.allclose(model(x), ref, atol=1e-5)


def test_output_not_matching_the_label_list_is_refused(tmp_path: Path) -> None:
    torch.jit.script(_net(labels=5)).save(str(tmp_path / "five.pt"))
    with pytest.raises(ModelLoadError) as err:
        load_user_model(_manifest(tmp_path, "five.pt"))
    msg = str(err.value)
    assert "returned shape (1, 5)" in msg and "lists 4 labels" in msg and "\n" not in msg


def test_wrong_size_tuple_output_and_fake_probabilities_are_refused(tmp_path: Path) -> None:
    torch.jit.script(_net()).save(str(tmp_path / "net.pt"))
    with pytest.raises(ModelLoadError, match="forward pass on a blank 40x40 image failed"):
        load_user_model(_manifest(tmp_path, "net.pt", input_size=[40, 40]))
    with pytest.raises(ModelLoadError, match='outputs leave \\[0, 1\\]; use output = "logits"'):
        torch.manual_seed(0)
        big = SmallNet().eval()
        with torch.no_grad():
            big.fc.bias.fill_(5.0)
        torch.jit.script(big).save(str(tmp_path / "big.pt"))
        load_user_model(_manifest(tmp_path, "big.pt", output="probabilities"))
    torch.manual_seed(0)
    torch.jit.script(TupleNet().eval()).save(str(tmp_path / "tuple.pt"))
    with pytest.raises(ModelLoadError, match="returned tuple"):
        load_user_model(_manifest(tmp_path, "tuple.pt"))


def test_files_that_are_not_models_are_refused(tmp_path: Path) -> None:
    torch.save(_net().state_dict(), tmp_path / "weights.pt")  # a state dict, not TorchScript
    with pytest.raises(ModelLoadError, match="weights.pt is a torch.save file .* torch.jit.save"):
        load_user_model(_manifest(tmp_path, "weights.pt"))
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ModelLoadError, match="junk.pt: not a TorchScript file"):
        load_user_model(_manifest(tmp_path, "junk.pt"))
    with pytest.raises(ModelLoadError, match="not a torch.export program"):
        load_user_model(_manifest(tmp_path, "junk.pt", format="export"))


def test_scripted_file_runs_no_python_from_a_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump(Payload(), fh)
    with pytest.raises(ModelLoadError):
        load_user_model(_manifest(tmp_path, "evil.pt"))
    torch.save({"x": Payload()}, tmp_path / "evil_zip.pt")
    with pytest.raises(ModelLoadError):
        load_user_model(_manifest(tmp_path, "evil_zip.pt"))
    assert not marker.exists()


@pytest.mark.parametrize(
    "change, match",
    [
        ({"labels": None}, "needs 'labels'"),
        ({"extra_key": 1}, "unknown manifest key\\(s\\) extra_key"),
        ({"labels": ["a", "a", "b", "c"]}, "labels must be unique"),
        ({"labels": []}, "non-empty list"),
        ({"input_size": [32]}, "input_size must be \\[H, W\\]"),
        ({"mean": [0.5, 0.5]}, "mean must be a list of 3 numbers"),
        ({"std": [1.0, 0.0, 1.0]}, "std must be positive"),
        ({"normalization": "imagenet"}, 'normalization may only be "none"'),
        ({"normalization": "none"}, "not both"),
        ({"threshold": 1.5}, "threshold must be a number in \\(0, 1\\)"),
        ({"output": "softmax"}, 'output must be "logits" or "probabilities"'),
        ({"file": "absent.pt"}, "absent.pt does not exist"),
        ({"name": "has space"}, "without spaces"),
        ({"name": ""}, "non-empty string"),
        ({"format": "onnx"}, 'format must be "torchscript" or "export"'),
    ],
)
def test_bad_manifests(scripted, tmp_path: Path, change: dict, match: str) -> None:
    fields = {"file": "net.pt", "name": "bad", **change}
    path = _manifest(tmp_path, **fields)
    with pytest.raises(ModelLoadError, match=match) as err:
        read_manifest(path)
    assert str(path) in str(err.value)


def test_unparsable_manifests(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text("name = [unclosed")
    with pytest.raises(ModelLoadError, match="not valid TOML"):
        read_manifest(tmp_path / "a.toml")
    (tmp_path / "b.json").write_text("{")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        read_manifest(tmp_path / "b.json")
    with pytest.raises(ModelLoadError, match="no such manifest"):
        read_manifest(tmp_path / "c.toml")


def test_check_model_cli_user(scripted, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _, manifest = scripted
    assert cli_main(["check-model", "user", "--manifest", str(manifest)]) == 0
    out = capsys.readouterr().out
    assert "my-net: OK" in out and "32x32" in out and "cat, dog, car, tree" in out
    torch.jit.script(_net(labels=5)).save(str(tmp_path / "five.pt"))
    assert cli_main(["check-model", "user", "--manifest", str(_manifest(tmp_path, "five.pt", name="five"))]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "lists 4 labels" in err


def test_user_model_is_attacked_end_to_end(scripted) -> None:
    """The per-label loss Jacobian MLA-LP uses and a real attack both go through the file."""
    from mlalp_core.attacks.carlini_wagner import MLCW
    from mlalp_core.experiments.metrics import attack_metrics

    _, manifest = scripted
    model = load_user_model(manifest)
    torch.manual_seed(5)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        clean = model.probabilities(x)
    target = clean >= 0.5
    target[:, 0] = ~target[:, 0]  # flip the first label of each image
    values, jac = batched_jacobian(lambda z: per_label_bce(model(z), target), x)
    assert jac.shape == (2, 4, 3, 32, 32) and torch.isfinite(jac).all() and jac[:, 0].abs().sum() > 0

    result = MLCW(model, max_iterations=200, binary_search_steps=2, initial_const=10.0, device="cpu")(x, target)
    assert result.x_adv.shape == x.shape and result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    moved = (result.probs_adv[:, 0] - clean[:, 0]) * torch.where(target[:, 0], 1.0, -1.0)
    assert (moved > 0).all()  # the flipped label moved towards its target on both images
    assert result.success.all()
    rows = attack_metrics(result)
    assert len(rows) == 2 and all(r["l2"] > 0 for r in rows)
