"""The MLA-LP authors' attack loop, transcribed from the description in shared/REFERENCE.md
("MLA-LP as the authors ran it", details (a)-(c), give-up and iterate rules), as a test oracle
for ``MLALP(mode="authors")``. Their code is not copied; their names and their loop order are
kept so that the two can be read side by side:

    while iteration < max_iter:
        examples whose best iterate reaches y* join error_idx (finished or given up)
        Jacobian of the clamped per-label BCE at adv_x, one backward pass per label
        one LP per example (MOSEK's place taken by mlalp_core.lp.solve_linf), r = 0 unless optimal
        temp_adv_x = clip(adv_x + r, 0, 1); temp_adv_output = the model there
        per example not in error_idx, in batch order: the give-up rule, then the shared threshold
        before_adv_output = temp_adv_output (for every image, before any restart)
        per example not in error_idx: a better step is the best iterate, a worse one restarts
        from the clean image and forgets the best

It shares nothing with ``mlalp_core.attacks``: only the model's forward and backward passes
(torch) and the LP solve; the rest is numpy, in float32 where their arrays are. One attacked
label per example (REFERENCE (c): their indexing is only defined so), a label to hide.

Each step of each example leaves a record in the returned trace: the threshold its LP used
(``margin``), ``b`` = loss(t) - loss(o) of the attacked label, the LP's ``z``, and whether the
example was given up, lowered the shared threshold, or restarted.
"""

from __future__ import annotations

import numpy as np
import torch

from mlalp_core.lp import solve_linf

CLIP = 1e-6  # their clamp of the outputs inside the loss
#: The oracle solves exactly (a tighter gap than the attack's 1e-6); every result is kept in SOLVED.
LP_TOL = 1e-9
SOLVED: list = []


def model_output(model, x: np.ndarray) -> np.ndarray:
    """Sigmoid outputs (float32) of a batch of [0,1] images, as their model returns them."""
    with torch.no_grad():
        return torch.sigmoid(model(torch.from_numpy(x).float())).numpy()


def get_jacobian_loss(model, x: np.ndarray, y_target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Their Jacobian: the per-label BCE of the outputs clamped to [1e-6, 1-1e-6], one backward
    pass per label, each seeded with that label's one-hot row for every image. Returns
    (jac (num_labels, batch, ...) float32, the clamped outputs at x). They computed it twice per
    iteration and threw the first away; once gives the same numbers."""
    num_labels = y_target.shape[1]
    x_t = torch.from_numpy(x).float().requires_grad_(True)
    y = torch.clamp(torch.sigmoid(model(x_t)), CLIP, 1 - CLIP)
    y_target_t = torch.from_numpy(y_target).to(y.dtype)
    loss = -(y_target_t * torch.log(y) + (1 - y_target_t) * torch.log(1 - y))
    jac = []
    for j in range(num_labels):
        seed = torch.zeros_like(loss)
        seed[:, j] = 1.0
        (g,) = torch.autograd.grad(loss, x_t, seed, retain_graph=j < num_labels - 1)
        jac.append(g.numpy().copy())  # a copy: on a CPU their .numpy() shared memory with x.grad
    return np.asarray(jac), y.detach().numpy()


def mosek_inner_point_solver(A: np.ndarray, output: np.ndarray, y_target: np.ndarray,
                             threshold_value: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """One example's LP: min z s.t. A r <= loss(t) - loss(o), -z <= r_i <= z, r_i in [-1,1];
    all-zero rows of A deleted first (even where their b < 0). Returns (r, delta_loss, z), with
    r = 0 (and z = nan) unless the solver says optimal."""
    output = np.clip(output, 1e-6, 1.0 - 1e-6)
    loss_current = -(y_target * np.log(output) + (1 - y_target) * np.log(1 - output))
    loss_target = -(y_target * np.log(threshold_value) + (1 - y_target) * np.log(1 - threshold_value))
    delta_loss = loss_target - loss_current
    keep = [j for j in range(len(A)) if not (A[j] == 0).all()]
    d = A.shape[1]
    if not keep:  # nothing left but -z <= r <= z: the optimum is r = 0
        return np.zeros(d), delta_loss, 0.0
    res = solve_linf(torch.from_numpy(A[keep]), torch.from_numpy(delta_loss[keep]), lo=-1.0, hi=1.0, tol=LP_TOL)
    SOLVED.append(res)
    if res.status != "optimal":
        return np.zeros(d), delta_loss, float("nan")
    return np.asarray(res.r, dtype=np.float64), delta_loss, float(res.z)


def authors_mlalp(model, x: torch.Tensor, target: torch.Tensor, max_iter: int = 10) -> list[dict]:
    """Per example: success, iterations (steps taken), the returned image, why it stopped, and
    its trace (one record per step)."""
    x = x.detach().cpu().numpy().astype(np.float32)
    y_target = target.cpu().numpy().astype(np.float64)  # y* in {0,1}
    num_instaces, num_labels = y_target.shape
    x_shape = x.shape[1:]
    num_features = int(np.prod(x_shape))

    output = model_output(model, x)  # the clean outputs
    pred = (output >= 0.5).astype(np.float64)
    A_m = (pred != y_target)  # the label to flip
    assert (A_m.sum(1) == 1).all() and (y_target[A_m] == 0).all(), "one label to hide per example"
    attack_bool = A_m
    attacked = A_m.argmax(1)  # its column, per example

    best_adv_x = x.copy()
    best_pred = pred.copy()
    adv_x = x.copy()
    threshold_value = np.full((num_instaces, num_labels), 0.5)
    before_adv_output = output[attack_bool].copy()  # the attacked output after the previous step
    error_idx: list[int] = []
    trace: list[list[dict]] = [[] for _ in range(num_instaces)]
    why = [""] * num_instaces

    iteration = 0
    while iteration < max_iter:
        if len(error_idx) == num_instaces:
            break
        for i in range(num_instaces):  # a success is recorded here, at the top of the next iteration
            if (best_pred[i] == y_target[i]).all() and i not in error_idx:
                error_idx.append(i)
                why[i] = "success"

        jac_grad, output = get_jacobian_loss(model, adv_x, y_target)  # output: at adv_x, clamped
        jac_grad = jac_grad.reshape(num_labels, num_instaces, num_features).swapaxes(0, 1)

        result = np.zeros((num_instaces, num_features))
        step: dict[int, dict] = {}
        for i in range(num_instaces):
            if i in error_idx:  # they solved it too and then replaced r by 0: not solved here
                continue
            r, delta_loss, z = mosek_inner_point_solver(jac_grad[i], output[i], y_target[i], threshold_value[i])
            result[i] = r
            step[i] = {"iteration": iteration + 1, "margin": float(threshold_value[i, attacked[i]]),
                       "b": float(delta_loss[attacked[i]]), "z": z, "gave_up": False, "margin_lowered": False,
                       "restart": False}
            trace[i].append(step[i])
        # float64, as theirs (float32 image + float64 step); the model sees it as float32
        temp_adv_x = np.clip(adv_x + result.reshape(adv_x.shape), 0.0, 1.0)
        temp_adv_output = model_output(model, temp_adv_x)

        for i in range(num_instaces):  # the give-up rule and the shared threshold, in batch order
            if i in error_idx:
                continue
            o_new = temp_adv_output[i, attacked[i]]
            if iteration >= 5 and o_new == output[i, attacked[i]]:
                error_idx.append(i)
                step[i]["gave_up"], why[i] = True, "did not move"
                continue
            if np.all(result[i] == 0):
                error_idx.append(i)
                step[i]["gave_up"], why[i] = True, "r = 0"
                continue
            did_not_fall = before_adv_output[i] <= o_new
            if (did_not_fall or o_new < 0.6) and threshold_value[i, attacked[i]] > 0.1:
                # one threshold for the batch: every example's attacked entry takes the new value
                threshold_value[attack_bool] = threshold_value[i, attacked[i]] - 0.05
                step[i]["margin_lowered"] = True

        adv_x = temp_adv_x
        before_adv_output = temp_adv_output[attack_bool].copy()  # every image, before any restart
        adv_pred = (temp_adv_output >= 0.5).astype(np.float64)

        for i in range(num_instaces):  # the best iterate; a worse step restarts from the clean image
            if i in error_idx:
                continue
            right_now = int((adv_pred[i] == y_target[i]).sum())
            right_best = int((best_pred[i] == y_target[i]).sum())
            rms_now = np.sqrt(np.mean(np.square(adv_x[i] - x[i])))
            rms_best = np.sqrt(np.mean(np.square(best_adv_x[i] - x[i])))
            if right_now > right_best or (right_now == right_best and rms_now < rms_best):
                best_adv_x[i] = adv_x[i]
                best_pred[i] = adv_pred[i]
            elif right_now < right_best:
                adv_x[i] = x[i]
                best_adv_x[i] = x[i]
                best_pred[i] = pred[i]
                step[i]["restart"] = True
        iteration += 1

    final = model_output(model, best_adv_x)
    out = []
    for i in range(num_instaces):
        success = bool(((final[i] >= 0.5) == (y_target[i] == 1)).all())
        out.append({"success": success, "iterations": len(trace[i]), "x_adv": torch.from_numpy(best_adv_x[i]),
                    "stop": why[i] or ("success" if success else "iteration limit"), "trace": trace[i]})
    return out
