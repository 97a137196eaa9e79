"""The committed demo models (contract, safe loading, recorded quality) and the training loop."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from mlalp_core.data.demo import DEMO_LABELS, generate_scenes, load_gallery
from mlalp_core.errors import InvalidInputError, ModelLoadError
from mlalp_core.models.demo import DEMO_MODEL_NAMES, MODELS_DIR, load_demo_model, load_demo_model_file
from mlalp_core.models.gcn import GCNClassifier, cooccurrence_adjacency
from mlalp_core.models.liw import LinearHeadClassifier
from mlalp_core.training.demo import CHECK_N, EVAL_SEED, predict_probabilities
from mlalp_core.training.loop import fit, load_checkpoint
from mlalp_core.training.quality import classification_report


@pytest.fixture(scope="module")
def quality() -> dict:
    return json.loads((MODELS_DIR / "quality.json").read_text())


@pytest.fixture(scope="module", params=DEMO_MODEL_NAMES)
def model(request):
    return load_demo_model(request.param, device="cpu")


def _plain(obj, path="ckpt"):
    """Assert the weights file holds only plain types."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert isinstance(k, str), path
            _plain(v, f"{path}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _plain(v, f"{path}[{i}]")
    else:
        assert obj is None or isinstance(obj, (torch.Tensor, str, int, float, bool)), f"{path}: {type(obj)}"


@pytest.mark.parametrize("name", DEMO_MODEL_NAMES)
def test_weights_file_is_plain_and_loads_with_weights_only(name):
    ckpt = torch.load(MODELS_DIR / f"{name}.pt", map_location="cpu", weights_only=True)
    _plain(ckpt)
    assert ckpt["format"] == "mlalp-demo-model" and ckpt["name"] == name
    assert ckpt["label_names"] == list(DEMO_LABELS) and ckpt["input_size"] == [96, 96]
    assert ckpt["threshold"] == 0.5
    size = (MODELS_DIR / f"{name}.pt").stat().st_size
    assert size < 3 * 2**20


def test_model_contract(model):
    assert not model.training
    assert model.label_names == DEMO_LABELS and model.input_size == (96, 96)
    assert model.threshold == 0.5 and model.num_pixels == 27_648
    d = model.describe()
    assert d["labels"] == list(DEMO_LABELS) and d["input_size"] == [96, 96] and d["parameters"] > 0
    x = load_gallery().images()[:4]
    logits = model(x)
    assert logits.shape == (4, 10)
    # Normalisation happens inside: forward = classify(normalize(x)).
    torch.testing.assert_close(logits, model.classify(model.normalize(x)))
    assert not torch.allclose(model.norm_mean, torch.zeros(3)) and not torch.allclose(model.norm_std, torch.ones(3))
    p = model.probabilities(x)
    assert ((p >= 0) & (p <= 1)).all()
    assert torch.equal(model.predict(x), p >= 0.5)
    # Differentiable w.r.t. the [0,1] pixels (what the attacks need).
    x = x.clone().requires_grad_(True)
    model(x)[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_outputs_are_not_saturated(model):
    """Attacks need gradients: no gallery logit may sit where the sigmoid is flat in float32."""
    g = load_gallery()
    with torch.no_grad():
        z = model(g.images())
    assert z.abs().max() < 16.0  # sigmoid(16) < 1 in float32
    assert (z.abs() > 13.8).float().mean() < 0.01  # MLA-LP's clamp at 1e-6


def test_fold_temperature_scales_logits_and_keeps_predictions():
    from mlalp_core.models.demo import fold_temperature
    from mlalp_core.training.demo import choose_temperature

    x = load_gallery().images()[:8]
    for name in DEMO_MODEL_NAMES:
        m = load_demo_model(name)
        before = m(x).detach()
        fold_temperature(m, 2.5)
        after = m(x).detach()
        torch.testing.assert_close(after, before / 2.5, rtol=1e-4, atol=1e-5)
        assert torch.equal(after >= 0, before >= 0)
    with pytest.raises(InvalidInputError):
        fold_temperature(m, 0.0)
    # choose_temperature: the larger of the NLL-optimal one and the one capping |logit|.
    g = torch.Generator().manual_seed(0)
    y = torch.rand(300, 10, generator=g) < 0.3
    z = torch.where(y, 1.0, -1.0) * (20 + 5 * torch.rand(300, 10, generator=g))  # all right, huge margins
    used, t_nll = choose_temperature(z, y, logit_cap=12.0)
    assert used == pytest.approx(float(torch.quantile(z.abs().flatten().double(), 0.999)) / 12.0)
    assert t_nll <= 0.25 + 1e-9  # perfectly separated: sharpening always lowers the NLL
    flip = torch.rand(300, 10, generator=g) < 0.05  # 5 % of confident mistakes
    used2, t_nll2 = choose_temperature(torch.where(flip, -z, z), y, logit_cap=100.0)
    assert used2 == t_nll2 and t_nll2 > 5.0


def test_gcn_graph_comes_from_training_cooccurrence():
    m = load_demo_model("demo-gcn")
    assert isinstance(m, GCNClassifier)
    ckpt = torch.load(MODELS_DIR / "demo-gcn.pt", map_location="cpu", weights_only=True)
    counts, nums = ckpt["extra"]["cooccurrence_counts"].numpy(), ckpt["extra"]["label_counts"].numpy()
    np.testing.assert_allclose(m.A.detach().numpy(), cooccurrence_adjacency(counts, nums), rtol=1e-6)
    assert torch.equal(m.word_vectors, torch.eye(10))
    assert nums.sum() > 0 and (counts == counts.T).all()
    assert isinstance(load_demo_model("demo-liw"), LinearHeadClassifier)


def test_recorded_quality_is_reproduced(model, quality):
    name = model.demo_name
    q = quality["models"][name]
    assert q["held_out"]["examples"] >= 1000
    assert q["held_out"]["micro_f1"] >= 0.95
    # The gallery: every committed scene, exactly as recorded.
    gallery = load_gallery()
    p = predict_probabilities(model, gallery.images())
    right = int(((p >= 0.5) == gallery.labels()).all(1).sum())
    assert right >= 0.8 * len(gallery)
    assert abs(right - q["gallery"]["exactly_right"]) <= 1  # one borderline flip across CPUs at most
    # The check subset: the first CHECK_N held-out scenes of the evaluation seed.
    check = q["check_subset"]
    assert check["seed"] == EVAL_SEED and check["n"] == CHECK_N
    x, y = generate_scenes(check["n"], check["seed"], check["split"])
    report = classification_report(predict_probabilities(model, x), y)
    assert report["micro_f1"] >= 0.95
    assert abs(report["micro_f1"] - check["micro_f1"]) < 0.004
    assert abs(report["exact_match"] - check["exact_match"]) <= 1.5 / check["n"]


def test_missing_or_corrupt_weights_say_what_to_run(tmp_path):
    with pytest.raises(ModelLoadError, match="mlalp train-demo"):
        load_demo_model("demo-gcn", folder=tmp_path)
    bad = tmp_path / "demo-liw.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ModelLoadError, match=r"demo-liw\.pt.*mlalp train-demo"):
        load_demo_model("demo-liw", folder=tmp_path)
    torch.save({"format": "something else"}, bad)
    with pytest.raises(ModelLoadError, match="not an mlalp demo model"):
        load_demo_model_file(bad)
    ckpt = torch.load(MODELS_DIR / "demo-liw.pt", weights_only=True)
    del ckpt["state_dict"]["fc.weight"]
    torch.save(ckpt, bad)
    with pytest.raises(ModelLoadError, match="valid demo model"):
        load_demo_model_file(bad)
    with pytest.raises(InvalidInputError, match="demo-gcn"):
        load_demo_model("demo-foo")


# ---- the generic training loop ----------------------------------------------------------------
def _tiny_problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(96, 8, generator=g)
    w = torch.randn(8, 3, generator=g)
    y = (x @ w > 0).float()
    return x, y


def _tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 3))


def _batches(x, y):
    def per_epoch(epoch):
        perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(epoch))
        return [(x[perm[i : i + 16]], y[perm[i : i + 16]]) for i in range(0, x.shape[0], 16)]

    return per_epoch


def _loss(model, batch):
    xb, yb = batch
    return nn.functional.binary_cross_entropy_with_logits(model(xb), yb)


def _run(epochs, ckpt, model=None, resume=True):
    model = model or _tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    x, y = _tiny_problem()
    hist = fit(model, _batches(x, y), _loss, opt, epochs, scheduler=sched, checkpoint_path=ckpt,
               resume=resume, progress=False, eval_fn=lambda m, e: {"lr": opt.param_groups[0]["lr"]})
    return model, hist


def test_fit_lowers_the_loss_and_resumes_exactly(tmp_path):
    full, hist_full = _run(6, tmp_path / "full.ckpt")
    assert len(hist_full) == 6
    assert hist_full[-1]["loss"] < 0.6 * hist_full[0]["loss"]
    assert hist_full[-1]["lr"] == pytest.approx(0.2 * 0.5**3)

    # Stop after 3 epochs, then resume to 6 in a fresh model and optimizer.
    ckpt = tmp_path / "part.ckpt"
    _run(3, ckpt)
    saved = load_checkpoint(ckpt)
    assert saved["epoch"] == 3 and len(saved["history"]) == 3
    torch.manual_seed(1234)  # a resumed run restores the RNG state itself
    resumed, hist = _run(6, ckpt, model=_tiny_model())
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(hist, hist_full):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    for (k, a), b in zip(resumed.state_dict().items(), full.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
    # A finished checkpoint is not trained again.
    _, again = _run(6, ckpt)
    assert len(again) == 6


def test_fit_history_is_the_mean_batch_loss():
    seen = []

    def recording_loss(model, batch):
        loss = _loss(model, batch)
        seen.append(float(loss.detach()))
        return loss

    model = _tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _tiny_problem()
    hist = fit(model, _batches(x, y), recording_loss, opt, 2, progress=True)
    assert [h["batches"] for h in hist] == [6, 6]
    assert hist[0]["loss"] == pytest.approx(np.mean(seen[:6]))
    assert hist[1]["loss"] == pytest.approx(np.mean(seen[6:]))


def test_fit_can_keep_batchnorm_in_eval_mode():
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).eval()
    stats = model[1].running_mean.clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = _tiny_problem()
    fit(model, _batches(x, y), _loss, opt, 1, progress=False, train_mode=False)
    assert not model.training and torch.equal(model[1].running_mean, stats)
    fit(model, _batches(x, y), _loss, opt, 1, progress=False)
    assert model.training and not torch.equal(model[1].running_mean, stats)


def test_fit_checkpoint_errors(tmp_path):
    bad = tmp_path / "bad.ckpt"
    torch.save({"format": "other"}, bad)
    with pytest.raises(ModelLoadError, match="resume=False"):
        _run(1, bad)
    _, hist = _run(1, bad, resume=False)  # starts over and overwrites
    assert load_checkpoint(bad)["epoch"] == 1 and len(hist) == 1


def test_train_demo_command_end_to_end(tmp_path):
    from mlalp_core.cli.main import main

    threads = torch.get_num_threads()
    try:
        rc = main(["train-demo", "--model", "demo-liw", "--out", str(tmp_path), "--epochs", "1", "--n-train", "128",
                   "--eval-n", "64", "--quiet", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    m = load_demo_model("demo-liw", folder=tmp_path)
    assert isinstance(m, LinearHeadClassifier) and not m.training
    q = json.loads((tmp_path / "quality.json").read_text())
    entry = q["models"]["demo-liw"]
    assert entry["held_out"]["examples"] == 64 and entry["gallery"]["scenes"] == len(load_gallery())
    assert entry["temperature"]["used"] >= entry["temperature"]["nll_optimal"]
    assert entry["recipe"]["n_train"] == 128 and len(entry["history"]) == 1
    assert "torch" in q["environment"]
    assert not (tmp_path / ".checkpoints").exists()
    assert main(["train-demo", "--model", "demo-liw", "--out", str(tmp_path), "--epochs", "0", "--quiet"]) == 2
