"""A model's outputs checked where they are used (issue 19, item 4): a network that is fine on a
blank image but returns NaN, or "probabilities" above 1, on real images is stopped with one line
naming the model, the image and the problem by check-model, ml.wrap, mlalp attack, the batch
runner and every attack of the API; and mlalp attack refuses a target a Rank attack cannot pursue
before any work, as mlalp bench does."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

import mlalp_core as ml
from mlalp_core.cli import main as cli_main
from mlalp_core.data.demo import DEMO_LABELS
from mlalp_core.errors import InvalidInputError
from mlalp_core.models.wrap import WrappedModel


@pytest.fixture(autouse=True)
def _plain(monkeypatch, tmp_path, one_torch_thread):
    for k in list(os.environ):
        if k.startswith("MLALP_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("MLALP_DEVICE", "cpu")
    monkeypatch.setenv("MLALP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def one_line_error(rc: int, err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


class NaNOnRealImages(torch.nn.Module):
    """Logits from the channel means; NaN once the image has more contrast than a blank one."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(4.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = (x.mean(dim=(2, 3)).repeat(1, 4)[:, :10] - 0.5) * self.scale
        spread = x.flatten(1).std(dim=1, keepdim=True)
        return torch.where(spread > 1e-3, torch.full_like(logits, float("nan")), logits)


class ProbabilitiesAboveOne(torch.nn.Module):
    """Declared probabilities: 0.5 on a blank image, above 1 on any image with contrast."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = torch.nn.Parameter(torch.tensor(10.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spread = x.flatten(1).std(dim=1, keepdim=True)
        return (0.5 + self.gain * spread).repeat(1, 10)


class NaNOffTheByteGrid(torch.nn.Module):
    """Finite on images of whole 8-bit values (and the blank 0.5); NaN once pixels leave that grid,
    as an attack's perturbation makes them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = (x.mean(dim=(2, 3)).repeat(1, 4)[:, :10] - 0.5) * 4
        v = x * 510
        off = (v - v.round()).abs().flatten(1).amax(dim=1, keepdim=True)
        return torch.where(off > 1e-2, torch.full_like(logits, float("nan")), logits)


def user_model(folder: Path, net: torch.nn.Module, name: str, output: str = "logits", size: int = 32) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.jit.save(torch.jit.script(net), folder / "net.pt")
    (folder / "m.toml").write_text(f'name = "{name}"\nfile = "net.pt"\nlabels = {json.dumps(list(DEMO_LABELS))}\n'
                                   f'input_size = [{size}, {size}]\nnormalization = "none"\noutput = "{output}"\n')
    return folder / "m.toml"


# ---- check-model --------------------------------------------------------------------------------


@pytest.mark.parametrize("net, output, words", [(NaNOnRealImages(), "logits", "is not finite"),
                                               (ProbabilitiesAboveOne(), "probabilities", "leaves [0, 1]")])
def test_check_model_runs_gallery_scenes(capsys, tmp_path, monkeypatch, net, output, words):
    manifest = user_model(tmp_path / "m", net, "broken", output)
    rc = cli_main(["check-model", "user", "--manifest", str(manifest)])
    line = one_line_error(rc, capsys.readouterr().err)
    assert "model broken" in line and "gallery scene scene_000" in line and words in line
    monkeypatch.setenv("MLALP_USER_MODELS", str(manifest))  # by name, from the settings
    rc = cli_main(["check-model", "broken"])
    line = one_line_error(rc, capsys.readouterr().err)
    assert "model broken" in line and "gallery scene" in line and words in line


# ---- ml.wrap ------------------------------------------------------------------------------------


@pytest.mark.parametrize("net, output, words", [(NaNOnRealImages(), "logits", "is not finite"),
                                               (ProbabilitiesAboveOne(), "probabilities", "leaves [0, 1]")])
def test_wrap_runs_gallery_scenes(net, output, words):
    with pytest.raises(InvalidInputError) as info:
        ml.wrap(net, labels=DEMO_LABELS, input_size=32, output=output, name="broken")
    msg = str(info.value)
    assert "model broken" in msg and "gallery scene scene_000" in msg and words in msg and "\n" not in msg


# ---- mlalp attack -------------------------------------------------------------------------------


@pytest.mark.parametrize("net, output, words", [(NaNOnRealImages(), "logits", "is not finite"),
                                               (ProbabilitiesAboveOne(), "probabilities", "leaves [0, 1]")])
def test_mlalp_attack_stops_on_broken_outputs_before_any_work(capsys, tmp_path, monkeypatch, net, output, words):
    monkeypatch.setenv("MLALP_USER_MODELS", str(user_model(tmp_path / "m", net, "broken", output)))
    rc = cli_main(["attack", "scene_005", "--model", "broken", "--attack", "fgsm", "--out", "o"])
    line = one_line_error(rc, capsys.readouterr().err)
    assert "model broken" in line and "example scene_005" in line and words in line
    assert not list((tmp_path / "o").glob("*"))


# ---- the API: every attack, and the batch runner ----------------------------------------------


def _unchecked(net: torch.nn.Module, output: str = "logits", name: str = "broken", size: int = 32) -> WrappedModel:
    """A wrapped network built without ml.wrap's check: what an attack can still meet."""
    return WrappedModel(net, DEMO_LABELS, (size, size), (0, 0, 0), (1, 1, 1), 0.5, output, name).eval()


@pytest.mark.parametrize("name", list(ml.ATTACKS))
@pytest.mark.parametrize("net, output, words", [(NaNOnRealImages(), "logits", "is not finite"),
                                               (ProbabilitiesAboveOne(), "probabilities", "leaves [0, 1]")])
def test_every_attack_stops_on_broken_outputs(name, net, output, words):
    model = _unchecked(net, output)
    gallery = ml.load_dataset("demo")
    x = torch.stack([gallery.image(i, (32, 32)) for i in (3, 4)])
    target = torch.zeros(2, 10, dtype=torch.bool)
    target[:, :2] = True
    with pytest.raises(InvalidInputError) as info:
        ml.attack(name, model, x, target, device="cpu")
    msg = str(info.value)
    assert "model broken" in msg and "image 0 of the batch" in msg and words in msg and "\n" not in msg
    with pytest.raises(InvalidInputError, match="model broken: its output on example scene_003 "):
        ml.attack(name, model, x, target, example_ids=["scene_003", "scene_004"], device="cpu")


def test_a_model_that_breaks_on_the_returned_image_says_so_in_its_note():
    model = _unchecked(NaNOffTheByteGrid(), size=96)  # the gallery's own size: whole 8-bit values
    x = ml.load_dataset("demo").image(3, (96, 96))[None]
    target = torch.zeros(1, 10, dtype=torch.bool)
    res = ml.attack("pgd", model, x, target, example_ids=["scene_003"], device="cpu")
    assert not bool(res.success[0]) and not torch.equal(res.x_adv, res.x)
    assert res.notes[0].startswith("the model's output on the returned image is not finite")


def test_the_batch_runner_names_the_example(tmp_path):
    from mlalp_core.models.registry import _REGISTERED

    model = WrappedModel(NaNOnRealImages(), DEMO_LABELS, (96, 96), (0, 0, 0), (1, 1, 1), 0.5, "logits", "nanny")
    ml.register(model, "nanny")
    try:
        with pytest.raises(InvalidInputError) as info:
            ml.run_benchmark(ml.BenchConfig(models=["nanny"], dataset="demo", attacks=["fgsm"], n=2, device="cpu",
                                            store=tmp_path / "s.sqlite"))
    finally:
        _REGISTERED.pop("nanny", None)
    msg = str(info.value)
    assert "model nanny" in msg and "example scene_000" in msg and "is not finite" in msg


# ---- mlalp attack refuses what a Rank attack cannot pursue, before any work --------------------


def test_mlalp_attack_refuses_a_rank_objective_it_cannot_pursue(capsys, tmp_path):
    model = ml.load_model("demo-gcn", device="cpu")
    pred = model.predict(ml.load_dataset("demo").image(5, (96, 96))[None])[0]
    present = [DEMO_LABELS[j] for j in pred.nonzero().flatten().tolist()]
    cases = [("ml-rank1", ["--hide", *present], torch.zeros(10, dtype=torch.bool)),
             ("ml-rank2", ["--labels", *DEMO_LABELS], torch.ones(10, dtype=torch.bool))]
    for attack, target, y_star in cases:
        rc = cli_main(["attack", "scene_005", "--attack", attack, *target, "--out", "o"])
        line = one_line_error(rc, capsys.readouterr().err)
        problem = ml.ATTACKS[attack].target_problem(y_star)  # the attack's own reason, which mlalp bench gives
        assert problem and f"{attack} cannot pursue the target {' '.join(target)}: {problem}" in line
        assert not list((tmp_path / "o").glob("*"))
