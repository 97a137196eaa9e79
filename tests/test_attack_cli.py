"""``mlalp attack``: one image from the shell, every file it promises, and one line for bad input."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from mlalp_core.cli import main as cli_main


@pytest.fixture(autouse=True)
def _plain(monkeypatch, tmp_path):
    for k in list(os.environ):
        if k.startswith("MLALP_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("MLALP_DEVICE", "cpu")
    monkeypatch.chdir(tmp_path)


def test_attack_a_gallery_image_and_write_every_file(capsys, tmp_path):
    rc = cli_main(["attack", "scene_005", "--model", "demo-gcn", "--hide", "seven", "--attack", "mla-lp",
                   "--figures", "out/", "--format", "pdf,png", "--out", "out/"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "MLA-LP on scene_005 (demo-gcn): reached the target" in out
    stem = tmp_path / "out" / "scene_005_mla-lp"
    report = json.loads((tmp_path / "out" / "scene_005_mla-lp_metrics.json").read_text())
    assert report["success"] is True and report["hidden"] == ["seven"] and "seven" not in report["target"]
    r = np.load(f"{stem}_perturbation.npy")
    assert r.shape == (3, 96, 96) and r.dtype == np.float32
    assert float(np.abs(r).max()) == pytest.approx(report["metrics"]["linf"], rel=1e-6)
    adv = Image.open(f"{stem}_adversarial.png")
    assert adv.size == (96, 96) and adv.mode == "RGB"
    assert isinstance(report["success_as_8bit_png"], bool)
    assert report["probabilities"]["seven"]["before"] >= 0.5 > report["probabilities"]["seven"]["after"]
    assert (tmp_path / "out" / "scene_005_mla-lp_result.pdf").read_bytes().startswith(b"%PDF")
    png = Image.open(tmp_path / "out" / "scene_005_mla-lp_result.png")
    assert round(png.info["dpi"][0]) == 300
    assert set(report["files"]) == {"adversarial", "perturbation", "figure_pdf", "figure_png", "metrics"}


def test_attack_an_image_file_of_another_size_with_a_label_to_add(capsys, tmp_path):
    import mlalp_core as ml  # scene_005 (one, three, seven) as a photo of another size

    scene = ml.load_dataset("demo").image(5, (120, 150))
    Image.fromarray((scene.permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(tmp_path / "p.png")
    rc = cli_main(["attack", str(tmp_path / "p.png"), "--model", "demo-liw", "--add", "zero", "--attack", "ml-cw",
                   "--set", "ml-cw.max_iterations=20", "--set", "ml-cw.binary_search_steps=2", "--out", "res"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    report = json.loads((tmp_path / "res" / "p_ml-cw_metrics.json").read_text())
    assert report["added"] == ["zero"] and report["settings"]["max_iterations"] == 20
    assert report["success"] or report["note"].startswith("target not reached")


def test_figures_alone_writes_every_file_into_its_folder(capsys, tmp_path):
    """`--figures DIR` without `--out`: the adversarial PNG, the .npy, the JSON and the figures all
    land in DIR, nothing in the current folder (they used to)."""
    rc = cli_main(["attack", "scene_009", "--model", "demo-gcn", "--attack", "pgd", "--figures", "res",
                   "--format", "pdf,svg"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]
    made = sorted(p.name for p in (tmp_path / "res").iterdir())
    assert made == sorted(f"scene_009_pgd_{end}" for end in ("adversarial.png", "perturbation.npy", "metrics.json",
                                                             "result.pdf", "result.svg"))
    report = json.loads((tmp_path / "res" / "scene_009_pgd_metrics.json").read_text())
    assert {os.path.dirname(f) for f in report["files"].values()} == {"res"}
    assert all(f in out for f in report["files"].values())


def test_help_lists_every_attack_of_the_registry(capsys):
    from mlalp_core.attacks import ATTACKS

    with pytest.raises(SystemExit) as done:
        cli_main(["attack", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    listed = text.split("options:", 1)[1].split("--attack ATTACK", 1)[1].split("--set", 1)[0]
    for name in ATTACKS:
        assert f" {name}," in listed or f" {name} " in listed, (name, listed)


@pytest.mark.parametrize("argv, words", [
    (["scene_999"], "not an image file, nor an example id or index of demo"),
    (["scene_005", "--hide", "unicorn"], "unknown label 'unicorn'"),
    (["scene_005", "--hide", "seven", "--add", "zero"], "give one of --hide, --add or --labels"),
    (["scene_005", "--figures", "f", "--format", "eps"], "--format takes pdf, svg and/or png"),
    (["scene_005", "--attack", "ml-cw", "--set", "ml-cw.max_iterations=lots"], "ml-cw.max_iterations must be an integer"),
    (["scene_005", "--attack", "fgsm2"], "unknown attack 'fgsm2'"),
])
def test_bad_input_is_one_line(capsys, argv, words):
    rc = cli_main(["attack", *argv])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and words in lines[0], err
