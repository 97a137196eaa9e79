"""The exact l_inf LP solver against HiGHS, on many instances of the MLA-LP shape."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from lp_instances import SWEEP, brute_line_search, mlalp_instance, sweep_instance

from mlalp_core.errors import ConfigurationError, InvalidInputError, SolverError
from mlalp_core.lp import solve_linf


def _row_violation(A, b, r):
    """max_j (A r - b)_j relative to the row's own scale |b_j| + ||A_j||_1 ||r||_inf."""
    A = torch.as_tensor(np.asarray(A), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(b), dtype=torch.float64)
    r = torch.as_tensor(np.asarray(r), dtype=torch.float64)
    scale = b.abs() + A.abs().sum(1) * r.abs().max() + 1e-300
    return float(((A @ r - b) / scale).max().clamp(min=0))


def _check_against_highs(A, b, lo=None, hi=None):
    ours = solve_linf(A, b, lo, hi)
    ref = solve_linf(A, b, lo, hi, backend="highs")
    assert ours.status == ref.status, (ours.message, ref.message)
    if ref.status != "optimal":
        return ours, ref
    assert ours.z == pytest.approx(ref.z, rel=1e-6, abs=1e-15)
    r = torch.as_tensor(np.asarray(ours.r))
    # a feasible point: A r <= b, |r| <= z, and the box
    assert _row_violation(A, b, r) <= 1e-12
    assert float(r.abs().max()) <= ours.z * (1 + 1e-12) + 1e-300
    if lo is not None:
        assert bool((r >= lo - 1e-12).all()) and bool((r <= hi + 1e-12).all())
    # the certificate is a true lower bound on the reference optimum, and tight (HiGHS's own z is
    # exact only to its feasibility tolerance: its r violates rows by ~1e-12, which moves z ~1e-9)
    assert ours.lower_bound <= ref.z * (1 + 1e-8) + 1e-300
    assert ours.gap <= 1e-6
    return ours, ref


@pytest.mark.parametrize("seed", range(24))
def test_random_instances_match_highs(seed):
    l = [1, 2, 3, 5, 10, 20][seed % 6]
    d = [40, 300, 1500, 3000][seed % 4]
    n_neg = [1, 2, 3][seed % 3]
    A, b, lo, hi = mlalp_instance(l, d, n_neg, seed=1000 + seed, box=bool(seed % 2))
    _check_against_highs(A, b, lo, hi)


def test_float32_torch_and_numpy_inputs_give_the_same_optimum():
    A, b, _, _ = mlalp_instance(20, 2000, 3, seed=7)
    r64 = solve_linf(A, b)
    r32 = solve_linf(A.float(), b.float())
    rnp = solve_linf(A.float().numpy(), b.float().numpy())
    assert isinstance(r32.r, torch.Tensor) and isinstance(rnp.r, np.ndarray)
    # float32 data is a slightly different problem; both are solved exactly
    assert r32.z == pytest.approx(rnp.z, rel=1e-12)
    assert r32.z == pytest.approx(r64.z, rel=1e-5)


def test_degenerate_and_tied_instances():
    A, b, _, _ = mlalp_instance(20, 2000, 3, seed=1)
    _check_against_highs(torch.cat([A, A[:3]]), torch.cat([b, b[:3] * 0.5]))  # duplicate rows
    _check_against_highs(A[:, :200].repeat(1, 10), b)  # repeated columns: ties everywhere
    quant = torch.sign(A) * (A.abs() > A.abs().median()).double() * 1e-3
    _check_against_highs(quant, b)  # few distinct values
    A0 = A.clone()
    A0[:, ::3] = 0.0
    _check_against_highs(A0, b)  # columns that do not matter


def test_single_binding_row_is_solved_exactly():
    """Only one constraint binds: z* = -b_j / ||A_j||_1 exactly (a case a tolerance-bound master misses)."""
    A, b, _, _ = mlalp_instance(20, 20000, 1, seed=602113)
    (j,) = (b < 0).nonzero().flatten().tolist()
    zj = float(-b[j] / A[j].abs().sum())
    candidate = -torch.sign(A[j]) * zj  # A_j r = b_j at ||r||_inf = zj, the least any r can have
    others = torch.arange(len(b)) != j
    b[others] = torch.maximum(b[others], A[others] @ candidate + 1e-6)  # every other row slack there
    assert bool((A @ candidate <= b + 1e-12 * b.abs()).all())  # row j binds (to rounding)
    res = solve_linf(A, b)
    assert res.z == pytest.approx(zj, rel=1e-12)
    assert res.lower_bound == pytest.approx(zj, rel=1e-9) and res.gap <= 1e-9


def test_scales_do_not_matter():
    A, b, _, _ = mlalp_instance(20, 1000, 3, seed=3)
    base = solve_linf(A, b)
    assert solve_linf(A * 1e-9, b * 1e-9).z == pytest.approx(base.z, rel=1e-9)
    assert solve_linf(A * 1e9, b).z == pytest.approx(base.z * 1e-9, rel=1e-9)
    mixed = torch.logspace(-6, 6, 20, dtype=torch.float64)[:, None]
    _check_against_highs(A * mixed, b)


def test_zero_rows():
    A, b, _, _ = mlalp_instance(20, 1000, 3, seed=4)
    A[5] = 0.0
    b_ok = b.clone()
    b_ok[5] = 1e-3
    _check_against_highs(A, b_ok)  # dropped
    b_bad = b.clone()
    b_bad[5] = -1e-3
    res = solve_linf(A, b_bad)
    assert res.status == "infeasible" and "row 5" in res.message
    assert torch.as_tensor(res.dual)[5] > 0


def test_nothing_to_do_gives_zero():
    A, b, _, _ = mlalp_instance(5, 100, 1, seed=5)
    res = solve_linf(A, b.abs())
    assert res.status == "optimal" and res.z == 0.0 and float(torch.as_tensor(res.r).abs().max()) == 0.0


def test_infeasible_box_is_reported_with_a_certificate():
    A, b, _, _ = mlalp_instance(20, 2000, 3, seed=1)
    x = torch.full((2000,), 0.5, dtype=torch.float64)
    res = solve_linf(A, b * 300, -x, 1 - x)
    assert res.status == "infeasible"
    # Farkas: sum_i |u_i| room_i < -b.lam, so no r in the box satisfies the aggregated row
    lam = torch.as_tensor(res.dual)
    u = lam @ A
    assert float((u.abs() * 0.5).sum()) < float(-(b * 300) @ lam)
    assert solve_linf(A, b * 300, -x, 1 - x, backend="highs").status == "infeasible"


def test_cancelling_rows_are_reported_infeasible():
    A, b, _, _ = mlalp_instance(20, 2000, 3, seed=1)
    A2 = torch.cat([A, -A[:1]])
    b2 = torch.cat([b, torch.tensor([-float(b[0]) - 1e-3], dtype=torch.float64)])
    assert solve_linf(A2, b2).status == "infeasible"


def test_saturated_pixels_and_tight_boxes():
    A, b, _, _ = mlalp_instance(20, 2000, 2, seed=9)
    x = (torch.rand(2000, generator=torch.Generator().manual_seed(0)) > 0.5).double()  # pixels at 0 or 1
    _check_against_highs(A, b, -x, 1 - x)
    x = torch.full((2000,), 0.02, dtype=torch.float64)  # the box binds on one side everywhere
    _check_against_highs(A, b, -x, 1 - x)


def test_bad_input_is_explained():
    A, b, _, _ = mlalp_instance(3, 10, 1, seed=0)
    with pytest.raises(InvalidInputError, match="b must have 3"):
        solve_linf(A, b[:2])
    with pytest.raises(InvalidInputError, match="finite"):
        solve_linf(A * float("nan"), b)
    with pytest.raises(InvalidInputError, match="contain 0"):
        solve_linf(A, b, lo=torch.full((10,), 0.1), hi=torch.ones(10))
    with pytest.raises(InvalidInputError, match="unknown LP backend"):
        solve_linf(A, b, backend="cplex")


def test_mosek_without_a_licence_names_the_file(monkeypatch, tmp_path):
    pytest.importorskip("mosek")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("MOSEKLM_LICENSE_FILE", raising=False)
    A, b, _, _ = mlalp_instance(3, 10, 1, seed=0)
    with pytest.raises(SolverError, match="mosek.lic"):
        solve_linf(A, b, backend="mosek")


def test_device_placement_follows_A():
    A, b, _, _ = mlalp_instance(5, 200, 1, seed=2)
    res = solve_linf(A.float(), b)
    assert res.r.device == A.device and res.r.dtype == torch.float64
    assert math.isfinite(res.z) and res.passes > 0


@pytest.mark.parametrize("l", [20, 80])
@pytest.mark.parametrize("k", range(len(SWEEP)))
def test_every_regime_of_the_sweep_matches_highs(l, k):
    # l = 80 at d = 1,200 also gives masters on which HiGHS's dual simplex cycled at 1e-10
    A, b, lo, hi = sweep_instance(k, l, 1200, seed=31 * k + l)
    _check_against_highs(A, b, lo, hi)


@pytest.mark.parametrize("k", [4, 5, 7])
def test_the_dual_search_gets_near_the_optimum_when_many_rows_are_active(k):
    # Its signs fix the finish's master: a search left 2.4 % off (a dual stuck a hair above 0,
    # re-blocked every step) sent thousands of coordinates to the master (139 s at d = 27,648).
    A, b, lo, hi = sweep_instance(k, 20, 6000, seed=27648 + 20)
    res = solve_linf(A.float(), b, lo, hi)
    assert res.status == "optimal" and res.gap <= 1e-6
    assert res.info.get("search_gap", 1.0) <= 1e-4, res.info


def test_the_cpu_solver_runs_on_the_threads_it_is_given_and_restores_them(monkeypatch):
    import mlalp_core.lp.structured as structured

    seen = []
    real = structured.solve_structured

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(structured, "solve_structured", spy)
    A, b, _, _ = mlalp_instance(5, 300, 1, seed=3)
    before = torch.get_num_threads()
    solve_linf(A, b)
    monkeypatch.setenv("MLALP_LP_THREADS", "2")
    solve_linf(A, b)
    assert seen == [1, 2] and torch.get_num_threads() == before
    for bad in ("0", "two", "-1", "1.5"):
        monkeypatch.setenv("MLALP_LP_THREADS", bad)
        with pytest.raises(ConfigurationError, match="MLALP_LP_THREADS must be a whole number"):
            solve_linf(A, b)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("box", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", range(6))
def test_the_bracketed_line_search_finds_the_exact_minimiser(box, dtype, case):
    from mlalp_core.lp.dual_newton import _line_search

    g = torch.Generator().manual_seed(100 + case)
    n = 3000
    u = torch.randn(n, generator=g, dtype=torch.float64)
    u[:30] = 0.0  # coordinates exactly at their kink
    scale = [1.0, 0.01, 100.0, 1e-4, 1.0, 30.0][case]
    v = (torch.randn(n, generator=g, dtype=torch.float64) * 0.1 - 0.02 * torch.sign(u)) * scale
    t_max = [math.inf, math.inf, math.inf, math.inf, 0.3, 1e-3][case]
    alpha = gamma = None
    if box:
        alpha = torch.rand(n, generator=g, dtype=torch.float64).to(dtype)
        gamma = torch.rand(n, generator=g, dtype=torch.float64).to(dtype)
    u, v = u.to(dtype), v.to(dtype)
    t = _line_search(u, v, alpha, gamma, t_max)
    t_ref, f_ref, f = brute_line_search(u, v, alpha, gamma, t_max)
    assert 0.0 <= t <= t_max
    # the value is the minimum (the minimiser may be an interval when the slope is 0 on a piece)
    assert f(t) <= f_ref + 1e-12 * abs(f_ref) + (1e-6 * abs(f_ref) if dtype == torch.float32 else 0.0)


@pytest.mark.parametrize("k", range(len(SWEEP)))
def test_the_narrowed_search_is_exact_on_every_regime(monkeypatch, k):
    # The narrowed search runs above 50,000 columns; made to run at d = 3,000 (with a narrowed set
    # of 100 columns, so that signs flip and rounds repeat), it must give HiGHS's optimum.
    import mlalp_core.lp.search as search

    monkeypatch.setattr(search, "_REDUCE_MIN_N", 1000)
    monkeypatch.setattr(search, "_REDUCE_FRACTION", 30)
    A, b, lo, hi = sweep_instance(k, 20, 3000, seed=7 * k + 1)
    ours, _ = _check_against_highs(A, b, lo, hi)
    if ours.info.get("newton_iterations", 0) > search._FULL_NEWTON:  # the search went past the full phase
        assert ours.info["narrowed_rounds"] >= 1


def test_flipped_signs_rejoin_the_narrowed_problem(monkeypatch):
    import mlalp_core.lp.search as search

    monkeypatch.setattr(search, "_REDUCE_MIN_N", 1000)
    monkeypatch.setattr(search, "_FULL_NEWTON", 1)  # a rough start: many signs are wrong
    A, b, lo, hi = sweep_instance(4, 20, 4000, seed=5)
    ours, _ = _check_against_highs(A, b, lo, hi)
    assert ours.info["narrowed_rounds"] >= 2  # the first narrowed answer flipped signs outside the set


def test_narrowing_changes_the_work_not_the_answer(monkeypatch):
    # d = 60,000: above the threshold; the same problem with narrowing switched off gives the same z
    import mlalp_core.lp.search as search

    A, b, lo, hi = sweep_instance(7, 20, 60_000, seed=11)
    narrowed = solve_linf(A.float(), b, lo, hi)
    monkeypatch.setattr(search, "_REDUCE_MIN_N", 10**9)
    plain = solve_linf(A.float(), b, lo, hi)
    assert narrowed.status == plain.status == "optimal"
    assert narrowed.info["narrowed_rounds"] >= 1 and "narrowed_rounds" not in plain.info
    assert narrowed.z == pytest.approx(plain.z, rel=1e-6)
    assert narrowed.lower_bound <= plain.z * (1 + 1e-7) and plain.lower_bound <= narrowed.z * (1 + 1e-7)
    assert narrowed.passes < plain.passes


@pytest.mark.parametrize("k", [4, 7, 8, 11])
def test_nested_narrowing_is_exact(monkeypatch, k):
    # Narrowed problems narrow again (d = 602,112: 75,000, 19,000, then 4,700 columns); made to
    # nest three levels deep at d = 6,000, with sets small enough that signs flip at every level,
    # the answer must still be HiGHS's.
    import mlalp_core.lp.search as search

    monkeypatch.setattr(search, "_REDUCE_MIN_N", 1000)
    monkeypatch.setattr(search, "_NESTED_MIN_N", 200)
    monkeypatch.setattr(search, "_MIN_SIZE", 60)
    monkeypatch.setattr(search, "_MIN_PER_ROW", 3)
    monkeypatch.setattr(search, "_NESTED_PER_ROW", 10)
    depths = []
    real = search._search

    def spy(*args, **kwargs):
        depths.append(kwargs.get("depth", 0))
        return real(*args, **kwargs)

    monkeypatch.setattr(search, "_search", spy)
    A, b, lo, hi = sweep_instance(k, 20, 6000, seed=13 * k + 5)
    ours, _ = _check_against_highs(A, b, lo, hi)
    assert max(depths) >= 2, depths


@pytest.mark.parametrize("seed", range(12))
def test_newtons_dual_bound_is_the_sorted_one(seed):
    # The bound a dual point proves, the smallest z with sum_i q_i min(z, tau_i) >= c, by Newton's
    # method from below, against an oracle that sorts the breakpoints and walks them.
    from mlalp_core.lp.selection import concave_crossing

    g = torch.Generator().manual_seed(seed)
    n = [5, 300, 20000][seed % 3]
    tau = torch.rand(n, generator=g, dtype=torch.float64) * [1.0, 10.0, 100.0][seed % 3]
    if seed % 4 == 0:
        tau[torch.rand(n, generator=g) < 0.3] = 0.0  # no room at all: saturated pixels
    if seed % 4 == 1:
        tau = (tau * 255).round() / 255  # quantised pixels: tied breakpoints
    if seed % 4 == 2:
        tau[: n // 5] = math.inf  # unbounded coordinates
    q = torch.rand(n, generator=g, dtype=torch.float64) ** 3
    cap = float((q * tau.clamp(max=1e6)).sum()) if seed % 4 != 2 else float(q.sum()) * 1e3
    for frac in (0.05, 0.5, 0.97, 1.5):
        c = frac * min(cap, float(q.sum()) * float(tau[torch.isfinite(tau)].max()))

        def oracle() -> float:
            order = torch.argsort(tau)
            ts, qs = tau[order], q[order]
            below = 0.0  # sum of q_i tau_i over breakpoints passed
            rest = float(qs.sum())  # sum of q_i over breakpoints not passed: H's slope
            prev = 0.0
            for j, (t_i, q_i) in enumerate(zip(ts.tolist(), qs.tolist())):
                # on [prev, t_i] H(z) = below + rest * z
                if rest > 0 and below + rest * t_i >= c:
                    return max(prev, (c - below) / rest)
                if math.isinf(t_i):  # the rest never stop rising: H reaches c beyond
                    return max(prev, (c - below) / float(qs[j:].sum()))
                below += q_i * t_i
                rest -= q_i
                prev = t_i
            return math.inf  # every breakpoint passed: H is flat from there, below c

        want, got = oracle(), concave_crossing(tau, q, c)
        if math.isinf(want):
            assert math.isinf(got)
        else:
            assert got == pytest.approx(want, rel=1e-12, abs=1e-300), (frac, got, want)
            assert got <= want * (1 + 1e-13)  # a certificate: never above the true bound
