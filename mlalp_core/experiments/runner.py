"""Batch experiments: select the examples the paper attacks, run attacks on them in batches, store
every finished example at once, resume what an interrupted run left, and shard across processes.

Selection (Table II): a test example is attacked when the model's prediction at its threshold
equals the ground truth on every label and the ground truth has at least two positive labels
(the authors' code uses >= 2). Targets: one positive label hidden at random, seeded per example
(:func:`mlalp_core.attacks.targets.hide_one`), so any split of the work gets the same targets.

Reproducible numbers: every process sets the run's numerics (:mod:`mlalp_core.numerics`: torch
threads, TF32, cuDNN determinism) before any model work, and they are part of the run's identity.
The examples are cut into fixed batches (by the batch size, the same in every process), both for
the selection's forward passes and for the attacks, so an example is always computed in the same
company: sharded over ranks, resumed after a kill (a batch with a missing example is attacked
whole again and only the missing ones are stored) or not, the store holds the same numbers.

Sharding: under ``torchrun`` (or any initialised ``torch.distributed`` group) the fixed batches go
round-robin to the ranks; each example is attacked exactly once, in the same batch as in a
one-process run, so the results are identical (tested bit for bit on the CPU with 2 gloo ranks).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..attacks import ATTACKS, PAPER_ATTACKS, make_attack, parse_settings
from ..attacks.cost import duration_text, estimate_seconds, measure_costs
from ..attacks.targets import build_target, parse_objective
from ..data.base import MultiLabelDataset, check_labels_match, stack_images
from ..device import DeviceLike, resolve_device
from ..errors import ConfigurationError, InvalidInputError
from ..models.base import MultiLabelClassifier
from ..models.outputs import checked_probabilities
from ..numerics import Numerics, check_threads
from ..numerics import apply as apply_numerics
from ..progress import ProgressFn
from .metrics import attack_metrics
from .reporting import table3
from .store import ResultsStore, data_identity, model_identity, run_key


@dataclass
class BenchConfig:
    """One batch experiment: every model x every attack on one data split."""

    models: Sequence[str] = ("demo-gcn",)
    dataset: str = "demo"
    split: str | None = None
    attacks: Sequence[str] = PAPER_ATTACKS
    n: int | None = None  # at most this many examples attacked per model (the first selected)
    seed: int = 0
    #: images per attack batch; None: 8, or in the authors' mode the authors' own batch (their
    #: results depend on it: 10 for MLA-LP, 18 for the CW family)
    batch_size: int | None = None
    device: DeviceLike = None
    attack_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: what y* asks (mlalp_core.attacks.targets.OBJECTIVES): hide-one (the paper's), hide-all,
    #: hide:a,b, add:a,b, show-k:K, show-many
    objective: str = "hide-one"
    store: str | Path | None = None  # default: the settings' results path
    precision: str = "float16"  # how perturbations are stored: float16 or float32
    #: torch threads of every process (part of the run's numerics); None: every usable core
    threads: int | None = None

    def check(self) -> None:
        unknown = [a for a in self.attacks if a not in ATTACKS]
        if unknown:
            raise InvalidInputError(f"unknown attack(s) {', '.join(unknown)}; choose from {', '.join(ATTACKS)}")
        if not self.models:
            raise InvalidInputError("choose at least one model")
        if not self.attacks:
            raise InvalidInputError("choose at least one attack")
        if self.batch_size is not None and self.batch_size < 1:
            raise InvalidInputError(f"batch size must be >= 1, got {self.batch_size}")
        if self.n is not None and self.n < 1:
            raise InvalidInputError(f"n must be >= 1, got {self.n}")
        if self.threads is not None:
            self.threads = check_threads(self.threads, "threads")
        if self.precision not in ("float16", "float32"):
            raise InvalidInputError(f"precision must be float16 or float32, got {self.precision!r}")
        bad = [a for a in self.attack_settings if a not in ATTACKS]
        if bad:
            raise InvalidInputError(f"settings given for unknown attack(s): {', '.join(bad)}")
        self.attack_settings = {a: parse_settings(a, v, "attack settings", complete=False)
                                for a, v in self.attack_settings.items()}
        parse_objective(self.objective)


@dataclass
class Selection:
    """The examples a model would be attacked on (the paper's rule) and the Table II counts."""

    indices: list[int]
    ids: list[str]
    labels: torch.Tensor  # (N, l) bool ground truth of the selected examples
    test_examples: int
    model_id: str
    data_id: str


# ---------------------------------------------------------------------------------------------
# torch.distributed helpers (no-ops in a single process)
# ---------------------------------------------------------------------------------------------


def dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def process_group_plan(use_cuda: bool, local_rank: int, local_world: int, n_gpus: int) -> tuple[str, int | None]:
    """(backend, this rank's GPU or None) for a torchrun launch.

    NCCL when every rank on this node has a GPU of its own; ranks that must share one (more ranks
    than GPUs, e.g. two ranks on one GPU) use gloo, because NCCL refuses two ranks on one device
    ("Duplicate GPU detected"), and this runner only exchanges small Python objects (which
    examples were attacked), so gloo costs nothing measurable. The CPU always uses gloo.
    """
    if not use_cuda or n_gpus < 1:
        return "gloo", None
    return ("nccl" if local_world <= n_gpus else "gloo"), local_rank % n_gpus


def init_distributed_from_env(device: DeviceLike = None) -> tuple[int, int, torch.device | None]:
    """Initialise torch.distributed when launched by torchrun (RANK/WORLD_SIZE set); see
    :func:`process_group_plan`. ``device``: what the user asked for (``cpu`` keeps a run on the
    CPU on a GPU machine). Returns (rank, world, this rank's GPU or None)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1, None
    use_cuda = resolve_device(device).type == "cuda"
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    backend, gpu = process_group_plan(use_cuda, local_rank, local_world,
                                      torch.cuda.device_count() if use_cuda else 0)
    if gpu is not None:
        torch.cuda.set_device(gpu)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend=backend)
    rank, world = dist_rank_world()
    return rank, world, None if gpu is None else torch.device("cuda", gpu)


def _all_gather(obj: Any) -> list[Any]:
    rank, world = dist_rank_world()
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    torch.distributed.all_gather_object(out, obj)
    return out


def _barrier() -> None:
    if dist_rank_world()[1] > 1:
        torch.distributed.barrier()


# ---------------------------------------------------------------------------------------------
# Selection
# ---------------------------------------------------------------------------------------------


#: Images per prediction chunk of the selection, whatever ``--batch`` and the rank count: an
#: ordinary model's outputs move in the last bits with its batch, so a chunk size taken from the
#: run's settings could select differently an example at the threshold, under one cached selection.
SELECTION_BATCH = 16


@torch.no_grad()
def select_examples(model: MultiLabelClassifier, dataset: MultiLabelDataset, *, model_name: str,
                    dataset_name: str, split: str, store: ResultsStore | None = None,
                    batch_size: int = SELECTION_BATCH, device: DeviceLike = None,
                    progress: ProgressFn | None = None) -> Selection:
    """The paper's selection, cached in the store (predictions are not recomputed on resume)."""
    check_labels_match(model_name, model.label_names, dataset_name, dataset.label_names)
    dev = resolve_device(device)
    ids = dataset.ids()
    labels = dataset.labels().bool()
    mid = model_identity(model)
    did = data_identity(dataset_name, split, ids, labels)
    cached = store.selection(mid, did) if store is not None else []
    if len(cached) == len(ids):
        correct = torch.tensor([r["correct"] for r in cached])
    else:
        rank, world = dist_rank_world()
        # the same fixed chunks in every process: a prediction never depends on the rank count
        mine = attack_batches(len(ids), batch_size)[rank::world]
        total = sum(len(c) for c in mine)
        model = model.to(dev).eval()
        ok_mine: dict[int, bool] = {}
        for chunk in mine:
            x = stack_images(dataset, chunk, model.input_size).to(dev)
            pred = (checked_probabilities(model, x, [f"example {ids[i]}" for i in chunk]) >= model.threshold).cpu()
            for k, i in enumerate(chunk):
                ok_mine[i] = bool((pred[k] == labels[i]).all())
            if progress is not None:
                progress(len(ok_mine), total, f"{model_name}: checking predictions")
        merged: dict[int, bool] = {}
        for part in _all_gather(ok_mine):
            merged.update(part)
        correct = torch.tensor([merged[i] for i in range(len(ids))])
        if store is not None and rank == 0:
            store.save_selection(model=model_name, model_id=mid, dataset=dataset_name, split=split, data_id=did,
                                 rows=[(ids[i], i, bool(correct[i]), int(labels[i].sum()), labels[i].int().tolist())
                                       for i in range(len(ids))])
        _barrier()
    chosen = (correct & (labels.sum(1) >= 2)).nonzero().flatten().tolist()
    return Selection(indices=chosen, ids=[ids[i] for i in chosen], labels=labels[chosen],
                     test_examples=len(ids), model_id=mid, data_id=did)


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


#: Images per attack batch when none is given (results do not depend on it outside the authors' mode).
DEFAULT_BATCH = 8


def batch_for(attack: Any, asked: int | None) -> tuple[int, dict[str, Any]]:
    """(the batch size to run, the settings to record). In the authors' mode results depend on
    the batch (a shared margin, a per-batch abort): it defaults to the authors' own and becomes
    part of the run's identity."""
    settings = attack.config()
    if settings.get("mode") != "authors":
        return asked or DEFAULT_BATCH, settings
    batch = asked or attack.authors_batch or DEFAULT_BATCH
    return batch, {**settings, "batch_size": batch}


def check_objective(attack: Any, objective: str, sel: Selection, label_names: Sequence[str], seed: int) -> None:
    """Refuse, before any work, an objective the examples or the attack cannot pursue."""
    targets = build_target(objective, sel.labels, seed=seed, example_ids=sel.indices, label_names=label_names)
    for row in targets:
        problem = attack.target_problem(row)
        if problem:
            raise InvalidInputError(f"{attack.name} cannot pursue the objective {objective}: {problem}; leave it out "
                                    "of the attacks")


def attack_batches(n: int, batch_size: int) -> list[list[int]]:
    """Positions 0..n-1 cut into the fixed batches every process agrees on."""
    return [list(range(a, min(a + batch_size, n))) for a in range(0, n, batch_size)]


def run_attack_on_selection(model: MultiLabelClassifier, dataset: MultiLabelDataset, sel: Selection, *,
                            attack_name: str, settings: dict[str, Any], key: str, store: ResultsStore, seed: int,
                            batch_size: int, device: torch.device, precision: str = "float16",
                            progress: ProgressFn | None = None, objective: str = "hide-one") -> int:
    """Attack the selected examples not yet in the store; returns how many this process finished.

    A batch with any example missing is attacked whole (its examples keep the company they had
    in an uninterrupted run, so their numbers are the same) and only the missing ones are stored."""
    check_labels_match(getattr(model, "registry_name", "the model"), model.label_names,
                       getattr(dataset, "name", "the data set"), dataset.label_names)
    rank, world = dist_rank_world()
    done = store.finished_ids(key)
    targets = build_target(objective, sel.labels, seed=seed, example_ids=sel.indices, label_names=model.label_names)
    attack = make_attack(attack_name, model, device=device, **settings)
    batches = attack_batches(len(sel.indices), batch_size)
    mine = [b for k, b in enumerate(batches) if k % world == rank]
    total = sum(len(b) for b in mine)
    finished = sum(1 for b in mine for p in b if sel.ids[p] in done)
    worker = f"rank{rank}/{world}"
    for batch in mine:
        todo = [p for p in batch if sel.ids[p] not in done]
        if not todo:
            continue
        x = stack_images(dataset, [sel.indices[p] for p in batch], model.input_size)
        res = attack(x, targets[batch], example_ids=[sel.ids[p] for p in batch])
        metrics = attack_metrics(res)
        for k, p in enumerate(batch):
            if sel.ids[p] in done:
                continue
            store.add_result(key, sel.ids[p], sel.indices[p], metrics[k], res.target[k], res.probs_clean[k],
                             res.probs_adv[k], res.perturbation[k], res.trace[k], worker=worker, precision=precision)
        finished += len(todo)
        if progress is not None:
            progress(finished, total, f"{attack_name}: {finished}/{total} examples")
    return finished


def _default_split(dataset: str) -> str:
    from ..data.registry import list_datasets

    for info in list_datasets():
        if info.name == dataset:
            return info.default_split
    return "default"


def same_numerics_everywhere(numerics: Numerics) -> None:
    """Refuse a sharded run whose processes would compute with different numerics (e.g. nodes
    with different instruction sets or torch versions)."""
    seen = _all_gather(numerics.as_dict())
    if any(n != seen[0] for n in seen):
        diff = Numerics(**seen[0]).differences(Numerics(**next(n for n in seen if n != seen[0])))
        raise ConfigurationError("the processes of this sharded run compute with different numerics ("
                                 + "; ".join(diff) + "): run every rank with the same torch, threads and hardware")


def numerics_note(store: ResultsStore, key: str, numerics: Numerics, *, model_id: str, data_id: str, attack: str,
                  settings: dict[str, Any], seed: int) -> str:
    """A line for a run that starts anew while the store holds the same run under other numerics
    (another thread count, torch version, machine): it is a run of its own, never mixed in."""
    if store.finished_ids(key):
        return ""
    for r in store.runs():
        same = (r["model_id"], r["data_id"], r["attack"], r["settings"], r["seed"]) == (
            model_id, data_id, attack, settings, seed)
        if same and r["run_key"] != key and r["examples"]:
            if r["numerics"] is None:
                why = "numerics not recorded (an older mlalp)"
            else:
                why = "; ".join(numerics.differences(Numerics(**r["numerics"])))
            return (f"{attack}: the store has this run under other numerics (run {r['run_key'][:8]}: {why}); a new "
                    f"run {key[:8]} starts instead of mixing the two (pass --threads "
                    f"{(r['numerics'] or {}).get('threads', '?')} to resume that one)")
    return ""


def notice_estimates(notice: Callable[[str], None], model_name: str, model: MultiLabelClassifier, dev: torch.device,
                     sel: Selection, store: ResultsStore, plans: Sequence[tuple[str, dict[str, Any], str]]) -> None:
    """Before a model's attacks: how long each may take on this device (the Compare page's cost
    model, measured once here: an upper bound; early stops shorten it), divided over the ranks,
    and in all. ``plans``: (attack, its settings, its run key)."""
    world = dist_rank_world()[1]
    costs = measure_costs(model, dev)
    where = f"{costs.device}" + (f", {world} ranks" if world > 1 else "")
    lines, total = [], 0.0
    for attack, settings, key in plans:
        todo = len(set(sel.ids) - store.finished_ids(key))
        seconds = estimate_seconds(attack, settings, costs) * todo / world
        total += seconds
        lines.append(f"{attack} {duration_text(seconds)} ({todo} to attack)" if todo else f"{attack} done")
    notice(f"{model_name}: at most ~{duration_text(total)} on {where} (upper bounds; early stops shorten them): "
           + ", ".join(lines))


def run_benchmark(config: BenchConfig, progress: ProgressFn | None = None, *,
                  model_loader: Callable[..., MultiLabelClassifier] | None = None,
                  dataset_loader: Callable[..., MultiLabelDataset] | None = None,
                  notice: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Run (or resume) the experiment and return its Table III rows (all finished examples).

    ``notice`` receives one-line notes (e.g. a run that starts anew because the store holds it
    under other numerics)."""
    from ..data.registry import load_dataset
    from ..models.registry import load_model
    from ..settings import load_settings

    config.check()
    model_loader = model_loader or load_model
    dataset_loader = dataset_loader or load_dataset
    dev = resolve_device(config.device)
    numerics = apply_numerics(dev, config.threads)  # in every process, before any model work
    same_numerics_everywhere(numerics)
    store_path = config.store or load_settings().results
    if dist_rank_world()[0] == 0:  # rank 0 creates a new store; the others open it once it exists
        store = ResultsStore(store_path, readonly=False)
    _barrier()
    if dist_rank_world()[0] != 0:
        store = ResultsStore(store_path, readonly=False)
    dataset = dataset_loader(config.dataset, config.split)
    split = config.split or _default_split(config.dataset)
    keys = []
    for model_name in config.models:
        model = model_loader(model_name, device=dev)
        check_labels_match(model_name, model.label_names, config.dataset, dataset.label_names)
        sel = select_examples(model, dataset, model_name=model_name, dataset_name=config.dataset, split=split,
                              store=store, device=dev, progress=progress)
        if config.n is not None:
            sel = Selection(sel.indices[:config.n], sel.ids[:config.n], sel.labels[:config.n], sel.test_examples,
                            sel.model_id, sel.data_id)
        if not sel.indices:
            raise ConfigurationError(f"{model_name} classifies no example of {config.dataset} correctly with >= 2 "
                                     "labels: nothing to attack")
        plans = []  # every attack checked and its run known before any attack runs
        for attack_name in config.attacks:
            settings = dict(config.attack_settings.get(attack_name, {}))
            probe = make_attack(attack_name, model, device=dev, **settings)
            check_objective(probe, config.objective, sel, model.label_names, config.seed)
            batch, recorded = batch_for(probe, config.batch_size)
            if config.objective != "hide-one":  # the paper's objective keeps the keys of earlier runs
                recorded = {**recorded, "objective": config.objective}
            if config.precision != "float16":  # how its perturbations are stored: a run of its own
                recorded = {**recorded, "precision": config.precision}
            run_numerics = replace(numerics, arithmetic=type(probe).arithmetic)
            key = run_key(sel.model_id, sel.data_id, attack_name, recorded, config.seed, run_numerics.as_dict())
            plans.append((attack_name, settings, probe, batch, recorded, key, run_numerics))
        if notice is not None and dist_rank_world()[0] == 0:
            notice_estimates(notice, model_name, model, dev, sel, store, [(p[0], p[2].config(), p[5]) for p in plans])
        for attack_name, settings, probe, batch, recorded, key, run_numerics in plans:
            store.open_run(model=model_name, model_id=sel.model_id, dataset=config.dataset, split=split,
                           data_id=sel.data_id, attack=attack_name, settings=recorded, seed=config.seed,
                           threshold=probe.threshold, label_names=model.label_names, input_size=model.input_size,
                           device=str(dev), numerics=run_numerics.as_dict())
            keys.append(key)
            note = numerics_note(store, key, run_numerics, model_id=sel.model_id, data_id=sel.data_id,
                                 attack=attack_name, settings=recorded, seed=config.seed)
            if note and notice is not None and dist_rank_world()[0] == 0:
                notice(note)
            run_attack_on_selection(model, dataset, sel, attack_name=attack_name, settings=settings, key=key,
                                    store=store, seed=config.seed, batch_size=batch, device=dev,
                                    precision=config.precision, progress=progress, objective=config.objective)
        _barrier()
    rows = [r for k in keys for r in store.rows(run_key=k)]
    return table3(rows)
