"""How the demo models are trained and measured (used by ``mlalp train-demo``).

Recipe (both models, chosen to train from scratch on a 2-core CPU in well under 15 minutes):
``n_train`` training scenes generated once from the train split (seed ``seed``), shuffled per
epoch with a generator seeded by (seed, epoch); AdamW (weight decay 5e-4) with a one-cycle
learning-rate schedule stepped per batch; no model selection (the last epoch is kept). Then a
temperature is folded into the last linear map (:func:`choose_temperature`): predictions are
unchanged, but the sigmoid outputs are no longer saturated, so attacks get gradients. The
evaluation scenes (seed :data:`EVAL_SEED`) and the gallery are used for nothing but the final
measurement.

- demo-gcn: mean binary cross-entropy over the 10 labels (= MultiLabelSoftMarginLoss).
- demo-liw: the paper's LIW loss (eq. 19, lambda = 0.5) on the sigmoid outputs, unchanged.

Quality is measured on ``eval_n`` held-out test scenes (seed :data:`EVAL_SEED`) with
:func:`mlalp_core.experiments.metrics.classification_report`, and as exact-match accuracy on the committed
gallery; both go into ``quality.json`` beside the weights, with a small fixed check subset that
the tests recompute.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

#: Seeds of the held-out evaluation scenes (test split) and of the tests' check subset.
EVAL_SEED = 1001
CHECK_N = 256


@dataclass
class DemoRecipe:
    """Everything that determines a demo model's training run."""

    name: str = "demo-gcn"
    seed: int = 0
    n_train: int = 24000
    epochs: int = 8
    batch_size: int = 64
    lr: float = 4e-3
    weight_decay: float = 5e-4
    pct_start: float = 0.2
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    hidden_dim: int = 64
    stem_blocks: int = 1  # Conv-BN-ReLU blocks at 48x48 (2 is ~0.1 % better and ~1.7x slower on a CPU)
    eval_n: int = 2000
    val_n: int = 1000  # test split, seed EVAL_SEED + 1: monitored per epoch, and fits the temperature
    logit_cap: float = 12.0  # see choose_temperature


DEFAULT_RECIPES: dict[str, DemoRecipe] = {
    "demo-gcn": DemoRecipe(name="demo-gcn"),
    "demo-liw": DemoRecipe(name="demo-liw"),
}


class EpochBatches:
    """``fit``'s batches: epoch -> (images float [0,1] channels-last, labels float), shuffled by a
    generator seeded with (seed, epoch); the ragged tail of a permutation is dropped."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int) -> None:
        self.images, self.labels, self.batch_size, self.seed = images, labels, batch_size, seed

    def __len__(self) -> int:
        return self.images.shape[0] // self.batch_size

    def __call__(self, epoch: int) -> _SizedBatches:
        return _SizedBatches(self, epoch)


class _SizedBatches:
    def __init__(self, owner: EpochBatches, epoch: int) -> None:
        self.owner, self.epoch = owner, epoch

    def __len__(self) -> int:
        return len(self.owner)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        o = self.owner
        g = torch.Generator().manual_seed(o.seed * 100_003 + self.epoch)
        perm = torch.randperm(o.images.shape[0], generator=g)
        for b in range(len(o)):
            idx = perm[b * o.batch_size : (b + 1) * o.batch_size]
            x = o.images[idx].float().div_(255.0).contiguous(memory_format=torch.channels_last)
            yield x, o.labels[idx].float()


def choose_temperature(logits: torch.Tensor, labels: torch.Tensor, logit_cap: float = 12.0,
                       quantile: float = 0.999) -> tuple[float, float]:
    """(temperature to fold in, NLL-optimal temperature) from held-out logits.

    Trained to near-zero loss, both demo models give logits of 20 and more, whose sigmoid is
    exactly 1 in float32: no gradient, so no attack can move such a label (MLA-LP clamps outputs
    to [1e-6, 1 - 1e-6], |logit| <= 13.8). Dividing the logits by a temperature changes no
    prediction at 0.5 and no ranking. We take the larger of the temperature that minimises the
    held-out BCE (temperature scaling, Guo et al. 2017) and the one that brings the ``quantile``
    of |logit| down to ``logit_cap``.
    """
    z, y = logits.detach().double().cpu(), labels.double().cpu()
    grid = torch.exp(torch.linspace(np.log(0.25), np.log(50.0), 800, dtype=torch.float64))
    nll = torch.stack([F.binary_cross_entropy_with_logits(z / t, y) for t in grid])
    t_nll = float(grid[int(torch.argmin(nll))])
    t_cap = float(torch.quantile(z.abs().flatten(), quantile)) / logit_cap
    return max(t_nll, t_cap), t_nll


def bce_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return F.binary_cross_entropy_with_logits(model(x), y)


def liw_training_loss(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    from ..models.liw import liw_loss

    x, y = batch
    return liw_loss(torch.sigmoid(model(x)), y)


@torch.no_grad()
def predict_probabilities(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Sigmoid outputs (N, l) of scenes (uint8, or float in [0,1]), in eval mode."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for lo in range(0, images.shape[0], batch_size):
        x = images[lo : lo + batch_size].to(dev)
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        out.append(model.probabilities(x).cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, 0)


def evaluate_demo_model(model: torch.nn.Module, eval_n: int = 2000, gallery: Any = None) -> dict[str, Any]:
    """Quality on eval_n held-out test scenes, on the check subset, and on the gallery."""
    from ..data.demo import generate_scenes, load_gallery
    from .quality import classification_report

    x, y = generate_scenes(eval_n, EVAL_SEED, "test")
    p = predict_probabilities(model, x)
    held_out = classification_report(p, y, threshold=model.threshold)
    check = classification_report(p[:CHECK_N], y[:CHECK_N], threshold=model.threshold)
    gal = gallery if gallery is not None else load_gallery()
    pg = predict_probabilities(model, gal.images())
    gal_report = classification_report(pg, gal.labels(), threshold=model.threshold)
    correct = ((pg >= model.threshold) == gal.labels()).all(1)
    return {
        "held_out": {"split": "test", "seed": EVAL_SEED, **held_out},
        "check_subset": {"split": "test", "seed": EVAL_SEED, "n": min(CHECK_N, eval_n), **check},
        "gallery": {**gal_report, "exactly_right": int(correct.sum()), "scenes": int(correct.numel()),
                    "wrong_ids": [gal.ids()[i] for i in torch.nonzero(~correct).flatten().tolist()]},
    }


def train_demo(recipe: DemoRecipe, out_dir: str | Path, progress: bool = True,
               checkpoint_dir: str | Path | None = None, device: str | None = "cpu") -> dict[str, Any]:
    """Train one demo model from scratch, evaluate it, write <name>.pt; returns its quality entry."""
    from ..data.demo import (
        DEMO_LABELS,
        cooccurrence_counts,
        generate_scenes,
        load_gallery,
    )
    from ..device import resolve_device
    from ..models.demo import (
        build_demo_model,
        fold_temperature,
        model_kind,
        one_hot_embeddings,
        save_demo_model,
    )
    from ..models.gcn import cooccurrence_adjacency
    from .loop import fit
    from .quality import classification_report

    kind = model_kind(recipe.name)
    load_gallery()  # the final evaluation needs it: fail now rather than after training
    t_start = time.perf_counter()
    t0 = time.perf_counter()
    images, labels = generate_scenes(recipe.n_train, recipe.seed, "train")
    gen_seconds = time.perf_counter() - t0
    counts, nums = cooccurrence_counts(labels)
    arch = {"channels": list(recipe.channels), "input_size": [96, 96], "hidden_dim": recipe.hidden_dim,
            "stem_blocks": recipe.stem_blocks}
    torch.manual_seed(recipe.seed)
    if kind == "gcn":
        model = build_demo_model("gcn", DEMO_LABELS, arch, word_vectors=one_hot_embeddings(len(DEMO_LABELS)),
                                 adjacency=cooccurrence_adjacency(counts, nums))
        loss_fn = bce_loss
    else:
        model = build_demo_model("liw", DEMO_LABELS, arch)
        loss_fn = liw_training_loss
    model = model.to(resolve_device(device), memory_format=torch.channels_last)
    steps_per_epoch = recipe.n_train // recipe.batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, pct_start=recipe.pct_start,
                                                total_steps=max(1, steps_per_epoch * recipe.epochs))
    xv, yv = generate_scenes(recipe.val_n, EVAL_SEED + 1, "test") if recipe.val_n else (None, None)

    def monitor(m: torch.nn.Module, epoch: int) -> dict[str, float]:
        if xv is None:
            return {}
        r = classification_report(predict_probabilities(m, xv), yv, threshold=m.threshold)
        return {"val_micro_f1": r["micro_f1"], "val_exact_match": r["exact_match"]}

    ckpt = Path(checkpoint_dir) / f"{recipe.name}.ckpt" if checkpoint_dir else None
    t0 = time.perf_counter()
    history = fit(model, EpochBatches(images, labels, recipe.batch_size, recipe.seed), loss_fn, opt,
                  recipe.epochs, scheduler=sched, scheduler_interval="step", checkpoint_path=ckpt,
                  progress=progress, eval_fn=monitor)
    train_seconds = time.perf_counter() - t0
    model = model.eval().to("cpu", memory_format=torch.contiguous_format)
    temperature = {"used": 1.0, "nll_optimal": None}
    if xv is not None:
        with torch.no_grad():
            val_logits = torch.cat([model(xv[i : i + 256].float().div(255.0)) for i in range(0, len(xv), 256)])
        used, t_nll = choose_temperature(val_logits, yv, recipe.logit_cap)
        fold_temperature(model, used)
        temperature = {"used": used, "nll_optimal": t_nll, "logit_cap": recipe.logit_cap, "quantile": 0.999,
                       "fitted_on": f"{recipe.val_n} test-split scenes, seed {EVAL_SEED + 1}"}
    quality = evaluate_demo_model(model, recipe.eval_n)
    entry = {
        "recipe": asdict(recipe),
        "kind": kind,
        "optimizer": f"AdamW(lr={recipe.lr}, weight_decay={recipe.weight_decay}) + OneCycleLR per batch",
        "loss": "mean BCE with logits" if kind == "gcn" else "liw_loss (eq. 19, lambda=0.5) on sigmoid outputs",
        "temperature": temperature,
        **quality,
        "train_seconds": round(train_seconds, 1),
        "data_seconds": round(gen_seconds, 1),
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "history": history,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    save_demo_model(model, recipe.name, Path(out_dir) / f"{recipe.name}.pt", arch,
                    extra={"train_seeds": {"scenes": recipe.seed, "torch": recipe.seed},
                           "cooccurrence_counts": torch.from_numpy(counts), "label_counts": torch.from_numpy(nums),
                           "n_train": recipe.n_train, "temperature": float(temperature["used"])})
    if ckpt is not None and ckpt.is_file():
        ckpt.unlink()  # finished: the weights file is the result
        if not any(ckpt.parent.iterdir()):
            ckpt.parent.rmdir()
    return entry


def environment() -> dict[str, Any]:
    import PIL
    import skimage
    import sklearn

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "scikit-learn": sklearn.__version__, "scikit-image": skimage.__version__, "pillow": PIL.__version__,
            "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count()}


def write_quality(out_dir: Path, entries: dict[str, Any]) -> Path:
    """Merge entries into out_dir/quality.json (other models' entries are kept)."""
    path = out_dir / "quality.json"
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            data = {}
    data.setdefault("models", {}).update(entries)
    data["environment"] = environment()
    data["measured_with"] = "mlalp_core.experiments.metrics.classification_report at threshold 0.5"
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path
