"""The paper's training recipes for ML-GCN and ML-LIW on VOC (used by ``mlalp train``).

Training recipes (the paper, section IV-C, and REFERENCE.md):

- ML-GCN: ImageNet ResNet-101 trunk fine-tuned with the graph head; SGD (momentum 0.9, weight
  decay 1e-4), lr 0.01 for the graph convolutions and 0.001 for the trunk (ML-GCN's ``lrp``),
  x0.1 every 40 epochs, 100 epochs, batch 32, MultiLabelSoftMarginLoss; training images get
  ML-GCN's multi-scale crop + flip at 448x448; labels whose only objects are difficult count as
  positive in the loss (ML-GCN's training did so). The best epoch by validation mAP (difficult
  labels ignored, as ML-GCN's AP meter) is kept.
- ML-LIW: ImageNet Inception-v3 trunk frozen in eval mode, fc only, the LIW loss of eq. (19)
  (difficult labels excluded), Adam lr 1e-3, StepLR(30, 0.9), batch 100, 100 epochs, images
  resized to 299x299 without augmentation; the best epoch by validation loss is kept. The trunk
  is frozen and deterministic, so its 2048-d features are computed once and cached: training the
  head on them is the same computation as the authors' 100 full passes, minus the repetition.
- Data: VOC2007 trains on train and selects on val; VOC2012 trains on the seeded 80 % of train
  and selects on the other 20 % (its val split is the paper's test set).

Every epoch writes a resumable checkpoint (``train-checkpoint.pt``) through
:func:`mlalp_core.training.loop.fit`; rerunning the same command continues where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigurationError, DataError, InvalidInputError, MlalpError, exception_line
from ..progress import progress_bar
from .evaluation import masked_map, predict_dataset

TRAIN_CHECKPOINT = "train-checkpoint.pt"

# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """A training run; None fields take the recipe's value."""

    model: str  # "ml-gcn" or "ml-liw"
    voc_root: Path
    year: int
    out: Path
    epochs: int = 100
    batch_size: int | None = None
    lr: float | None = None
    image_size: int | None = None
    trunk_weights: Path | None = None
    random_trunk: bool = False  # skip the ImageNet trunk (smoke tests only)
    word_vectors: Path | None = None  # ML-GCN
    adjacency: Path | None = None  # ML-GCN; None: counted from the training labels
    device: str | None = None
    workers: int = 0
    limit: int | None = None  # use only the first N training and N validation images
    seed: int = 0
    resume: bool = True
    progress: bool = True
    cache_dir: Path | None = None


def paper_splits(root: Path, year: int, cache_dir: Path | None = None) -> tuple[Any, Any]:
    """(training, model-selection) splits of the paper, difficult labels marked invalid."""
    from ..data.voc import VOCDataset, paper_split

    cache = cache_dir if cache_dir is not None else None
    if year == 2007:
        return (VOCDataset(root, 2007, "train", difficult="ignore", cache_dir=cache),
                VOCDataset(root, 2007, "val", difficult="ignore", cache_dir=cache))
    if year == 2012:
        return paper_split(VOCDataset(root, 2012, "train", difficult="ignore", cache_dir=cache))
    raise ConfigurationError(f"--year must be 2007 or 2012, got {year}")


def _head(ds: Any, n: int | None) -> Any:
    from ..data.voc import VOCDataset, VOCSubset

    if n is None or n >= len(ds):
        return ds
    if isinstance(ds, VOCDataset):
        return ds.subset(range(n), ds.split)
    return VOCSubset(ds.base, ds.indices[:n], ds.split)


class _AugmentedVOC(torch.utils.data.Dataset):
    """Training images (full size from disk, then ML-GCN's augmentation) and loss targets."""

    def __init__(self, ds: Any, size: tuple[int, int], targets: torch.Tensor) -> None:
        self.ds, self.size, self.targets = ds, size, targets

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        from ..data.images import load_tensor
        from ..models.ml_gcn import training_augment

        path = self.ds.image_path(i)
        try:
            x = load_tensor(path, None, name=str(path))
        except InvalidInputError as exc:
            raise DataError(str(exc)) from None
        return training_augment(x, self.size), self.targets[i]


def train_ml_gcn(cfg: TrainConfig) -> dict[str, Any]:
    """ML-GCN's recipe; returns {'history', 'best', 'model_file'}."""
    from ..device import resolve_device
    from ..models import ml_gcn
    from ..models.gcn import cooccurrence_adjacency
    from .loop import fit

    if cfg.word_vectors is None:
        raise ConfigurationError("ML-GCN needs label word vectors: pass --word-vectors voc_glove_word2vec.pkl "
                                 "(or set MLALP_MLGCN_WORD_VECTORS)")
    device = resolve_device(cfg.device)
    size = (cfg.image_size or 448,) * 2
    train_ds, val_ds = paper_splits(Path(cfg.voc_root), cfg.year, cfg.cache_dir)
    train_ds, val_ds = _head(train_ds, cfg.limit), _head(val_ds, cfg.limit)
    if cfg.adjacency is not None:
        adjacency = ml_gcn.load_adjacency(cfg.adjacency)
    else:
        adjacency = cooccurrence_adjacency(*ml_gcn.cooccurrence_from_labels(train_ds.labels()), t=0.4)
    features = ml_gcn.resnet101_features() if cfg.random_trunk else ml_gcn.imagenet_resnet101_features(cfg.trunk_weights)
    torch.manual_seed(cfg.seed)
    model = ml_gcn.build_ml_gcn(cfg.word_vectors, adjacency, features=features, input_size=size).to(device)
    if cfg.random_trunk:
        from ..data.base import stack_images

        probe = stack_images(train_ds, list(range(min(8, len(train_ds)))), size).to(device)
        calibrate_batchnorm(model.features, model.normalize(probe))

    targets = (train_ds.labels() | ~train_ds.valid()).float()  # ML-GCN: difficult-only -> positive
    data = _AugmentedVOC(train_ds, size, targets)
    batch = cfg.batch_size or 32

    def batches(epoch: int) -> Iterator:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        return iter(torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, generator=g,
                                                num_workers=cfg.workers, drop_last=False))

    def loss_fn(m: torch.nn.Module, b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = b
        return ml_gcn.paper_loss(m(x), y)

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / TRAIN_CHECKPOINT
    best_file = out / "ml-gcn-best.pt"
    best_note = out / "best.json"  # the best epoch so far, for a resumed run
    best: dict[str, Any] = {"val_map": None, "epoch": None}
    if cfg.resume and ckpt.is_file() and best_note.is_file():
        best.update(json.loads(best_note.read_text()))

    def eval_fn(m: torch.nn.Module, epoch: int) -> dict[str, float]:
        probs, labels, valid = predict_dataset(m, val_ds, batch_size=max(1, batch // 2))
        logits = torch.logit(probs.double().clamp(1e-7, 1 - 1e-7))
        val_loss = float(ml_gcn.paper_loss(logits, (labels | ~valid).double()))
        val_map = masked_map(probs, labels, valid)
        if best["val_map"] is None or val_map > best["val_map"]:
            best.update(val_map=val_map, epoch=epoch + 1)
            ml_gcn.save_ml_gcn(m, best_file, epoch=epoch + 1, val_map=val_map, year=cfg.year)
            best_note.write_text(json.dumps(best))
        return {"val_loss": val_loss, "val_map": val_map}

    optimizer = ml_gcn.paper_optimizer(model, lr=cfg.lr or 0.01)
    scheduler = ml_gcn.paper_scheduler(optimizer)
    try:
        history = fit(model, batches, loss_fn, optimizer, cfg.epochs, scheduler=scheduler, checkpoint_path=ckpt,
                      resume=cfg.resume, progress=cfg.progress, eval_fn=eval_fn)
    except MlalpError as exc:  # errors from DataLoader workers arrive with a traceback attached
        raise type(exc)(exception_line(exc, last=True)) from None
    ml_gcn.save_ml_gcn(model, out / "ml-gcn-last.pt", epoch=len(history), year=cfg.year)
    (out / "history.json").write_text(json.dumps(history, indent=1))
    return {"history": history, "best": best["val_map"], "best_epoch": best["epoch"], "model_file": best_file}


@torch.no_grad()
def calibrate_batchnorm(module: torch.nn.Module, images: torch.Tensor) -> None:
    """Set every BatchNorm's running statistics to those of ``images`` (one forward in train
    mode with a cumulative average), then return to eval mode.

    Random-weight networks otherwise run eval-mode BatchNorm on its initial statistics (0, 1),
    so activations shrink to denormal floats (slow on CPUs) or blow up layer after layer; with
    calibrated statistics they have the scale of a trained network's. For smoke tests and
    benchmarks only: a real model's statistics come from its checkpoint.
    """
    bns = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.training) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        module(images)
    finally:
        for m, (mom, _) in zip(bns, saved):
            m.momentum = mom
        module.eval()


def _trunk_features(model: Any, ds: Any, size: tuple[int, int], batch: int, cache: Path, progress: bool) -> torch.Tensor:
    """The frozen trunk's (N, 2048) features of a split, cached on disk by ids and trunk."""
    from ..data.base import stack_images

    ids = ds.ids()
    tag = f"{model.source or 'random'}|{size}"
    if cache.is_file():
        try:
            c = torch.load(cache, map_location="cpu", weights_only=True)
            if c.get("ids") == ids and c.get("tag") == tag:
                return c["features"]
        except Exception:  # noqa: BLE001 - a damaged cache is recomputed
            pass
    device = next(model.parameters()).device
    chunks = []
    with torch.no_grad():
        model.eval()
        starts = range(0, len(ds), batch)
        for lo in progress_bar(starts, progress, desc=f"features {ds.name}", total=len(starts), unit="batch"):
            x = stack_images(ds, list(range(lo, min(lo + batch, len(ds)))), size).to(device)
            chunks.append(model.trunk(model.normalize(x)).flatten(1).float().cpu())
    feats = torch.cat(chunks)
    tmp = cache.with_name(cache.name + ".tmp")
    torch.save({"ids": ids, "tag": tag, "features": feats}, tmp)
    tmp.replace(cache)
    return feats


def train_ml_liw(cfg: TrainConfig) -> dict[str, Any]:
    """ML-LIW's recipe on cached trunk features; returns {'history', 'best', 'model_file'}."""
    from ..device import resolve_device
    from ..models import ml_liw
    from .loop import fit

    device = resolve_device(cfg.device)
    size = (cfg.image_size or 299,) * 2
    if size[0] < 75:
        raise ConfigurationError("Inception-v3 needs images of at least 75x75 (--image-size)")
    train_ds, val_ds = paper_splits(Path(cfg.voc_root), cfg.year, cfg.cache_dir)
    train_ds, val_ds = _head(train_ds, cfg.limit), _head(val_ds, cfg.limit)
    trunk = ml_liw.inception_v3_trunk() if cfg.random_trunk else ml_liw.imagenet_inception_v3_trunk(cfg.trunk_weights)
    torch.manual_seed(cfg.seed)
    model = ml_liw.MLLIW(trunk=trunk, input_size=size).to(device).eval()
    model.source = "random-trunk" if cfg.random_trunk else str(cfg.trunk_weights or "imagenet")
    if cfg.random_trunk:
        from ..data.base import stack_images

        probe = stack_images(train_ds, list(range(min(8, len(train_ds)))), size).to(device)
        calibrate_batchnorm(model.trunk, model.normalize(probe))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    batch = cfg.batch_size or 100
    f_train = _trunk_features(model, train_ds, size, min(batch, 32), out / f"features-{train_ds.name}.pt", cfg.progress)
    f_val = _trunk_features(model, val_ds, size, min(batch, 32), out / f"features-{val_ds.name}.pt", cfg.progress)
    y_train, v_train = train_ds.labels(), train_ds.valid()
    y_val, v_val = val_ds.labels(), val_ds.valid()

    def batches(epoch: int) -> Iterator:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        perm = torch.randperm(len(f_train), generator=g)
        for lo in range(0, len(perm), batch):
            i = perm[lo:lo + batch]
            yield f_train[i], y_train[i], v_train[i]

    def loss_fn(fc: torch.nn.Module, b: tuple) -> torch.Tensor:
        f, y, v = b
        return ml_liw.paper_loss(fc(f), y, v)

    ckpt = out / TRAIN_CHECKPOINT
    best_file = out / "ml-liw-best.pt"
    # Only the head changes, so the best epoch's head is kept (small) and the full model file is
    # written once at the end; a resumed run picks the kept head up.
    best_head = out / "best-head.pt"
    best: dict[str, Any] = {"val_loss": None, "epoch": None, "fc": None}
    if cfg.resume and best_head.is_file() and ckpt.is_file():
        saved = torch.load(best_head, map_location="cpu", weights_only=True)
        best.update(val_loss=saved["val_loss"], epoch=saved["epoch"], fc=saved["fc"])

    @torch.no_grad()
    def eval_fn(fc: torch.nn.Module, epoch: int) -> dict[str, float]:
        losses = []
        for lo in range(0, len(f_val), batch):
            sl = slice(lo, lo + batch)
            losses.append(float(ml_liw.paper_loss(fc(f_val[sl].to(device)), y_val[sl].to(device), v_val[sl].to(device))))
        val_loss = float(np.mean(losses))
        if best["val_loss"] is None or val_loss < best["val_loss"]:
            state = {k: v.detach().cpu().clone() for k, v in fc.state_dict().items()}
            best.update(val_loss=val_loss, epoch=epoch + 1, fc=state)
            tmp = best_head.with_name(best_head.name + ".tmp")
            torch.save({"val_loss": val_loss, "epoch": epoch + 1, "fc": state}, tmp)
            tmp.replace(best_head)
        return {"val_loss": val_loss}

    optimizer = ml_liw.paper_optimizer(model, lr=cfg.lr or 1e-3)
    scheduler = ml_liw.paper_scheduler(optimizer)
    history = fit(model.fc, batches, loss_fn, optimizer, cfg.epochs, scheduler=scheduler, checkpoint_path=ckpt,
                  resume=cfg.resume, progress=cfg.progress, eval_fn=eval_fn)
    ml_liw.save_ml_liw(model, out / "ml-liw-last.pt", epoch=len(history), year=cfg.year)
    if best["fc"] is not None:
        last_fc = {k: v.clone() for k, v in model.fc.state_dict().items()}
        model.fc.load_state_dict(best["fc"])
        ml_liw.save_ml_liw(model, best_file, epoch=best["epoch"], val_loss=best["val_loss"], year=cfg.year)
        model.fc.load_state_dict(last_fc)
    (out / "history.json").write_text(json.dumps(history, indent=1))
    return {"history": history, "best": best["val_loss"], "best_epoch": best["epoch"], "model_file": best_file}


TRAINERS: dict[str, Callable[[TrainConfig], dict[str, Any]]] = {"ml-gcn": train_ml_gcn, "ml-liw": train_ml_liw}
