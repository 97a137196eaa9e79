"""Benchmark: mlalp's FGSM and PGD side by side with the peer libraries researchers use (ART and
torchattacks), on the same images, targets and steps: time per image, success, l_inf, passes.

Set-up (the same for every arm): the demo gallery's attackable scenes (predicted right, >= 2
labels) on demo-gcn and demo-liw, hide-one targets (seed 0), l_inf budgets eps 0.01 0.02 0.03,
PGD 10 steps of eps/4 from the clean image (no random start), batches of 32 (ART's default),
the model in eval mode with its parameters frozen (mlalp freezes them itself; the peers get them
frozen too, their best case), one torch thread. Arms are interleaved: each repeat runs every arm
of a setting once, in an order rotated by the repeat, each after one untimed call of its own on
the first batch (an mlalp call ends by giving freed memory back to the system, mlalp_core.allocator,
and the next call, whoever makes it, takes it back page by page: without the warm-up an arm's
time depends on the arm before it); the table gives medians over repeats, and the ratios are
taken within a repeat (the machine is shared: ratios in one run, not across runs). Times are
wall and this thread's CPU time (user + system: page faults count); CPU time is the steadier on
a shared machine.

mlalp's arms run with early stop on (its default: an example returns its first iterate that
reaches y*) and off (the last iterate, as the peers return). An mlalp call returns x_adv with
each example's success and probabilities checked on a forward pass of the returned images; a
peer's call returns x_adv only, so the peers' time is given bare and "+check": with one no-grad
forward pass on their returned images (what a user needs to learn which examples succeeded).

Neither peer pursues a multi-label target out of the box; what this script does about it:

* torchattacks 3.5.1 hard-codes ``nn.CrossEntropyLoss`` over the model's outputs. Its FGSM and
  PGD run unchanged in targeted-by-label mode (``set_mode_targeted_by_label``: the labels are the
  targets, the loss is descended) on a model whose outputs are each label's logit z_j next to a
  zero, shape (N, 2, l), with y* as the class per label: the K-dimensional cross-entropy of
  [0, z_j] toward y*_j is the binary cross-entropy of z_j toward y*_j, averaged (mlalp sums it;
  the sign of the gradient is the same). Defaults kept: eps 8/255 and alpha 2/255 (set here),
  steps 10, random_start True (set False here).
* ART 1.20.1's ``PyTorchClassifier`` reduces 2-D labels to one class index for any loss that is
  a ``CrossEntropyLoss``, ``NLLLoss``, ``BCELoss`` or ``BCEWithLogitsLoss`` (argmax over labels:
  ``BCEWithLogitsLoss`` then fails on the shapes), and its FGSM divides y* by its row sum before
  the loss (a target of 1/|y*| per positive label). The loss here is an ``nn.Module`` of its own
  (so ART leaves y* as it is) computing the summed BCE with logits toward ``y > 0`` (which undoes
  the division). ``ProjectedGradientDescent`` (it runs its PyTorch implementation) with
  ``targeted=True``, ``num_random_init=0``, ``max_iter=10``, ``eps_step=eps/4``,
  ``verbose=False``; ``FastGradientMethod`` with ``targeted=True``; both ``batch_size=32`` (the
  default); other defaults kept (norm inf, minimal False, random_eps False, the classifier's
  preprocessing (0, 1), clip_values (0, 1) set). Each ART call also computes its own (multi-class)
  success rate for a log line, one more forward pass on the returned images: part of its time.

Passes per image are counted on the model itself (forward and backward passes times the images
in them, over the images attacked), in one untimed run per arm; mlalp's own ``model_calls`` is
given beside it. Successes are compared with mlalp's early-stop-off arm (same last iterates up to
rounding: the libraries' steps round differently in the last bits).

    pip install -e .[peers] && pip install --no-deps torchattacks==3.5.1   # see pyproject.toml
    PYTHONPATH=$PWD python bench/peers.py --repeats 7 --diagnose
    PYTHONPATH=$PWD python bench/peers.py --breakdown --repeats 60
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import mlalp_core  # noqa: E402
from mlalp_core.attacks import make_attack  # noqa: E402
from mlalp_core.attacks.targets import hide_one  # noqa: E402
from mlalp_core.data.demo import load_gallery  # noqa: E402
from mlalp_core.models.demo import load_demo_model  # noqa: E402


# ---- the peers' multi-label set-up -------------------------------------------------------------
class PairLogits(nn.Module):
    """The model's per-label logits z as (N, 2, l) [0, z]: torchattacks' cross-entropy over that,
    toward y* as a class per label, is the binary cross-entropy of z toward y*."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        # in eval mode from the start: torchattacks puts a model it found in training mode back
        # into training mode after each call (the demo models' batch norms would then update)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        return torch.stack([torch.zeros_like(z), z], dim=1)


class MultiLabelBCE(nn.Module):
    """ART's loss: summed BCE with logits toward y* (an nn.Module of its own, so ART does not
    reduce y* to a class index; ``y > 0`` undoes its FGSM's division of y* by its row sum)."""

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, (y > 0).to(logits.dtype), reduction="sum")


def torchattacks_arm(name: str, model: nn.Module, eps: float, steps: int) -> Callable:
    import torchattacks

    wrapped = PairLogits(model)
    if name == "fgsm":
        attack = torchattacks.FGSM(wrapped, eps=eps)
    else:
        attack = torchattacks.PGD(wrapped, eps=eps, alpha=eps / 4, steps=steps, random_start=False)
    attack.set_mode_targeted_by_label(quiet=True)
    return lambda x, y: attack(x, y.long())


def art_arm(name: str, model: nn.Module, eps: float, steps: int, batch: int) -> Callable:
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model=model, loss=MultiLabelBCE(), input_shape=(3, *model.input_size),
                            nb_classes=model.num_labels, clip_values=(0.0, 1.0), device_type="cpu")
    if name == "fgsm":
        attack: Any = FastGradientMethod(clf, norm=np.inf, eps=eps, targeted=True, batch_size=batch)
    else:
        attack = ProjectedGradientDescent(clf, norm=np.inf, eps=eps, eps_step=eps / 4, max_iter=steps,
                                          targeted=True, num_random_init=0, batch_size=batch, verbose=False)
    return lambda x, y: torch.from_numpy(attack.generate(x.numpy(), y.float().numpy()))


def mlalp_arm(name: str, model: nn.Module, eps: float, steps: int, stop: bool) -> Callable:
    settings: dict[str, Any] = {"eps": eps, "stop_on_success": stop}
    if name == "pgd":
        settings.update(iterations=steps, step=0.25, random_start=False)
    attack = make_attack(name, model, device="cpu", **settings)
    return attack


class _NoTrim:
    """glibc as mlalp's allocator module calls it, less ``malloc_trim`` (the --diagnose arm)."""

    def __init__(self, libc: Any) -> None:
        self.libc = libc

    def mallopt(self, *args: Any) -> Any:
        return self.libc.mallopt(*args)

    def malloc_trim(self, *args: Any) -> int:
        return 0


def without_trim(attack: Callable) -> Callable:
    """A diagnostic, not mlalp's behaviour: the attack with freed memory kept after the call too
    (mlalp_core.allocator gives it back to the system with malloc_trim at the end of every call,
    and the next call takes it back page by page)."""
    from mlalp_core import allocator

    def call(x: torch.Tensor, y: torch.Tensor) -> Any:
        libc = allocator._glibc()
        if libc is None:
            return attack(x, y)
        allocator._libc = _NoTrim(libc)
        try:
            return attack(x, y)
        finally:
            allocator._libc = libc
    return call


# ---- measuring ---------------------------------------------------------------------------------
class PassCounter:
    """Images in forward and backward passes through the model, whoever makes them: counted on
    the demo model's ``classify`` (the network after the normalisation), which every pass calls
    (mlalp's sign steps take their gradient at the normalised image, without ``forward``)."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.inner = model, model.classify
        self.forward_images = self.backward_images = 0
        self.counting = False  # on while an attack runs (not during a peer's success check)

    def __enter__(self) -> PassCounter:
        def forward(x: torch.Tensor) -> torch.Tensor:
            out = self.inner(x)
            if self.counting:
                self.forward_images += int(x.shape[0])
                if out.requires_grad:
                    out.register_hook(self._backward)
            return out
        self.model.classify = forward  # type: ignore[method-assign]
        return self

    def _backward(self, g: torch.Tensor) -> None:
        self.backward_images += int(g.shape[0])

    def __exit__(self, *exc: object) -> None:
        del self.model.classify


def run_arm(kind: str, fn: Callable, model, x: torch.Tensor, target: torch.Tensor, batch: int,
            counter: PassCounter | None = None) -> dict[str, Any]:
    """One arm over every image in batches: per-image times (wall and this thread's CPU; the
    attack alone, and with a success check for a peer), x_adv, success."""
    times = dict.fromkeys(("wall", "wall+check", "cpu", "cpu+check"), 0.0)
    advs, succ, calls = [], [], []
    for a in range(0, len(x), batch):
        xb, tb = x[a:a + batch], target[a:a + batch]
        if counter is not None:
            counter.counting = True
        w0, c0 = time.perf_counter(), time.thread_time()
        out = fn(xb, tb)
        w1, c1 = time.perf_counter(), time.thread_time()
        if counter is not None:
            counter.counting = False
        if model.training:
            raise RuntimeError("an arm left the model in training mode")
        if kind == "mlalp":
            adv, ok = out.x_adv, out.success
            calls.append(out.model_calls)
            w2, c2 = w1, c1
        else:
            adv = out
            with torch.no_grad():
                ok = ((model.probabilities(adv) >= model.threshold) == tb).all(1)
            w2, c2 = time.perf_counter(), time.thread_time()
        times["wall"] += w1 - w0
        times["wall+check"] += w2 - w0
        times["cpu"] += c1 - c0
        times["cpu+check"] += c2 - c0
        advs.append(adv)
        succ.append(ok)
    return {"times": {k: v / len(x) for k, v in times.items()}, "x_adv": torch.cat(advs),
            "success": torch.cat(succ), "model_calls": torch.cat(calls).double().mean().item() if calls else None}


def breakdown(models: list[str], eps_list: list[float], batch: int, calls: int) -> None:
    """FGSM, call by call: mlalp's call against torchattacks' with its success check, and against
    the least any FGSM with a check computes here (the floor: F + B at the normalised image, the
    sign step, F at x_adv; no input check, copy or record). The three are called in turn, ``calls``
    rounds, the order reversed every other round (a shared machine's load changes over seconds:
    the ratio of two calls made a few ms apart is steadier than one of medians over blocks)."""
    gallery = load_gallery()
    print(f"# FGSM, one batch of {batch}, {calls} rounds of alternating calls; CPU ms per image (median) "
          "and the paired ratio to torchattacks + check (median, quartiles, share of rounds below 1)")
    for mname in models:
        model = load_demo_model(mname, device="cpu").eval()
        for p in model.parameters():
            p.requires_grad_(False)
        x_all, y_all = gallery.images(model.input_size), gallery.labels()
        with torch.no_grad():
            pred = model.predict(x_all)
        keep = ((pred == y_all).all(1) & (y_all.sum(1) >= 2)).nonzero().flatten()[:batch]
        x, t = x_all[keep], hide_one(y_all[keep], seed=0, example_ids=keep.tolist())
        tf = t.float()
        for eps in eps_list:
            attack = mlalp_arm("fgsm", model, eps, 1, True)
            peer = torchattacks_arm("fgsm", model, eps, 1)

            def floor(eps: float = eps) -> None:
                with torch.no_grad():
                    z = model.normalize(x)
                z.requires_grad_(True)
                loss = F.binary_cross_entropy_with_logits(model.classify(z), tf, reduction="sum")
                (g,) = torch.autograd.grad(loss, z)
                with torch.no_grad():
                    model.probabilities(torch.add(x, g.sign_(), alpha=-eps, out=g).clamp_(0, 1))

            def peer_check(peer: Callable = peer) -> None:
                adv = peer(x, t)
                with torch.no_grad():
                    model.probabilities(adv)

            arms: dict[str, Callable[[], Any]] = {
                "floor (passes + step)": floor, "mlalp call": lambda attack=attack: attack(x, t),
                "torchattacks + check": peer_check}
            ts: dict[str, list[float]] = {k: [] for k in arms}
            for fn in arms.values():
                for _ in range(3):
                    fn()
            for i in range(calls):
                for name in (list(arms) if i % 2 == 0 else list(arms)[::-1]):
                    c0 = time.thread_time()
                    arms[name]()
                    ts[name].append(time.thread_time() - c0)
            base = ts["torchattacks + check"]
            for name, v in ts.items():
                r = [a / b for a, b in zip(v, base)]
                q1, q2, q3 = statistics.quantiles(r, n=4)
                below = sum(x < 1 for x in r) / len(r)
                print(f"{mname:9} eps {eps:5.3f} {name:22} {statistics.median(v) * 1e3 / len(x):6.3f} ms/img  "
                      f"ratio {q2:.3f} [{q1:.3f}, {q3:.3f}]  below 1 in {below:4.0%}", flush=True)


def _versions() -> str:
    out = [f"torch {torch.__version__}", f"threads {torch.get_num_threads()}"]
    for mod in ("torchattacks", "art"):
        try:
            out.append(f"{mod} {__import__(mod).__version__}")
        except ImportError:
            out.append(f"{mod} not installed")
    return ", ".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["demo-gcn", "demo-liw"])
    ap.add_argument("--attacks", nargs="+", default=["fgsm", "pgd"], choices=["fgsm", "pgd"])
    ap.add_argument("--eps", nargs="+", type=float, default=[0.01, 0.02, 0.03])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--limit", type=int, default=None, help="at most this many images per model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--peers", nargs="+", default=["torchattacks", "art"], choices=["torchattacks", "art"])
    ap.add_argument("--diagnose", action="store_true",
                    help="add the arm mlalp-notrim: mlalp (early stop) without the allocator's malloc_trim after each call")
    ap.add_argument("--breakdown", action="store_true",
                    help="only: FGSM call by call, mlalp against torchattacks + check and the floor (every --eps, "
                         "one --batch; --repeats rounds, at least 30)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.breakdown:
        print(f"# {_versions()}")
        breakdown(args.models, args.eps, args.batch, max(args.repeats, 30))
        return
    import logging

    logging.getLogger("art").setLevel(logging.WARNING)
    print(f"# {_versions()}; mlalp from {os.path.dirname(mlalp_core.__file__)}")
    print(f"# eps {args.eps}, PGD {args.steps} steps of eps/4 without random start, batch {args.batch}, "
          f"{args.repeats} interleaved repeats (medians; ratios within a repeat)", flush=True)
    gallery = load_gallery()
    times: dict[tuple, dict[str, dict[str, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    info: dict[tuple, dict[str, dict[str, Any]]] = defaultdict(dict)
    setups = []
    states: dict[str, tuple[nn.Module, dict[str, torch.Tensor]]] = {}
    for mname in args.models:
        model = load_demo_model(mname, device="cpu").eval()
        for p in model.parameters():
            p.requires_grad_(False)
        x_all = gallery.images(model.input_size)
        y_all = gallery.labels()
        with torch.no_grad():
            pred = model.predict(x_all)
        keep = ((pred == y_all).all(1) & (y_all.sum(1) >= 2)).nonzero().flatten()[:args.limit]
        x, target = x_all[keep], hide_one(y_all[keep], seed=0, example_ids=keep.tolist())
        print(f"# {mname}: {len(x)} attackable scenes", flush=True)
        states[mname] = (model, {k: v.clone() for k, v in model.state_dict().items()})
        for aname in args.attacks:
            for eps in args.eps:
                arms: dict[str, tuple[str, Callable]] = {
                    "mlalp": ("mlalp", mlalp_arm(aname, model, eps, args.steps, True)),
                    "mlalp-nostop": ("mlalp", mlalp_arm(aname, model, eps, args.steps, False)),
                }
                if args.diagnose:
                    arms["mlalp-notrim"] = ("mlalp", without_trim(mlalp_arm(aname, model, eps, args.steps, True)))
                if "torchattacks" in args.peers:
                    arms["torchattacks"] = ("peer", torchattacks_arm(aname, model, eps, args.steps))
                if "art" in args.peers:
                    arms["art"] = ("peer", art_arm(aname, model, eps, args.steps, args.batch))
                key = (mname, aname, eps)
                for arm, (kind, fn) in arms.items():  # the untimed run: outcomes and passes
                    with PassCounter(model) as pc:
                        res = run_arm(kind, fn, model, x, target, args.batch, pc)
                    res["passes"] = (pc.forward_images + pc.backward_images) / len(x)
                    res["forwards"], res["backwards"] = pc.forward_images / len(x), pc.backward_images / len(x)
                    info[key][arm] = res
                setups.append((key, model, x, target, arms))
    for rep in range(args.repeats):
        for key, model, x, target, arms in setups:
            names = list(arms)
            order = names[rep % len(names):] + names[:rep % len(names)]
            for arm in order:
                kind, fn = arms[arm]
                fn(x[:args.batch], target[:args.batch])  # warm-up: the arm starts from its own state of the heap
                res = run_arm(kind, fn, model, x, target, args.batch)
                for col, v in res["times"].items():
                    times[key][arm][col].append(v)
        print(f"# repeat {rep + 1}/{args.repeats} done", flush=True)

    for mname, (model, before) in states.items():  # no arm changed a weight or a batch-norm statistic
        after = model.state_dict()
        if not all(torch.equal(before[k], after[k]) for k in before):
            raise RuntimeError(f"{mname}'s parameters or buffers changed during the benchmark")
    def med(values: list[float]) -> float:
        return statistics.median(values)

    def ratio(a: list[float], b: list[float]) -> float:
        """The median over repeats of a / b within each repeat."""
        return statistics.median(x / y for x, y in zip(a, b))

    print()
    print("ms per image, medians over repeats: wall and CPU (this thread's) time of the call; '+chk': with one")
    print("no-grad forward pass on a peer's returned images (an mlalp call has checked them: the same figure);")
    print("'cpu/mlalp': the arm's CPU time +chk over mlalp's (early stop), within each repeat.")
    print("passes: forward + backward passes through the model per image, counted on the model, in the call")
    print("(a peer's check not included); calls: mlalp's own count. same: the successes of mlalp-nostop.")
    print("max|dx|: largest pixel difference of x_adv from mlalp-nostop's.")
    hdr = (f"{'model':9} {'attack':6} {'eps':>5} {'arm':13} | {'wall':>6} {'+chk':>6} {'cpu':>6} {'+chk':>6} "
           f"{'cpu/mlalp':>9} | {'success':>7} {'same':>6} {'mean linf':>9} {'passes':>14} {'calls':>5} {'max|dx|':>7}")
    print(hdr)
    print("-" * len(hdr))
    summary = []
    for key, model, x, target, arms in setups:
        ref = info[key]["mlalp-nostop"]
        t = times[key]
        for arm in arms:
            r, ta = info[key][arm], t[arm]
            ok = r["success"]
            linf = (r["x_adv"] - x).flatten(1).abs().amax(1)
            mean_linf = float(linf[ok].mean()) if ok.any() else float("nan")
            same = "yes" if torch.equal(ok, ref["success"]) else f"{int((ok != ref['success']).sum())} diff"
            passes = f"{r['forwards']:.1f}+{r['backwards']:.1f}={r['passes']:.1f}"
            calls = f"{r['model_calls']:.1f}" if r["model_calls"] is not None else "-"
            dx = float((r["x_adv"] - ref["x_adv"]).abs().max())
            print(f"{key[0]:9} {key[1]:6} {key[2]:5.3f} {arm:13} | {med(ta['wall']) * 1e3:6.2f} "
                  f"{med(ta['wall+check']) * 1e3:6.2f} {med(ta['cpu']) * 1e3:6.2f} {med(ta['cpu+check']) * 1e3:6.2f} "
                  f"{ratio(ta['cpu+check'], t['mlalp']['cpu+check']):9.3f} | {int(ok.sum()):3d}/{len(ok):<3d} "
                  f"{same:>6} {mean_linf:9.5f} {passes:>14} {calls:>5} {dx:7.1e}")
        peers = [a for a in arms if not a.startswith("mlalp")]
        if peers:
            def to_fastest(arm: str, col: str) -> float:
                fastest = [min(t[p][col][i] for p in peers) for i in range(len(t[arm][col]))]
                return ratio(t[arm][col], fastest)
            summary.append((key, [to_fastest(a, c) for c in ("cpu+check", "wall+check", "cpu")
                                  for a in ("mlalp", "mlalp-nostop")]
                            + ([to_fastest("mlalp-notrim", "cpu+check")] if args.diagnose else [])))
    if summary:
        print()
        print("mlalp's time over the fastest peer's (the smaller of the peers' times in each repeat), median over")
        print("repeats; an mlalp call includes its success check; '+chk': the peers' with theirs, 'bare': without")
        h2 = (f"{'model':9} {'attack':6} {'eps':>5} | {'cpu +chk':>17} | {'wall +chk':>17} | {'cpu, peers bare':>17}")
        if args.diagnose:
            h2 += f" | {'notrim +chk':>11}"
        print(h2)
        print(f"{'':22} | {'stop':>8} {'nostop':>8} | {'stop':>8} {'nostop':>8} | {'stop':>8} {'nostop':>8}"
              + (f" | {'cpu':>11}" if args.diagnose else ""))
        print("-" * len(h2))
        for key, v in summary:
            print(f"{key[0]:9} {key[1]:6} {key[2]:5.3f} | {v[0]:8.3f} {v[1]:8.3f} | {v[2]:8.3f} {v[3]:8.3f} | "
                  f"{v[4]:8.3f} {v[5]:8.3f}" + (f" | {v[6]:11.3f}" if args.diagnose else ""))


if __name__ == "__main__":
    main()
