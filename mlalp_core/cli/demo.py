"""The demo's commands: ``mlalp make-gallery`` and ``mlalp train-demo``.

Registered in :mod:`mlalp_core.cli.main`; heavy imports stay inside the commands.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict
from pathlib import Path

from ..errors import ConfigurationError
from ..models import DEMO_MODEL_NAMES


def _cmd_make_gallery(args: argparse.Namespace) -> int:
    from ..data.demo import GALLERY_SEED, make_gallery

    if args.seed is None:
        args.seed = GALLERY_SEED
    root = make_gallery(args.out, n=args.n, seed=args.seed)
    print(f"wrote {args.n} scenes, labels.csv and manifest.json to {root}")
    return 0


def _cmd_train_demo(args: argparse.Namespace) -> int:
    import torch

    from ..models.demo import MODELS_DIR
    from ..training.demo import DEFAULT_RECIPES, DemoRecipe, train_demo, write_quality

    if args.threads is not None and args.threads < 1:
        raise ConfigurationError(f"--threads must be >= 1, got {args.threads}")
    # One core is left to the rest of the machine: on a busy 2-core CPU, two threads that wait
    # on each other at every barrier train several times slower than one.
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) - 1))
    names = DEMO_MODEL_NAMES if args.model == "all" else (args.model,)
    out = Path(args.out) if args.out else MODELS_DIR
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        recipe = DemoRecipe(**asdict(DEFAULT_RECIPES[name]))
        for key in ("epochs", "seed", "n_train", "eval_n"):
            value = getattr(args, key)
            if value is not None:
                setattr(recipe, key, value)
        if recipe.epochs < 1 or recipe.n_train < recipe.batch_size or recipe.eval_n < 1:
            raise ConfigurationError("--epochs and --eval-n must be >= 1 and --n-train >= the batch size "
                                     f"({recipe.batch_size})")
        print(f"training {name}: {recipe.n_train} scenes x {recipe.epochs} epochs, seed {recipe.seed}, "
              f"{torch.get_num_threads()} threads")
        entry = train_demo(recipe, out, progress=not args.quiet, checkpoint_dir=out / ".checkpoints")
        write_quality(out, {name: entry})
        h, g = entry["held_out"], entry["gallery"]
        print(f"{name}: held-out micro-F1 {h['micro_f1']:.4f} (n={h['examples']}), exact match "
              f"{h['exact_match']:.4f}; gallery exactly right {g['exactly_right']}/{g['scenes']}; "
              f"trained in {entry['train_seconds']:.0f} s -> {out / (name + '.pt')}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("make-gallery", help="regenerate the demo gallery (held-out test scenes as PNG)")
    p.add_argument("--out", default=None, help="folder to write (default: the bundled assets/demo/gallery)")
    p.add_argument("--n", type=int, default=64, help="number of scenes (default 64)")
    p.add_argument("--seed", type=int, default=None, help="test-split seed (default: the bundled gallery's)")
    p.set_defaults(func=_cmd_make_gallery)

    p = subparsers.add_parser("train-demo", help="train the demo models from scratch and measure their quality")
    p.add_argument("--model", choices=[*DEMO_MODEL_NAMES, "all"], default="all")
    p.add_argument("--out", default=None, help="folder for <name>.pt and quality.json (default: assets/models)")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    p.add_argument("--seed", type=int, default=None, help="override the recipe's seed")
    p.add_argument("--n-train", dest="n_train", type=int, default=None, help="override the number of training scenes")
    p.add_argument("--eval-n", dest="eval_n", type=int, default=None, help="held-out scenes to evaluate on")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: one less than the CPU count)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_train_demo)
