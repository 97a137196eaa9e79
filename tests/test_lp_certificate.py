"""The certificate of an LP result, checked against weak duality computed here from the result's
own dual point, on instances whose scale factor s = max_j(-b_j / ||A_j||_1) is below 1 (the
MLA-LP shape: z* a few hundredths) and above 1, and on hand-made LPs with a known optimum.

A lower bound above z is impossible for a feasible r (weak duality): the solver reports it as a
bug (CertificateError) instead of capping it at z, which would print a gap of 0.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from lp_instances import brute_dual_bound, mlalp_instance, sweep_instance

import mlalp_core.lp.finish as finish
import mlalp_core.lp.problem as problem
import mlalp_core.lp.structured as structured
from mlalp_core.lp import CertificateError, solve_linf, solve_linf_batch
from mlalp_core.lp.problem import certify, prepare


def _weak_duality_bound(A, b, lo, hi, lam) -> float:
    """What lam >= 0 proves on min ||r||_inf s.t. A r <= b (lo <= r <= hi): lam^T A r <= lam^T b
    for every feasible r, so -b^T lam <= sum_i |u_i| min(||r||_inf, room_i), u = A^T lam."""
    lam = torch.as_tensor(np.asarray(lam), dtype=torch.float64)
    assert bool((lam >= 0).all())
    A = torch.as_tensor(np.asarray(A), dtype=torch.float64)
    u = lam @ A
    c = float(-(torch.as_tensor(np.asarray(b), dtype=torch.float64) @ lam))
    return brute_dual_bound(u, c, lo, hi)


def _instances():
    """(name, A, b, lo, hi, s below 1?)."""
    out = []
    for seed, box in ((1, False), (2, True), (3, False), (4, True)):
        A, b, lo, hi = mlalp_instance(12, 1500, 1 + seed % 3, seed=seed, box=box)
        out.append((f"mlalp-{seed}-box{box}", A, b, lo, hi, True))
        # the same rows 1000x smaller: s > 1 (with a box, an optimum above 1 is infeasible: no box)
        out.append((f"small-rows-{seed}", A * 1e-3, b, None, None, False))
    A, b, lo, hi = sweep_instance(6, 20, 1200, seed=5)  # the box binds on saturated pixels
    out.append(("sweep-box", A, b, lo, hi, True))
    return out


INSTANCES = _instances()


@pytest.mark.parametrize("backend", ["auto", "highs"])
@pytest.mark.parametrize("k", range(len(INSTANCES)), ids=[i[0] for i in INSTANCES])
def test_the_lower_bound_is_what_the_returned_dual_proves(k, backend):
    name, A, b, lo, hi, small_s = INSTANCES[k]
    prep = prepare(A, b, lo, hi)
    assert prep.scaled is not None and (prep.scaled.s < 1.0) == small_s  # the fixture is what it says
    res = solve_linf(A, b, lo, hi, backend=backend)
    assert res.status == "optimal", res.message
    bound = _weak_duality_bound(A, b, lo, hi, res.dual)
    assert res.lower_bound == pytest.approx(bound, rel=1e-9)
    assert bound <= res.z * (1 + 1e-9)  # r is feasible (to 1e-12): weak duality
    assert res.max_violation <= 1e-12 * float(torch.as_tensor(b).abs().max())
    assert res.gap <= 1e-6 and res.gap == pytest.approx((res.z - bound) / res.z, abs=1e-9)


@pytest.mark.parametrize("scale", [0.01, 1.0, 100.0])
def test_hand_made_lps_have_their_exact_optimum_and_bound(scale):
    # r1 + r2 <= -0.5 s: z* = 0.25 s;  2 r1 <= -s and r2 <= -3 s: z* = 3 s (the second row binds)
    cases = [(np.array([[1.0, 1.0]]), np.array([-0.5]) * scale, 0.25 * scale),
             (np.array([[2.0, 0.0], [0.0, 1.0]]), np.array([-1.0, -3.0]) * scale, 3.0 * scale),
             (np.array([[2.0, 0.0, 0.0], [0.0, 1.0, -1.0], [1.0, 1.0, 1.0]]), np.array([-1.0, -3.0, 5.0]) * scale,
              1.5 * scale)]
    for A, b, z in cases:
        for batch in (False, True):
            res = (solve_linf_batch(torch.as_tensor(A)[None].repeat(2, 1, 1), torch.as_tensor(b)[None].repeat(2, 1))[1]
                   if batch else solve_linf(A, b))
            assert res.status == "optimal"
            assert res.z == pytest.approx(z, rel=1e-12)
            assert res.lower_bound == pytest.approx(z, rel=1e-9)
            r = np.asarray(torch.as_tensor(res.r))
            assert float((A @ r - b).max()) <= 1e-12 * scale


def test_an_over_claimed_bound_is_reported_not_capped(monkeypatch):
    A, b, lo, hi = mlalp_instance(8, 600, 2, seed=11, box=True)
    honest = solve_linf(A, b, lo, hi)
    real = problem.dual_bound
    # a certificate bug, wherever a bound is computed (the finish hands its own to the certificate)
    for module in (problem, finish, structured):
        monkeypatch.setattr(module, "dual_bound", lambda *a, **k: 1.5 * real(*a, **k))
    with pytest.raises(CertificateError, match="contradicts its solution"):
        solve_linf(A, b, lo, hi)
    with pytest.raises(CertificateError, match="contradicts its solution"):
        solve_linf_batch(A[None].repeat(2, 1, 1), b[None].repeat(2, 1), lo[None].repeat(2, 1), hi[None].repeat(2, 1))
    for module in (problem, finish, structured):
        monkeypatch.setattr(module, "dual_bound", real)
    assert solve_linf(A, b, lo, hi).lower_bound == honest.lower_bound


def test_a_bound_scaled_wrong_is_reported_even_when_r_is_slightly_infeasible():
    """A certificate that lost (or doubled) the scale factor s is not explained by r's violations."""
    import dataclasses

    A, b, lo, hi = mlalp_instance(10, 800, 2, seed=13, box=True)
    res = solve_linf(A, b, lo, hi)
    prep = prepare(A, b, lo, hi)
    P = prep.scaled
    lam_s = torch.as_tensor(res.dual)[P.rows] * P.row_norm
    r = torch.as_tensor(res.r)
    rho = (r if P.cols is None else r[P.cols]) / P.s
    lower, viol = certify(prep, rho, lam_s, r)  # the right one: no complaint
    assert lower == pytest.approx(res.lower_bound, rel=1e-12) and lower <= res.z * (1 + 1e-9)
    for factor in (1 / P.s, 3.0):  # s lost (s < 1 here), or a wrong one
        wrong = dataclasses.replace(prep, scaled=dataclasses.replace(P, s=P.s * factor))
        with pytest.raises(CertificateError, match="contradicts its solution"):
            certify(wrong, rho, lam_s, r * 0.999)  # even with r a little short (violating rows)


def test_a_bound_above_an_infeasible_r_is_returned_as_proved():
    """An r that violates A r <= b can have ||r||_inf below the optimum: the bound is then above
    z, explained by the violation (reported), and returned as proved, not capped."""
    A, b, _, _ = mlalp_instance(10, 800, 2, seed=12)
    res = solve_linf(A, b)
    prep = prepare(A, b)
    P = prep.scaled
    lam_s = torch.as_tensor(res.dual)[P.rows] * P.row_norm
    r = torch.as_tensor(res.r) * 0.9  # 10 % short of the optimum: infeasible
    rho = (r if P.cols is None else r[P.cols]) / P.s
    lower, viol = certify(prep, rho, lam_s, r)
    assert lower == pytest.approx(res.lower_bound, rel=1e-12)
    assert lower > float(r.abs().max()) * 1.1 and viol > 0.05 * float(b.abs().min())
    bound = _weak_duality_bound(A, b, None, None, res.dual)
    assert lower == pytest.approx(bound, rel=1e-9)


def test_the_brute_force_bound_by_hand():
    u = torch.tensor([1.0, -2.0, 0.0, 4.0], dtype=torch.float64)
    lo = torch.tensor([-0.1, -5.0, -1.0, -0.5], dtype=torch.float64)
    hi = torch.tensor([3.0, 0.2, 1.0, 1.0], dtype=torch.float64)
    # rooms 0.1 (u > 0), 0.2 (u < 0), -, 0.5: H(z) = min(z,.1) + 2 min(z,.2) + 4 min(z,.5)
    assert brute_dual_bound(u, 0.7, lo, hi) == pytest.approx(0.1)  # H(0.1) = 0.1 + 0.2 + 0.4
    assert brute_dual_bound(u, 1.0, lo, hi) == pytest.approx(0.1 + 0.3 / 6)
    assert brute_dual_bound(u, 2.0, lo, hi) == pytest.approx(0.2 + 0.7 / 4)  # H(0.2) = 1.3, slope 4
    assert brute_dual_bound(u, 2.5, lo, hi) == pytest.approx(0.5)  # H(0.5) = 2.5: every room used
    assert math.isinf(brute_dual_bound(u, 2.6, lo, hi)) and brute_dual_bound(u, -1.0, lo, hi) == 0.0
    assert brute_dual_bound(u, 1.4) == pytest.approx(0.2)  # no box: c / sum |u|


def test_an_infeasibility_proof_with_any_r_is_returned_as_proved():
    """A dual point that proves the LP infeasible bounds z by inf; any r then violates a row, and
    certify returns the proof with the violation instead of failing."""
    A, b, _, _ = mlalp_instance(20, 2000, 3, seed=1)
    x = torch.full((2000,), 0.5, dtype=torch.float64)
    lo, hi = -x, 1 - x
    res = solve_linf(A, b * 300, lo, hi)
    assert res.status == "infeasible"
    prep = prepare(A, b * 300, lo, hi)
    P = prep.scaled
    lam_s = torch.as_tensor(res.dual)[P.rows] * P.row_norm
    for r in (torch.zeros(2000, dtype=torch.float64), torch.full((2000,), 0.01, dtype=torch.float64)):
        rho = (r if P.cols is None else r[P.cols]) / P.s
        lower, viol = certify(prep, rho, lam_s, r)
        assert math.isinf(lower) and viol > 0


def test_the_box_violation_is_reported_on_both_sides():
    A, b, lo, hi = mlalp_instance(8, 600, 2, seed=14, box=True)
    res = solve_linf(A, b, lo, hi)
    prep = prepare(A, b, lo, hi)
    P = prep.scaled
    lam_s = torch.as_tensor(res.dual)[P.rows] * P.row_norm
    for side, k in ((hi, 1.0), (lo, -1.0)):
        r = torch.as_tensor(res.r).clone()
        j = int(torch.argmin(side.abs()))  # a pixel at 0 or 1: no room on that side
        r[j] = side[j] + k * 0.004
        rho = (r if P.cols is None else r[P.cols]) / P.s
        _, viol = certify(prep, rho, lam_s, r)
        assert viol == pytest.approx(0.004, rel=1e-9)


@pytest.mark.parametrize("side", ["upper", "lower"])
def test_a_bound_above_r_explained_by_its_box_violation_is_returned_as_proved(side):
    """r1 + r2 >= 1 with r1 <= 0.1 (upper) or -r1 - r2 >= 1 with r1 >= -0.1 (lower): z* = 0.9, and
    the one dual point proves 0.9. r = +-(0.5, 0.5) meets the row but leaves the box by 0.4, so
    ||r||_inf = 0.5 is below the bound: the box widened by r's violation (r1 up to 0.5) explains
    exactly that (the same dual point proves 0.5 there), so the bound is returned as proved, with
    the violation; a box narrowed instead (0.1 - 0.4) would not explain it."""
    k = 1.0 if side == "upper" else -1.0
    A = np.array([[-k, -k]])
    b = np.array([-1.0])
    lo, hi = (np.array([-1.0, -1.0]), np.array([0.1, 1.0])) if side == "upper" else \
        (np.array([-0.1, -1.0]), np.array([1.0, 1.0]))
    res = solve_linf(A, b, lo, hi)
    assert res.status == "optimal" and res.z == pytest.approx(0.9, rel=1e-12)
    assert res.lower_bound == pytest.approx(0.9, rel=1e-9)
    prep = prepare(A, b, lo, hi)
    P = prep.scaled
    lam_s = torch.as_tensor(res.dual)[P.rows] * P.row_norm
    r = torch.tensor([0.5, 0.5], dtype=torch.float64) * k
    assert float((torch.as_tensor(A) @ r - torch.as_tensor(b)).max()) <= 0.0  # the row holds; only the box fails
    rho = (r if P.cols is None else r[P.cols]) / P.s
    lower, viol = certify(prep, rho, lam_s, r)
    assert lower == pytest.approx(0.9, rel=1e-9) and lower > float(r.abs().max())
    assert viol == pytest.approx(0.4, rel=1e-9)
    assert _weak_duality_bound(A, b, lo, hi, res.dual) == pytest.approx(lower, rel=1e-9)
