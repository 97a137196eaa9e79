"""``mlalp bench`` (run or resume a batch experiment) and ``mlalp report`` (tables from a store)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InvalidInputError, MlalpError
from .output import writable_output, write_output


def parse_sets(items: list[str] | None, base: dict[str, dict] | None = None) -> dict[str, dict]:
    """``attack.setting=value`` pairs, each value parsed by that attack's settings schema (on top
    of ``base``, e.g. mlalp.toml's ``[attacks.*]`` tables)."""
    from ..attacks import parse_settings
    from ..attacks.schema import parse_assignment

    out: dict[str, dict] = {k: dict(v) for k, v in (base or {}).items()}
    given: dict[tuple[str, str], str] = {}
    for item in items or []:
        attack, key, value = parse_assignment(item)
        shown = item if item.isprintable() else repr(item)  # one line, whatever was typed
        try:
            parsed = parse_settings(attack, {key: value}, f"--set {shown}", complete=False)
        except InvalidInputError as exc:
            if str(exc).startswith("--set"):
                raise
            raise InvalidInputError(f"--set {shown}: {exc}") from None
        for name in parsed:
            if (attack, name) in given:
                raise InvalidInputError(f"--set {attack}.{name} is given twice ({given[attack, name]} and {shown}): "
                                        "give each setting once")
            given[attack, name] = shown
        out.setdefault(attack, {}).update(parsed)
    return out


def unused_setting_warnings(sets: dict[str, dict], command: str) -> None:
    """One warning line per setting given that the attack's other settings make no use of
    (e.g. ``mla-lp.polish_steps`` without a polish): the run is what it would be without it."""
    from ..attacks import attack_class

    for attack, given in sets.items():
        schema = attack_class(attack).schema
        complete = {**schema.defaults(), **given}
        for name in sorted(schema.unused(complete) & set(given)):
            print(f"mlalp {command}: warning: {attack}.{name} has no effect here: it is "
                  f"{schema.setting(name).used_note()}", file=sys.stderr)


def _cmd_bench(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..attacks import ATTACKS, PAPER_ATTACKS, file_settings
    from ..experiments.reporting import export, table2
    from ..experiments.runner import (
        BenchConfig,
        init_distributed_from_env,
        run_benchmark,
    )
    from ..experiments.store import ResultsStore, discard_unused_store
    from ..settings import load_settings

    out = writable_output(args.out, "--out", folder=True) if args.out else None  # before hours of work
    rank, world, dist_dev = init_distributed_from_env(args.device)
    groups = {"all": list(ATTACKS), "paper": list(PAPER_ATTACKS),
              "linf": [a for a, c in ATTACKS.items() if c.norm == "linf"]}
    attacks = [a for name in args.attacks for a in groups.get(name.lower(), [name])]
    sets = parse_sets(args.set, file_settings())
    if rank == 0:
        unused_setting_warnings({a: v for a, v in sets.items() if a in attacks}, "bench")
    cfg = BenchConfig(models=args.models, dataset=args.data, split=args.split, attacks=attacks, n=args.limit,
                      seed=args.seed, batch_size=args.batch, device=dist_dev or args.device,
                      attack_settings=sets, store=args.store, precision=args.precision,
                      objective=args.objective, threads=args.threads)
    bars: dict[str, tqdm] = {}

    def progress(done: int, total: int, message: str) -> None:
        name = message.split(":", 1)[0]
        bar = bars.get(name)
        if bar is None:
            bar = bars[name] = tqdm(total=total, desc=name + (f" [rank {rank}]" if world > 1 else ""),
                                    position=rank if world > 1 else None, leave=True, disable=args.quiet)
        bar.total = total
        bar.n = done
        bar.refresh()

    def notice(line: str) -> None:
        tqdm.write(f"note: {line}", file=sys.stderr)

    store_path = Path(cfg.store or load_settings().results)
    new_store = not store_path.exists()
    try:
        t3 = run_benchmark(cfg, progress=progress, notice=notice)
    except MlalpError:
        if new_store and rank == 0:  # a refused run leaves no store it created
            discard_unused_store(store_path)
        raise
    for bar in bars.values():
        bar.close()
    if rank != 0:
        return 0
    store = ResultsStore(cfg.store or load_settings().results)
    print(f"\nresults store: {store.path}")
    print("\nTable II\n\n" + export(table2(store), "md"))
    print("Table III\n\n" + export(t3, "md"))
    if out is not None:
        for fmt, ext in (("csv", "csv"), ("md", "md"), ("latex", "tex")):
            (out / f"table3.{ext}").write_text(export(t3, fmt))
            (out / f"table2.{ext}").write_text(export(table2(store), fmt))
        print(f"tables written to {out}/table{{2,3}}.{{csv,md,tex}}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ..experiments.reporting import (
        budget_curves,
        export,
        table2,
        table3,
        with_paper,
    )
    from ..experiments.store import ResultsStore
    from ..settings import load_settings

    store = ResultsStore(Path(args.store or load_settings().results))  # read-only
    if args.runs:
        sys.stdout.write(_runs_text(store))
        return 0
    run = store.resolve_run(args.run) if args.run else None
    rows = store.rows(model=args.model, dataset=args.data, attack=args.attack, run_key=run)
    if args.efficiency:
        return _efficiency(rows, args)
    if args.pairwise:
        from ..experiments.pairwise import PAIRWISE_COLUMNS, pairwise

        text = export(pairwise(rows, *args.pairwise), args.format, columns=PAIRWISE_COLUMNS)
    elif args.budget:
        curves = budget_curves(rows, norm=args.budget)
        lines = [f"success rate within {args.budget} <= eps"]
        for (m, d, _, label), (eps, rate) in curves.items():
            marks = [(e, r) for e, r in zip(eps, rate)][:: max(1, len(eps) // 12)]
            lines.append(f"{m} {d} {label}: " + "  ".join(f"{e:.4g}:{r:.2f}" for e, r in marks))
        text = "\n".join(lines) + "\n"
    elif args.table == "2":
        text = export(table2(store), args.format)
    else:
        t3 = table3(rows)
        text = export(with_paper(t3) if args.paper and args.format == "csv" else t3, args.format)
    if args.out:
        out = writable_output(args.out, "--out", force=args.force)
        write_output(out, text, "--out")
        print(f"written to {out}")
    else:
        sys.stdout.write(text)
    return 0


def _efficiency(rows: list, args: argparse.Namespace) -> int:
    """``mlalp report --efficiency FILE``: the efficiency figure, its format from the file's suffix."""
    from ..experiments.pairwise import efficiency
    from ..viz.efficiency import efficiency_paper
    from ..viz.paper import FORMATS, figure_bytes

    fmt = Path(args.efficiency).suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise InvalidInputError(f"--efficiency {args.efficiency}: name a .pdf, .svg or .png file")
    out = writable_output(args.efficiency, "--efficiency", force=args.force)
    write_output(out, figure_bytes(efficiency_paper(efficiency(rows, args.eps), budget=args.eps), fmt), "--efficiency")
    print(f"written to {out}")
    return 0


def _runs_text(store) -> str:
    """``mlalp report --runs``: one line per run (key, what it is, how far it got, its numerics)."""
    from ..experiments.reporting import numerics_text, run_labels

    labels = run_labels(store.rows())
    lines = [f"{r['run_key'][:12]}  {r['model']} / {r['dataset']} ({r['split']}) / {labels.get(r['run_key'], r['attack'])}"
             f" / {r['settings'].get('objective', 'hide-one')} / seed {r['seed']}: {r['examples']} examples; "
             f"{numerics_text(r['numerics'])}" for r in store.runs()]
    return ("\n".join(lines) + "\n") if lines else "no run in this store\n"


def register(sub) -> None:
    p = sub.add_parser("bench", help="run or resume a batch experiment (Tables II and III)",
                       description="Select the examples the paper attacks, run attacks on them in batches and "
                                   "store every finished example; re-running resumes. Under torchrun the work is "
                                   "sharded across processes/GPUs.")
    p.add_argument("--models", nargs="+", default=["demo-gcn", "demo-liw"], help="registry names (mlalp models)")
    p.add_argument("--data", default="demo", help="data set name: demo, demo-test, voc2007, voc2012")
    p.add_argument("--split", default=None, help="split (default: the data set's test split)")
    p.add_argument("--attacks", nargs="+", default=["paper"],
                   help="attack names, or groups: paper (the paper's five, the default), linf, all")
    p.add_argument("--limit", "--n", dest="limit", type=int, default=None, metavar="N",
                   help="attack at most N selected examples per model (under torchrun write --limit: torchrun "
                        "reads --n as its own --nnodes)")
    p.add_argument("--threads", default=None, metavar="N",
                   help="torch threads of every process (default: every usable core; part of the run's numerics, "
                        "so a one-process run and a torchrun run of the same command store the same numbers; "
                        "with torchrun on a CPU, --threads 1 per rank avoids oversubscription)")
    p.add_argument("--seed", type=int, default=0, help="seed of the hidden-label choice")
    p.add_argument("--objective", default="hide-one",
                   help="what y* asks: hide-one (the paper's), hide-all, hide:A,B, add:A,B, show-k:K, show-many")
    p.add_argument("--batch", type=int, default=None,
                   help="images per attack batch (default 8; with mode=authors the authors' own: 10 for MLA-LP, "
                        "18 for the CW family, recorded with the run)")
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda[:N]")
    p.add_argument("--set", action="append", default=[], metavar="ATTACK.SETTING=VALUE",
                   help="override an attack setting, e.g. --set mla-lp.box=true --set ml-cw.max_iterations=200")
    p.add_argument("--store", default=None, help="results store (default: MLALP_RESULTS or results/mlalp.sqlite)")
    p.add_argument("--precision", default="float16", choices=["float16", "float32"],
                   help="how perturbations are stored")
    p.add_argument("--out", default=None, help="also write Tables II and III as CSV, Markdown and LaTeX here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("report", help="Tables II/III or budget curves from a results store")
    p.add_argument("--store", default=None)
    p.add_argument("--table", choices=["2", "3"], default="3")
    p.add_argument("--format", choices=["md", "csv", "latex"], default="md")
    p.add_argument("--model", default=None)
    p.add_argument("--data", default=None)
    p.add_argument("--attack", default=None)
    p.add_argument("--run", default=None, metavar="KEY",
                   help="only this run (a unique prefix of its key, as the tables' notes print it)")
    p.add_argument("--runs", action="store_true", help="list the store's runs (key, settings, examples, numerics)")
    p.add_argument("--paper", action="store_true", help="CSV: add the paper's values beside ours")
    p.add_argument("--budget", choices=["linf", "l2"], default=None, help="success rate against a distortion budget")
    p.add_argument("--pairwise", nargs=2, metavar=("A", "B"), default=None,
                   help="compare two runs (attack names, or run keys) on the examples both attacked: per-example "
                        "l_inf and l_2 ratios A/B (median, quartiles), wins, success on the union, model calls, time")
    p.add_argument("--efficiency", default=None, metavar="FILE",
                   help="write the efficiency figure (mean l_inf against mean model calls, per run and model) "
                        "as FILE (.pdf, .svg or .png)")
    p.add_argument("--eps", type=float, default=None,
                   help="with --efficiency: also plot the success rate within this l_inf budget ([0,1] units)")
    p.add_argument("--out", default=None)
    p.add_argument("--force", action="store_true", help="let --out replace a file mlalp did not write")
    p.set_defaults(func=_cmd_report)
