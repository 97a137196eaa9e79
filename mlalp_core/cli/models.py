"""Commands for the paper's models and real data: ``mlalp models``, ``datasets``, ``check-model``,
``train`` and ``eval``. The work itself is in :mod:`mlalp_core.training.evaluation` (Table I, the model
check) and :mod:`mlalp_core.training.paper` (the training recipes).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, InvalidInputError
from ..training.evaluation import TABLE_ONE_ROWS, check_model, predict_dataset, table_one
from ..training.paper import TRAINERS, TrainConfig
from .output import writable_output, write_output

# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def _fmt_labels(names: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")






def _print_summary(name: str, info: dict[str, Any], model: Any) -> None:
    print(f"{name}: OK")
    rows = [("model", info.get("model", info["class"]))]
    if getattr(model, "source", None):
        rows.append(("weights", model.source))
    meta = getattr(model, "checkpoint_info", None)
    if meta:
        rows.append(("checkpoint", ", ".join(f"{k} {v}" for k, v in meta.items())))
    rows += [
        ("parameters", f"{info['parameters']:,}"),
        ("input size", f"{info['input_size'][0]}x{info['input_size'][1]} (RGB in [0,1])"),
        (f"labels ({info['num_labels']})", _fmt_labels(info["labels"], 20)
         + (f"  [{model.label_set}'s label set]" if getattr(model, "label_set", None) else "")),
        ("threshold", f"{info['threshold']}"),
        ("forward", f"a blank image and {info['images'] - 1} gallery scenes in {info['forward_s']:.2f} s on "
                    f"{info['device']}; probabilities in [{info['prob_min']:.3f}, {info['prob_max']:.3f}]"),
    ]
    match = getattr(model, "adjacency_matches", None)
    if match is not None:
        rows.append(("adjacency", "the co-occurrence file reproduces the checkpoint's graph A" if match else
                     "the co-occurrence file does NOT reproduce the checkpoint's graph A (the checkpoint's is used)"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


def _cmd_check_model(args: argparse.Namespace) -> int:
    from ..settings import load_settings

    target = args.target
    if target == "ml-gcn" and args.checkpoint:
        from ..models.ml_gcn import load_ml_gcn

        model = load_ml_gcn(args.checkpoint, args.word_vectors, args.adjacency)
    elif target == "ml-liw" and args.checkpoint:
        from ..models.ml_liw import load_ml_liw

        model = load_ml_liw(args.checkpoint)
    elif target == "user":
        if not args.manifest:
            raise ConfigurationError("check-model user needs --manifest FILE")
        from ..models import BUILTIN_NAMES
        from ..models.user import load_user_model, read_manifest

        name = read_manifest(args.manifest).name
        if name in BUILTIN_NAMES:
            raise ConfigurationError(f"{args.manifest}: the name {name!r} is a built-in model's; rename the model "
                                     "in its manifest")
        model = load_user_model(args.manifest)
        target = model.manifest.name
    else:
        if args.word_vectors or args.adjacency or args.manifest:
            raise ConfigurationError(f"--word-vectors/--adjacency/--manifest need --checkpoint (or 'user'); "
                                     f"without them {target!r} is loaded from the settings")
        from ..models.registry import load_model

        model = load_model(target, device="cpu", settings=load_settings())  # check_model moves it
    info = check_model(model, args.device)
    _print_summary(target, info, model)
    return 0


# ---------------------------------------------------------------------------------------------
# models, datasets, train, eval
# ---------------------------------------------------------------------------------------------


def _model_state(info: Any, check: bool) -> tuple[str, str]:
    """(state, reason) of a listed model: what check-model says of it with ``check``; otherwise
    "available" only for models that ship with mlalp or live in this process; a configured file
    that was never run is "not checked"."""
    from ..errors import MlalpError
    from ..models.registry import load_model

    if not info.available:
        return "unavailable", info.reason
    if check:
        try:
            check_model(load_model(info.name, device="cpu"), "cpu")
        except MlalpError as exc:
            return "unavailable", str(exc) if info.name in str(exc) else f"{info.name}: {exc}"
        return "available", ""
    if info.kind in ("paper", "user"):
        return "not checked", (f"{info.name}: its files are in place but the network was not run: "
                               f"mlalp check-model {info.name} (or mlalp models --check)")
    return "available", ""


def _cmd_models(args: argparse.Namespace) -> int:
    from ..models.registry import list_models
    from ..settings import load_settings

    infos = list_models(load_settings())
    w = max(len(i.name) for i in infos)
    for i in infos:
        size = f"{i.input_size[0]}x{i.input_size[1]}" if i.input_size else "?"
        labels = f"{i.num_labels} labels" if i.num_labels else "? labels"
        state, reason = _model_state(i, args.check)
        print(f"{i.name:<{w}}  {state:<11}  {size:>7}  {labels:>9}  {i.description}")
        if reason:
            print(f"{'':<{w}}  -> {reason}")
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    from ..data.registry import list_datasets
    from ..settings import load_settings

    infos = list_datasets(load_settings())
    w = max(len(i.name) for i in infos)
    for i in infos:
        state = "available" if i.available else "unavailable"
        print(f"{i.name:<{w}}  {state:<11}  {i.description}")
        if not i.available:
            print(f"{'':<{w}}  -> {i.reason}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from ..settings import load_settings

    s = load_settings()
    root = args.voc_root or s.voc_root
    if root is None:
        raise ConfigurationError("give --voc-root DIR (the VOCdevkit folder) or set MLALP_VOC_ROOT")
    wv = args.word_vectors or (s.mlgcn_word_vectors if args.model == "ml-gcn" else None)
    cfg = TrainConfig(
        model=args.model, voc_root=Path(root), year=args.year, out=Path(args.out), epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, image_size=args.image_size, trunk_weights=args.trunk_weights,
        random_trunk=args.random_trunk, word_vectors=wv, adjacency=args.adjacency, device=args.device,
        workers=args.workers, limit=args.limit, seed=args.seed, resume=not args.restart, progress=not args.quiet,
        cache_dir=s.cache_dir,
    )
    if cfg.epochs < 1:
        raise ConfigurationError("--epochs must be at least 1")
    result = TRAINERS[args.model](cfg)
    h = result["history"]
    last = h[-1] if h else {}
    summary = ", ".join(f"{k} {v:.4f}" for k, v in last.items() if k not in ("epoch", "batches", "seconds"))
    print(f"{args.model}: {len(h)} epoch(s); last: {summary}")
    print(f"best model: {result['model_file']}  (use it with MLALP_{args.model.upper().replace('-', '')}_CHECKPOINT)")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..data.base import check_labels_match
    from ..data.registry import load_dataset
    from ..models.registry import load_model
    from ..settings import load_settings

    if args.batch_size < 1:
        raise InvalidInputError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise InvalidInputError(f"--limit must be at least 1 (leave it out for the whole data set), got {args.limit}")
    json_out = writable_output(args.json, "--json", force=args.force) if args.json else None
    s = load_settings()
    model = load_model(args.model, device=args.device, settings=s)
    ds = load_dataset(args.data, args.split, settings=s)
    check_labels_match(args.model, model.label_names, args.data, ds.label_names)
    t0 = time.perf_counter()
    scores, labels, _ = predict_dataset(model, ds, batch_size=args.batch_size, limit=args.limit,
                                        progress=not args.quiet)
    report = table_one(scores, labels, model.threshold)
    dt = time.perf_counter() - t0
    print(f"Table I: {args.model} on {ds.name} ({report['examples']} images, threshold {model.threshold}, "
          f"{dt:.1f} s)")
    for key, title in TABLE_ONE_ROWS:
        print(f"  {title:<18} {report[key]:.4f}")
    if json_out is not None:
        write_output(json_out, json.dumps({"model": args.model, "data": ds.name, **report}, indent=1), "--json")
        print(f"written to {json_out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the models mlalp knows and whether they can be used")
    p.add_argument("--check", action="store_true",
                   help="load and run every usable model as check-model does (slow for large models)")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("datasets", help="list the data sets mlalp knows and whether they can be used")
    p.set_defaults(func=_cmd_datasets)

    p = sub.add_parser("check-model", help="load a model exactly as an attack would and run it on a blank image "
                                           "and a few gallery scenes",
                       description="Examples: check-model ml-gcn --checkpoint voc_checkpoint.pth.tar --word-vectors "
                                   "voc_glove_word2vec.pkl; check-model ml-liw --checkpoint FILE; check-model user "
                                   "--manifest FILE; check-model NAME (from the settings)")
    p.add_argument("target", help="ml-gcn, ml-liw, user, or a registered model name")
    p.add_argument("--checkpoint", type=Path, help="ML-GCN / ML-LIW weights file")
    p.add_argument("--word-vectors", type=Path, help="ML-GCN label word vectors (voc_glove_word2vec.pkl)")
    p.add_argument("--adjacency", type=Path, help="ML-GCN co-occurrence counts (voc_adj.pkl), checked against A")
    p.add_argument("--manifest", type=Path, help="a user model's manifest (TOML or JSON)")
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda[:N]")
    p.set_defaults(func=_cmd_check_model)

    p = sub.add_parser("train", help="train ML-GCN or ML-LIW on VOC with the paper's recipe (resumable)")
    p.add_argument("model", choices=sorted(TRAINERS))
    p.add_argument("--voc-root", type=Path, default=None, help="VOCdevkit folder (default: MLALP_VOC_ROOT)")
    p.add_argument("--year", type=int, choices=(2007, 2012), required=True)
    p.add_argument("--out", required=True, help="output folder: checkpoints, best model, history")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=None, help="default: 32 (ML-GCN), 100 (ML-LIW)")
    p.add_argument("--lr", type=float, default=None, help="default: 0.01 (ML-GCN), 0.001 (ML-LIW)")
    p.add_argument("--image-size", type=int, default=None, help="default: 448 (ML-GCN), 299 (ML-LIW)")
    p.add_argument("--trunk-weights", type=Path, default=None,
                   help="ImageNet weights file (default: torchvision's file in torch hub's cache)")
    p.add_argument("--random-trunk", action="store_true", help="no ImageNet weights (smoke tests only)")
    p.add_argument("--word-vectors", type=Path, default=None, help="ML-GCN: voc_glove_word2vec.pkl")
    p.add_argument("--adjacency", type=Path, default=None,
                   help="ML-GCN: voc_adj.pkl (default: counted from the training labels)")
    p.add_argument("--workers", type=int, default=0, help="image-loading processes (ML-GCN)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N training/validation images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda[:N]")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("eval", help="classification quality (the paper's Table I) of a model on a data set")
    p.add_argument("model", help="a registered model name (see `mlalp models`)")
    p.add_argument("--data", required=True, help="a data set name (see `mlalp datasets`)")
    p.add_argument("--split", default=None, help="default: the data set's test split")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--limit", type=int, default=None, help="only the first N images")
    p.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    p.add_argument("--force", action="store_true", help="let --json replace a file mlalp did not write")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda[:N]")
    p.set_defaults(func=_cmd_eval)
