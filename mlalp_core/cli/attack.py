"""``mlalp attack``: one image from the shell, with the app's code paths (the same image loading,
targets, attacks, metrics and paper figures), written to files a paper or a script can use."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from ..errors import InvalidInputError
from .output import writable_output


def _target(args: argparse.Namespace, names: list[str], pred: Any, index: int) -> Any:
    from ..attacks.targets import add, custom, hide, hide_one

    chosen = [w for w in (args.hide, args.add, args.labels) if w is not None]
    if len(chosen) > 1:
        raise InvalidInputError("give one of --hide, --add or --labels (or none: hide one label at random)")
    if args.hide is not None:
        return hide(pred, args.hide, names)
    if args.add is not None:
        return add(pred, args.add, names)
    if args.labels is not None:
        import torch

        unknown = [n for n in args.labels if n not in names]
        if unknown:
            raise InvalidInputError(f"unknown label(s) {', '.join(unknown)}; the model's labels: {', '.join(names)}")
        return custom(pred, torch.tensor([[n in args.labels for n in names]]))
    return hide_one(pred, seed=args.seed, example_ids=[index])


def _objective(args: argparse.Namespace) -> str:
    """The target as the command line gave it."""
    for flag in ("hide", "add", "labels"):
        if getattr(args, flag) is not None:
            return f"--{flag} {' '.join(getattr(args, flag))}"
    return f"hide-one (seed {args.seed})"


def _cmd_attack(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from ..attacks import DISPLAY_NAMES, file_settings, make_attack
    from ..data.base import check_labels_match
    from ..data.images import load_image, pil_to_tensor, tensor_to_pil
    from ..data.registry import find_image
    from ..experiments.metrics import attack_metrics
    from ..models.outputs import checked_probabilities
    from ..models.registry import load_model
    from ..settings import load_settings
    from ..viz.paper import figure_bytes, result_panel
    from .bench import parse_sets, unused_setting_warnings

    formats = [f.strip().lower() for f in args.format.split(",") if f.strip()] if args.figures else []
    bad = [f for f in formats if f not in ("pdf", "svg", "png")]
    if bad:
        raise InvalidInputError(f"--format takes pdf, svg and/or png (comma-separated), got {', '.join(bad)}")
    settings = load_settings()
    attack_name = args.attack.strip().lower()
    sets = parse_sets(args.set, file_settings(settings)).get(attack_name, {})
    if sets:  # (parsed, so the attack is known)
        unused_setting_warnings({attack_name: sets}, "attack")
    # every file in one folder: --out, else the --figures folder, else here
    out = writable_output(args.out or args.figures or ".", "--out" if args.out else "--figures", folder=True)
    figures = writable_output(args.figures, "--figures", folder=True) if args.figures else None
    model = load_model(args.model, device=args.device, settings=settings)
    found = find_image(args.image, model.input_size, args.data, args.split, settings)
    names = list(model.label_names)
    if found.label_names is not None:
        check_labels_match(args.model, names, args.data, found.label_names)
    for note in found.notes:
        print(f"note: {note}")
    x = found.x[None]
    dev = model.norm_mean.device  # where load_model put it (a network may have no parameter)
    # the model's outputs on this image are checked before its prediction builds the target
    probs = checked_probabilities(model, x.to(dev), [f"example {found.name}"])
    pred = (probs >= model.threshold).cpu()
    target = _target(args, names, pred, found.index)
    attack = make_attack(attack_name, model, device=args.device, **sets)
    problem = attack.target_problem(target[0])
    if problem:  # bench's refusal, before any work
        raise InvalidInputError(f"{attack_name} cannot pursue the target {_objective(args)}: {problem}; choose "
                                "another target, or another attack")
    t0 = time.perf_counter()
    result = attack(x, target, example_ids=[found.name])
    seconds = time.perf_counter() - t0
    metrics = attack_metrics(result)[0]
    stem = f"{found.name}_{attack_name}"

    adv_png = out / f"{stem}_adversarial.png"
    tensor_to_pil(result.x_adv[0]).save(adv_png)
    pert = out / f"{stem}_perturbation.npy"
    np.save(pert, result.perturbation[0].numpy().astype(np.float32))
    # the PNG holds 8-bit pixels: say whether the attack survives that rounding
    with torch.no_grad():
        reread = pil_to_tensor(load_image(adv_png))[None].to(dev)
        png_ok = bool(((model.probabilities(reread)[0].cpu() >= result.threshold) == result.target[0]).all())
    before, after = result.probs_clean[0].tolist(), result.probs_adv[0].tolist()
    report = {
        "image": args.image, "example": found.name, "model": args.model, "attack": attack_name,
        "settings": result.params, "threshold": result.threshold,
        "target": [n for n, t in zip(names, result.target[0].tolist()) if t],
        "hidden": [n for n, p, t in zip(names, pred[0].tolist(), result.target[0].tolist()) if p and not t],
        "added": [n for n, p, t in zip(names, pred[0].tolist(), result.target[0].tolist()) if t and not p],
        "success": bool(result.success[0]), "success_as_8bit_png": png_ok,
        "metrics": {k: v for k, v in metrics.items() if k != "success"},
        "probabilities": {n: {"before": b, "after": a} for n, b, a in zip(names, before, after)},
        "note": result.notes[0] if result.notes else "", "image_notes": list(found.notes), "seconds": seconds,
        "files": {"adversarial": str(adv_png), "perturbation": str(pert)},
    }
    if figures is not None:
        fig = result_panel(x=result.x[0], x_adv=result.x_adv[0], r=result.perturbation[0], label_names=names,
                           probs_clean=result.probs_clean[0], probs_adv=result.probs_adv[0], target=result.target[0],
                           threshold=result.threshold, trace=result.trace[0], width=args.width,
                           title=f"{DISPLAY_NAMES.get(attack_name, attack_name)} on {found.name} ({args.model})")
        for fmt in formats:
            path = figures / f"{stem}_result.{fmt}"
            path.write_bytes(figure_bytes(fig, fmt, dpi=args.dpi))
            report["files"][f"figure_{fmt}"] = str(path)
    metrics_path = out / f"{stem}_metrics.json"
    report["files"]["metrics"] = str(metrics_path)
    metrics_path.write_text(json.dumps(report, indent=1))

    verdict = "reached the target" if result.success[0] else "did not reach the target"
    dist = (f"l_inf {metrics['linf']:.5f}, l_2 {metrics['l2']:.4f} ([0,1] units)" if metrics["linf"] is not None
            else "no distortion (the clean image)")
    print(f"{DISPLAY_NAMES.get(attack_name, attack_name)} on {found.name} ({args.model}): {verdict} in "
          f"{seconds:.2f} s; {dist}")
    if result.notes and result.notes[0]:
        print(f"  why: {result.notes[0]}")
    if not png_ok and result.success[0]:
        print("  note: rounded to 8-bit pixels (the PNG) the image no longer reaches the target; the exact "
              "perturbation is in the .npy file")
    for kind, path in report["files"].items():
        print(f"  {kind:<13} {path}")
    return 0


class _HelpWithAttacks(argparse.RawDescriptionHelpFormatter):
    """Lists the registry's attacks under --attack when the help is printed (importing the
    attacks loads torch: not for every run of ``mlalp``, only for its help)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if "--attack" in action.option_strings:
            from ..attacks import ATTACKS, PAPER_ATTACKS

            field = [a for a in ATTACKS if a not in PAPER_ATTACKS]
            return (f"the paper's {', '.join(PAPER_ATTACKS)}, or the field's {', '.join(field)} "
                    "(default: %(default)s)")
        return super()._get_help_string(action)

    def _split_lines(self, text: str, width: int) -> list[str]:
        import textwrap

        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)  # "ml-rank2" in one piece


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attack", help="attack one image (a gallery name, a data set index or a file) and write the results",
        description="Attack one image and write the adversarial image (PNG), the perturbation (.npy, [0,1] units), "
                    "a JSON of metrics and probabilities, and optionally the paper figure.",
        epilog="examples:\n"
               "  mlalp attack scene_005 --model demo-gcn --hide seven --attack mla-lp --figures out/ --format pdf,png\n"
               "  mlalp attack photo.jpg --model demo-liw --attack ml-cw --set ml-cw.max_iterations=200\n"
               "  mlalp attack 12 --model ml-gcn --data voc2007 --add person\n"
               "  mlalp attack scene_009 --attack pgd --figures results/   (every file into results/)",
        formatter_class=_HelpWithAttacks)
    p.add_argument("image", help="an image file, an example id of --data (e.g. scene_005) or its index")
    p.add_argument("--model", default="demo-gcn", help="a registered model (mlalp models)")
    p.add_argument("--data", default="demo", help="the data set IMAGE names an example of (default: the demo gallery)")
    p.add_argument("--split", default=None)
    g = p.add_argument_group("target (default: hide one predicted label at random, the paper's setting)")
    g.add_argument("--hide", nargs="+", metavar="LABEL", default=None, help="labels to hide")
    g.add_argument("--add", nargs="+", metavar="LABEL", default=None, help="labels to add")
    g.add_argument("--labels", nargs="+", metavar="LABEL", default=None, help="the whole label set after the attack")
    g.add_argument("--seed", type=int, default=0, help="hide-one's seed")
    p.add_argument("--attack", default="mla-lp", help="the attack (the list is filled in from the registry)")
    p.add_argument("--set", action="append", default=[], metavar="ATTACK.SETTING=VALUE",
                   help="an attack setting, e.g. --set mla-lp.box=true")
    p.add_argument("--out", default=None, help="folder for the image, the perturbation and the JSON (default: the "
                                               "--figures folder when given, so all files land in one folder; else here)")
    p.add_argument("--figures", default=None, help="also draw the paper figure (result panel) into this folder")
    p.add_argument("--format", default="pdf", help="figure formats: pdf, svg, png (comma-separated)")
    p.add_argument("--dpi", type=int, default=300, help="PNG resolution (and of rasters inside PDF/SVG)")
    p.add_argument("--width", default="page", choices=["page", "column"], help="figure width for a two-column paper")
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda[:N]")
    p.set_defaults(func=_cmd_attack)

