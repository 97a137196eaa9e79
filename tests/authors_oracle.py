"""A literal re-implementation of the MLA-LP authors' attack loop, written from the facts in
shared/REFERENCE.md (their code is not copied), as a test oracle for ``mode="authors"``.

Deliberately plain and unoptimised, in the shape of their code: one example at a time, a
Jacobian from one backward pass per label, their clamped losses, an LP with r in [-1,1] (the
project's exact solver in MOSEK's place), all-zero rows dropped, clip after the
step, the give-up check on the step's output before the best-iterate update, a restart from the
clean image on a worse step, and ONE margin threshold for the batch, lowered by 0.05 for each
triggering unfinished example in turn while it is above 0.1.
"""

from __future__ import annotations

import torch

from mlalp_core.lp import solve_linf

CLAMP = 1e-6
#: The oracle solves exactly (a tighter gap than the attack's 1e-6); every result is kept in SOLVED.
LP_TOL = 1e-9
SOLVED: list = []


def _losses(o: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    o = o.clamp(CLAMP, 1 - CLAMP)
    return -(y * torch.log(o) + (1 - y) * torch.log(1 - o))


def _loss_at(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -(y * torch.log(t) + (1 - y) * torch.log(1 - t))


def authors_mlalp(model, x: torch.Tensor, target: torch.Tensor, iterations: int = 10) -> list[dict]:
    """Per example: success, iterations (LPs solved), the returned image and why it stopped."""
    b, l = target.shape
    y = target.double()
    with torch.no_grad():
        o_clean = torch.sigmoid(model(x)).double()
    hidden = (o_clean >= 0.5) & ~target.bool()

    def match(o: torch.Tensor, i: int) -> int:
        return int(((o >= 0.5) == target.bool()[i]).sum())

    margin = 0.5
    x_adv = x.clone()
    o_here = o_clean.clone()  # the output where the next Jacobian is taken
    best = [(match(o_clean[i], i), 0.0, x[i].clone()) for i in range(b)]
    finished = [bool(((o_clean[i] >= 0.5) == target.bool()[i]).all()) for i in range(b)]
    gave_up = [False] * b
    iters = [0] * b
    why = ["already" if f else "" for f in finished]
    for it in range(iterations):  # 0-based, as theirs
        stepped: dict[int, torch.Tensor] = {}
        o_before = o_here.clone()
        for i in range(b):
            if finished[i] or gave_up[i]:
                continue
            iters[i] += 1
            xi = x_adv[i:i + 1].clone().requires_grad_(True)
            o = torch.sigmoid(model(xi))[0]
            loss = _losses(o.double(), y[i])
            rows = []
            for j in range(l):  # one backward pass per label
                (g,) = torch.autograd.grad(loss[j], xi, retain_graph=True)
                rows.append(g.flatten().double())
            A = torch.stack(rows)
            t = torch.full((l,), 0.5, dtype=torch.float64)
            t[hidden[i]] = margin
            bvec = _loss_at(t, y[i]) - loss.detach()
            keep = A.abs().sum(1) > 0  # all-zero rows are dropped before the LP
            # their LP bounds r to [-1,1]; min ||r||_inf has an optimum within that box iff the
            # unbounded optimum has z <= 1 (the same optimum), so it is solved without the box
            res = solve_linf(A[keep], bvec[keep], tol=LP_TOL)
            SOLVED.append(res)
            if res.status != "optimal" or not 0.0 < res.z <= 1.0:
                gave_up[i], why[i] = True, "LP"
                continue
            x_new = (x_adv[i] + res.r.reshape(x[i].shape).to(x.dtype)).clamp(0, 1)
            with torch.no_grad():
                o_new = torch.sigmoid(model(x_new[None]))[0].double()
            stepped[i] = o_new
            if it >= 5 and bool((o_new[hidden[i]] == o_here[i][hidden[i]]).all()):
                gave_up[i], why[i] = True, "stalled"
                continue
            rms = float((x_new - x[i]).double().pow(2).mean().sqrt())
            m, (bm, brms, _) = match(o_new, i), best[i]
            if m > bm or (m == bm and rms < brms):
                best[i] = (m, rms, x_new.clone())
                x_adv[i], o_here[i] = x_new, o_new
            elif m < bm:  # worse: back to the clean image, the best forgotten
                best[i] = (match(o_clean[i], i), 0.0, x[i].clone())
                x_adv[i], o_here[i] = x[i], o_clean[i]
            else:
                x_adv[i], o_here[i] = x_new, o_new
            if bool(((o_here[i] >= 0.5) == target.bool()[i]).all()):
                finished[i], why[i] = True, "success"
        for i in range(b):  # the shared margin: once per triggering unfinished example, in order
            if i not in stepped or finished[i] or gave_up[i]:
                continue
            o_new, o_old = stepped[i], o_before[i]
            trigger = any(bool(o_new[j] >= o_old[j]) or bool(o_new[j] < 0.6)
                          for j in hidden[i].nonzero().flatten().tolist())
            if trigger and margin > 0.1:
                margin = margin - 0.05
    out = []
    for i in range(b):
        x_ret = best[i][2]
        with torch.no_grad():
            ok = bool(((torch.sigmoid(model(x_ret[None]))[0] >= 0.5) == target.bool()[i]).all())
        out.append({"success": ok, "iterations": iters[i], "x_adv": x_ret, "stop": why[i]})
    return out
