"""The batched LP solver (lp/batched.py): the same certified optima as one LP at a time.

Its pieces (the batched line search and Newton directions) are checked against the one-image
ones, and whole batches against ``solve_linf`` on every regime of the sweep, with the search
narrowed as at full size, and on batches that mix what ``prepare`` can find (r = 0, a zero row
with b < 0, dropped rows, columns that cannot move, rows that cancel).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from lp_instances import SWEEP, brute_dual_bound, brute_line_search, mlalp_instance, sweep_instance

from mlalp_core.errors import InvalidInputError
from mlalp_core.lp import solve_linf, solve_linf_batch


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


def _same(one, many) -> None:
    for i, (a, b) in enumerate(zip(one, many)):
        assert a.status == b.status, (i, a.summary(), b.summary())
        if a.status == "optimal":
            assert b.z == pytest.approx(a.z, rel=1e-8, abs=1e-15), (i, a.summary(), b.summary())
            assert b.gap <= 1e-8 and b.max_violation <= 1e-12, (i, b.summary())
            assert b.lower_bound <= a.z * (1 + 1e-12) and a.lower_bound <= b.z * (1 + 1e-12)


@pytest.mark.parametrize("box", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_batched_line_search_finds_each_images_minimiser(box, dtype):
    from mlalp_core.lp.batched_newton import line_search

    g = torch.Generator().manual_seed(5)
    B, n = 6, 3000
    u = torch.randn(B, n, generator=g, dtype=torch.float64)
    u[:, :30] = 0.0  # coordinates at their kink
    scales = torch.tensor([1.0, 0.01, 100.0, 1e-4, 1.0, 30.0], dtype=torch.float64)[:, None]
    v = (torch.randn(B, n, generator=g, dtype=torch.float64) * 0.1 - 0.02 * torch.sign(u)) * scales
    t_max = np.array([math.inf, math.inf, math.inf, math.inf, 0.3, 1e-3])
    if box:
        alpha = torch.rand(B, n, generator=g, dtype=torch.float64).to(dtype)
        gamma = torch.rand(B, n, generator=g, dtype=torch.float64).to(dtype)
    else:
        alpha = gamma = torch.ones(B, n, dtype=dtype)
    run = np.array([True, True, True, True, True, True])
    t = line_search(u.to(dtype), v.to(dtype), alpha, gamma, t_max, run)
    for i in range(B):
        t_ref, f_ref, f = brute_line_search(u[i].to(dtype), v[i].to(dtype), alpha[i] if box else None,
                                            gamma[i] if box else None, float(t_max[i]))
        assert 0.0 <= t[i] <= t_max[i]
        assert f(t[i]) <= f_ref + 1e-12 * abs(f_ref) + (1e-6 * abs(f_ref) if dtype == torch.float32 else 0.0)
    # an image that does not run does not move
    run[2] = False
    assert line_search(u.to(dtype), v.to(dtype), alpha, gamma, t_max, run)[2] == 0.0


def test_the_batched_newton_directions_are_the_one_image_ones():
    from mlalp_core.lp.batched_newton import newton_directions
    from mlalp_core.lp.dual_newton import _newton_direction

    rng = np.random.default_rng(3)
    B, m = 7, 9
    X = rng.standard_normal((B, m, 40))
    H = X @ X.transpose(0, 2, 1)
    g = rng.standard_normal((B, m))
    beta = -rng.random((B, m))
    lam = rng.random((B, m))
    lam[rng.random((B, m)) < 0.4] = 0.0  # duals at their bound: the active set works on them
    keep = rng.random((B, m)) < 0.8
    keep[:, 0] = True
    run = np.ones(B, dtype=bool)
    run[4] = False
    d = newton_directions(g, H, beta, lam, keep, run)
    for i in range(B):
        if not run[i]:
            assert not d[i].any()
            continue
        k = np.flatnonzero(keep[i])
        ref = _newton_direction(g[i, k], H[i][np.ix_(k, k)], beta[i, k], lam[i, k])
        np.testing.assert_allclose(d[i, k], ref, rtol=1e-7, atol=1e-9 * np.abs(ref).max())
        assert not d[i, ~keep[i]].any()


@pytest.mark.parametrize("narrowed", [False, True])
@pytest.mark.parametrize("k", range(len(SWEEP)))
def test_a_batch_has_the_optima_of_one_lp_at_a_time_on_every_regime(monkeypatch, k, narrowed):
    import mlalp_core.lp.search as search

    if narrowed:  # the narrowed search runs above 50,000 columns: made to run here
        monkeypatch.setattr(search, "_REDUCE_MIN_N", 1000)
    insts = [sweep_instance(k, 20, 3000, seed=11 * k + s) for s in range(3)]
    A, b = torch.stack([i[0] for i in insts]), torch.stack([i[1] for i in insts])
    lo = hi = None
    if insts[0][2] is not None:
        lo, hi = torch.stack([i[2] for i in insts]), torch.stack([i[3] for i in insts])
    many = solve_linf_batch(A, b, lo, hi)
    one = [solve_linf(*i) for i in insts]
    _same(one, many)
    assert all(r.info["batch"] == 3 for r in many)
    if narrowed and k >= 3:  # the hard regimes go past the full phase: the narrowed search ran
        assert any(r.info.get("narrowed_rounds", 0) >= 1 for r in many)


@pytest.mark.parametrize("box", [False, True])
def test_a_batch_mixes_what_prepare_finds_with_lps_to_solve(box):
    d = 2000
    parts = [mlalp_instance(12, d, n_neg=2, seed=s, box=box) for s in range(6)]
    A = torch.stack([p[0] for p in parts])
    b = torch.stack([p[1] for p in parts])
    lo = torch.stack([p[2] for p in parts]) if box else None
    hi = torch.stack([p[3] for p in parts]) if box else None
    b[1] = b[1].abs()  # b >= 0: r = 0 is optimal
    A[2, 4] = 0.0  # a zero row ...
    b[2, 4] = -1e-3  # ... that must cross: infeasible
    A[3, 5] = 0.0  # a zero row with slack: dropped
    b[3, 5] = 1e-3
    A[4, :, : d // 3] = 0.0  # columns that cannot move anything
    A[5, 1] = -A[5, 0]  # two rows that cancel ...
    b[5, 0] = b[5, 1] = -1e-3  # ... and both must cross: infeasible
    many = solve_linf_batch(A, b, lo, hi)
    one = [solve_linf(A[i], b[i], None if lo is None else lo[i], None if hi is None else hi[i]) for i in range(6)]
    _same(one, many)
    assert [r.status for r in many] == ["optimal", "optimal", "infeasible", "optimal", "optimal", "infeasible"]
    assert many[1].z == 0.0
    assert not many[4].r[: d // 3].any()  # a column that cannot move anything stays 0


def test_a_float32_batch_and_the_authors_zero_rows():
    parts = [mlalp_instance(10, 1500, n_neg=1, seed=s, box=True, dtype=torch.float32) for s in range(4)]
    A = torch.stack([p[0] for p in parts])
    b = torch.stack([p[1] for p in parts])
    lo, hi = torch.stack([p[2] for p in parts]), torch.stack([p[3] for p in parts])
    A[0, 3] = 0.0
    b[0, 3] = -1e-3  # infeasible, unless the row is dropped as the authors do
    for drop in (False, True):
        many = solve_linf_batch(A, b, lo, hi, drop_zero_rows=drop)
        one = [solve_linf(A[i], b[i], lo[i], hi[i], drop_zero_rows=drop) for i in range(4)]
        _same(one, many)
        assert many[0].status == ("optimal" if drop else "infeasible")
        assert isinstance(many[2].r, torch.Tensor) and many[2].r.shape == (1500,)


def test_bad_batches_get_one_clear_line():
    A = torch.randn(3, 4, 50)
    b = -torch.ones(3, 4)
    with pytest.raises(InvalidInputError, match=r"\(B, l, d\)"):
        solve_linf_batch(A[0], b[0])
    with pytest.raises(InvalidInputError, match="b must have shape"):
        solve_linf_batch(A, b[:2])
    with pytest.raises(InvalidInputError, match="lo must have shape"):
        solve_linf_batch(A, b, -torch.ones(3, 49), torch.ones(3, 50))
    with pytest.raises(InvalidInputError, match="both lo and hi"):
        solve_linf_batch(A, b, -torch.ones(3, 50), None)
    with pytest.raises(InvalidInputError, match="unknown LP backend"):
        solve_linf_batch(A, b, backend="simplex")
    with pytest.raises(InvalidInputError, match="finite"):
        solve_linf_batch(torch.full((2, 4, 50), math.nan), -torch.ones(2, 4))


def test_other_backends_solve_a_batch_one_lp_at_a_time():
    parts = [mlalp_instance(6, 300, n_neg=1, seed=s) for s in range(2)]
    A, b = torch.stack([p[0] for p in parts]), torch.stack([p[1] for p in parts])
    many = solve_linf_batch(A, b, backend="highs")
    assert [r.backend for r in many] == ["highs", "highs"]
    _same([solve_linf(A[i], b[i]) for i in range(2)], many)


@pytest.mark.parametrize("box", [False, True])
def test_the_batched_dual_bounds_are_the_one_image_ones(box):
    from mlalp_core.lp.problem import dual_bound, dual_bounds

    g = torch.Generator().manual_seed(9)
    B, n = 5, 4000
    u = torch.randn(B, n, generator=g, dtype=torch.float64)
    u[:, :50] = 0.0
    lo = hi = None
    if box:
        lo = -torch.rand(B, n, generator=g, dtype=torch.float64)
        hi = torch.rand(B, n, generator=g, dtype=torch.float64)
        lo[:, 100:300] = 0.0  # saturated: no room on one side
        hi[:, 200:400] = 0.0
    total = (u.abs() * (torch.minimum(-lo, hi).abs() if box else 1.0)).sum(1).numpy()
    # below, around and beyond what the rooms allow (beyond: infeasible, inf), and c <= 0
    c = np.array([0.01, 1.0, 0.5 * total[2], -1.0, (1e6 if box else 3.0) * total[4]])
    got = dual_bounds(u, c, lo, hi)
    for i in range(B):
        ref = dual_bound(u[i], float(c[i]), None if lo is None else lo[i], None if hi is None else hi[i])
        # the one-image bound by a sort (the GPU's way), checked before it certifies
        by_sort = dual_bound(u[i], float(c[i]), None if lo is None else lo[i], None if hi is None else hi[i],
                             sort=True)
        # by the definition, independently of both ways (the sort-free search and the sort)
        brute = brute_dual_bound(u[i], float(c[i]), None if lo is None else lo[i], None if hi is None else hi[i])
        assert math.isinf(brute) == math.isinf(ref) and (math.isinf(brute) or ref == pytest.approx(brute, rel=1e-9))
        if math.isinf(ref):
            assert math.isinf(got[i]) and math.isinf(by_sort)
        else:
            assert by_sort == pytest.approx(brute, rel=1e-9)
            assert got[i] == pytest.approx(ref, rel=1e-12, abs=1e-300)
            assert by_sort == pytest.approx(ref, rel=1e-12, abs=1e-300)
            if box and c[i] > 0:  # never too large: just below it, the aggregated constraint is not yet met (to rounding)
                rm = torch.where(u[i] > 0, -lo[i], hi[i])
                assert float((u[i].abs() * rm.clamp(max=math.nextafter(by_sort, 0.0))).sum()) < c[i] * (1 + 1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("k", [1, 4, 7])
def test_a_batch_on_the_gpu_has_the_cpus_optima(monkeypatch, k):
    import mlalp_core.lp.search as search

    monkeypatch.setattr(search, "_REDUCE_MIN_N", 1000)
    insts = [sweep_instance(k, 20, 3000, seed=5 * k + s, dtype=torch.float32) for s in range(4)]
    A, b = torch.stack([i[0] for i in insts]), torch.stack([i[1] for i in insts])
    lo = hi = None
    if insts[0][2] is not None:
        lo, hi = torch.stack([i[2] for i in insts]), torch.stack([i[3] for i in insts])
    gpu = solve_linf_batch(A.cuda(), b.cuda(), None if lo is None else lo.cuda(), None if hi is None else hi.cuda())
    assert all(r.r.is_cuda for r in gpu if r.status == "optimal")
    _same([solve_linf(*i) for i in insts], gpu)
