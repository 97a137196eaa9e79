"""lp/problem.py against its docstring, with dense float64 computations made here: the reduced
problem prepare() hands every backend (rows scaled to unit l1 norm, only the columns that can
matter, rho = r / s with s = max_j(-b_j / ||A_j||_1) so that min(beta) = -1, the box scaled
too), the answers found while preparing, the scaled operator's products (chunked float32 in
float64), and the dual bound without and with a box."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from lp_instances import brute_dual_bound

import mlalp_core.lp.problem as problem
from mlalp_core.errors import InvalidInputError
from mlalp_core.lp.problem import dual_bound, dual_bounds, matvec64, prepare, room


def _instance(seed=0, l=6, d=40):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(l, d, generator=g, dtype=torch.float64)
    b = torch.rand(l, generator=g, dtype=torch.float64) + 0.1
    b[[1, 4]] = torch.tensor([-0.3, -0.7], dtype=torch.float64)
    return A, b


def test_prepare_scales_rows_and_z_as_documented():
    A, b = _instance()
    A[2] = 0.0  # a zero row with b > 0: dropped
    A[:, 5] = 0.0  # a column that touches no kept row: dropped
    prep = prepare(A, b)
    P = prep.scaled
    assert prep.trivial is None and P is not None
    norms = A.abs().sum(1)
    s = float((-b / norms.clamp(min=1e-300))[norms > 0].max())
    assert P.s == pytest.approx(s, rel=1e-15) and P.s == pytest.approx(0.7 / float(norms[4]), rel=1e-15)
    assert P.rows.tolist() == [0, 1, 3, 4, 5] and P.cols is not None and 5 not in P.cols.tolist()
    assert P.shape == (5, 39) and P.device == A.device and P.search_dtype == torch.float64
    keep = A[P.rows][:, P.cols]
    assert torch.allclose(P.row_norm, norms[P.rows], rtol=1e-15)
    assert torch.allclose(P.beta, b[P.rows] / norms[P.rows] / s, rtol=1e-14)
    assert float(P.beta.min()) == pytest.approx(-1.0, rel=1e-15)
    dense = keep / norms[P.rows][:, None]
    assert torch.allclose(P.dense64(), dense, rtol=1e-14) and torch.allclose(dense.abs().sum(1), torch.ones(5, dtype=torch.float64))
    assert (prep.l, prep.d) == (6, 40) and torch.equal(prep.b, b)


def test_prepare_scales_the_box_and_keeps_only_columns_that_can_move():
    A, b = _instance(1)
    x = torch.rand(40, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    lo, hi = -x, 1 - x
    lo[7] = hi[7] = 0.0  # a pixel that cannot move
    hi[8] = -5e-13  # rounding noise around 0 is taken as 0 (r = 0 must satisfy the box)
    prep = prepare(A, b, lo, hi)
    P = prep.scaled
    assert 7 not in P.cols.tolist() and 8 in P.cols.tolist()
    assert float(prep.hi.min()) >= 0.0 and float(prep.lo.max()) <= 0.0
    assert torch.equal(prep.hi[:7], hi[:7]) and prep.hi[8] == 0.0
    assert torch.allclose(P.lo, prep.lo[P.cols] / P.s, rtol=1e-15) and torch.allclose(P.hi, prep.hi[P.cols] / P.s)
    # b as a column and the box shaped like the image: the same problem
    same = prepare(A, b[:, None], lo.reshape(4, 10), hi.reshape(4, 10))
    assert torch.equal(same.scaled.beta, P.beta) and torch.equal(same.scaled.lo, P.lo) and torch.equal(
        same.scaled.hi, P.hi) and torch.equal(same.scaled.cols, P.cols)
    # one side given: the other is unbounded; scalars broadcast
    one = prepare(A, b, lo=None, hi=torch.tensor(0.5))
    assert bool(torch.isinf(one.lo).all()) and bool((one.hi == 0.5).all()) and one.hi.shape == (40,)


def test_what_prepare_answers_itself():
    A, b = _instance(2)
    zero = prepare(A, b.abs())
    assert zero.trivial == "zero" and zero.scaled is None and "r = 0 is optimal" in zero.message
    b_tight = b.abs()
    b_tight[[0, 2]] = 0.0  # rows r = 0 meets exactly: still nothing to do
    assert prepare(A, b_tight).trivial == "zero"
    A0 = A.clone()
    A0[3] = 0.0
    b0 = b.clone()
    b0[3] = -1e-3
    bad = prepare(A0, b0)  # the default: a zero row that must cross makes the LP infeasible
    assert bad.trivial == "infeasible" and "row 3" in bad.message and bad.farkas.tolist() == [0, 0, 0, 1, 0, 0]
    dropped = prepare(A0, b0, drop_zero_rows=True)  # the authors' rule: the row is left out
    assert dropped.trivial is None and 3 not in dropped.scaled.rows.tolist()
    x = torch.zeros(40, dtype=torch.float64)
    stuck = prepare(A, b, -x, x)  # no pixel can move
    assert stuck.trivial == "infeasible" and "no pixel can move" in stuck.message
    assert stuck.farkas.tolist() == [0, 1, 0, 0, 0, 0]


def test_bounds_may_miss_zero_by_rounding_only():
    A, b = _instance(7)
    d = A.shape[1]
    f64 = dict(dtype=torch.float64)
    for lo, hi in ((torch.full((d,), 1e-12, **f64), torch.ones(d)), (-torch.ones(d), torch.full((d,), -1e-12, **f64))):
        prep = prepare(A, b, lo, hi)  # 1e-12 on the wrong side of 0: rounding, taken as 0
        assert float(prep.lo.max()) <= 0.0 <= float(prep.hi.min())
    for lo, hi in ((torch.full((d,), 2e-12, **f64), torch.ones(d)), (-torch.ones(d), torch.full((d,), -2e-12, **f64))):
        with pytest.raises(InvalidInputError, match="contain 0"):
            prepare(A, b, lo, hi)


def test_a_float_matrix_is_used_in_place_not_copied():
    A, b = _instance(8)
    for arr in (A.numpy(), A.float().numpy()):
        M = problem._as_matrix(arr)
        assert M.data_ptr() == arr.ctypes.data and M.dtype == {np.float64: torch.float64, np.float32: torch.float32}[
            arr.dtype.type]
    for t in (A, A.float()):
        assert problem._as_matrix(t).data_ptr() == t.data_ptr()


@pytest.mark.parametrize("args, words", [
    ((torch.ones(3), torch.ones(1)), "A must be a matrix"),
    ((torch.ones(2, 3), torch.ones(3)), "b must have 2 entries"),
    ((torch.full((2, 3), math.inf), -torch.ones(2)), "finite"),
    ((torch.ones(2, 3), torch.tensor([-1.0, math.nan])), "finite"),
    ((torch.tensor([[1.0, 2.0, 3.0], [1.0, math.nan, 0.0]]), -torch.ones(2)), "finite"),  # one entry of one row
    ((torch.ones(2, 3), -torch.ones(2), -torch.ones(4), torch.ones(3)), "lo and hi must have 3 entries"),
    ((torch.ones(2, 3), -torch.ones(2), torch.tensor([-1.0, math.nan, -1.0]), torch.ones(3)), "must not be NaN"),
    ((torch.ones(2, 3), -torch.ones(2), torch.full((3,), 1e-9), torch.ones(3)), "contain 0"),
    ((torch.ones(2, 3), -torch.ones(2), -torch.ones(3), torch.full((3,), -1e-9)), "contain 0"),
])
def test_bad_problems_are_refused_with_one_line(args, words):
    with pytest.raises(InvalidInputError, match=words):
        prepare(*args)


def test_inputs_keep_their_precision_and_integers_become_float64():
    A, b = _instance(3)
    assert prepare(A.float(), b).scaled.M.dtype == torch.float32
    assert prepare(A.float().numpy(), b.numpy()).scaled.M.dtype == torch.float32
    ints = prepare(torch.tensor([[1, 2], [3, -1]]), [-1.0, 2.0])
    assert ints.scaled.M.dtype == torch.float64 and ints.scaled.s == pytest.approx(1 / 3)
    assert prepare([[1, 2], [3, -1]], np.array([-1, 2])).scaled.M.dtype == torch.float64


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_scaled_operator_is_the_dense_matrix(monkeypatch, dtype):
    monkeypatch.setattr(problem, "_CHUNK", 7)  # several chunks over 40 columns
    A, b = _instance(4)
    P = prepare(A.to(dtype), b).scaled
    A64 = A.to(dtype).double()  # the data as given, in float64
    # the row norms of a float32 A are float32 sums (one rounding); the products are exact float64
    dense = A64 / A64.abs().sum(1, keepdim=True)
    rtol, atol = (1e-12, 1e-14) if dtype == torch.float64 else (1e-6, 1e-8)
    g = torch.Generator().manual_seed(5)
    v = torch.randn(40, generator=g, dtype=torch.float64)
    V = torch.randn(40, 3, generator=g, dtype=torch.float64)
    lam = torch.rand(6, generator=g, dtype=torch.float64)
    assert torch.allclose(P.matvec(v, exact=True) * P.row_norm, A64 @ v, rtol=1e-12, atol=1e-13)
    assert torch.allclose(P.matvec(v, exact=True), dense @ v, rtol=rtol, atol=atol)
    assert P.matvec(v, exact=True).dtype == torch.float64
    assert torch.allclose(P.matvec(V, exact=True) * P.row_norm[:, None], A64 @ V, rtol=1e-12, atol=1e-13)
    assert torch.allclose(P.matvec(v.to(dtype)).double(), dense @ v, rtol=1e-5, atol=1e-6)
    assert torch.allclose(P.rmatvec(lam, exact=True), dense.T @ lam, rtol=rtol, atol=atol)
    assert torch.allclose(P.rmatvec(lam * P.row_norm, exact=True), A64.T @ lam, rtol=1e-12, atol=1e-13)
    assert P.rmatvec(lam, exact=True).dtype == torch.float64
    assert torch.allclose(P.rmatvec(lam).double(), dense.T @ lam, rtol=1e-5, atol=1e-6)
    idx = torch.tensor([3, 0, 17])
    assert torch.allclose(P.columns(idx), dense[:, idx], rtol=rtol)
    assert torch.allclose(P.gram(), dense @ dense.T, rtol=rtol, atol=atol)
    assert torch.allclose(matvec64(A.to(dtype), V), A.to(dtype).double() @ V, rtol=1e-12, atol=1e-13)


def test_room_is_the_way_each_coordinate_can_go_down_the_aggregated_row():
    u = torch.tensor([2.0, -1.0, 0.0, 3.0], dtype=torch.float64)
    lo = torch.tensor([-0.1, -0.2, -0.3, -0.4], dtype=torch.float64)
    hi = torch.tensor([0.5, 0.6, 0.7, 0.8], dtype=torch.float64)
    # u_i > 0: r_i goes down to lo (room -lo); u_i <= 0: up to hi
    assert room(u, lo, hi).tolist() == [0.1, 0.6, 0.7, 0.4]
    assert bool(torch.isinf(room(u, None, hi)).all()) and bool(torch.isinf(room(u, lo, None)).all())


@pytest.mark.parametrize("sort", [False, True])
def test_the_dual_bound_by_its_definition(sort):
    g = torch.Generator().manual_seed(6)
    u = torch.randn(300, generator=g, dtype=torch.float64)
    u[:20] = 0.0
    lo = -torch.rand(300, generator=g, dtype=torch.float64)
    hi = torch.rand(300, generator=g, dtype=torch.float64)
    top = float((u.abs() * room(u, lo, hi)).sum())
    for c in (1e-3, 0.3 * top, 0.99 * top):
        assert dual_bound(u, c, lo, hi, sort=sort) == pytest.approx(brute_dual_bound(u, c, lo, hi), rel=1e-12)
    assert math.isinf(dual_bound(u, 1.01 * top, lo, hi, sort=sort))  # beyond every room: infeasible
    assert dual_bound(u, 0.0, lo, hi, sort=sort) == 0.0 and dual_bound(u, -1.0, lo, hi, sort=sort) == 0.0
    # no box: c / sum |u|, and nothing to move at all: infeasible
    assert dual_bound(u, 2.0, None, None, sort=sort) == pytest.approx(2.0 / float(u.abs().sum()), rel=1e-15)
    assert math.isinf(dual_bound(torch.zeros(5, dtype=torch.float64), 1.0, None, None, sort=sort))
    assert dual_bound(torch.zeros(5, dtype=torch.float64), 0.0, None, None, sort=sort) == 0.0  # c = 0 proves 0
    # a float32 u (the batched search's) is summed in float64: the bound of its exact values
    u32 = u.float()
    for c in (0.3 * top, 0.9 * top):
        assert dual_bounds(u32[None], np.array([c]), lo[None], hi[None])[0] == pytest.approx(
            brute_dual_bound(u32.double(), c, lo, hi), rel=1e-12)
    got = dual_bounds(u[None].repeat(3, 1), np.array([2.0, 0.0, -1.0]), None, None)
    assert got[0] == pytest.approx(2.0 / float(u.abs().sum()), rel=1e-15) and got[1] == got[2] == 0.0
    assert math.isinf(dual_bounds(torch.zeros(1, 5, dtype=torch.float64), np.array([1.0]), None, None)[0])


@pytest.mark.parametrize("sort", [False, True])
def test_a_bound_exactly_at_a_breakpoint(sort):
    """In exact arithmetic (small integers): H(z) = min(z,1) + 2 min(z,2) + 4 min(z,3) reaches c = 17
    exactly at the largest room, 3: that is the bound (feasible, every room used), not inf."""
    u = torch.tensor([1.0, -2.0, 4.0], dtype=torch.float64)
    lo = torch.tensor([-1.0, -9.0, -3.0], dtype=torch.float64)
    hi = torch.tensor([9.0, 2.0, 9.0], dtype=torch.float64)
    for c, z in ((17.0, 3.0), (13.0, 2.0), (7.0, 1.0), (10.0, 1.5), (3.5, 0.5)):
        assert dual_bound(u, c, lo, hi, sort=sort) == z
        assert dual_bounds(u[None], np.array([c]), lo[None], hi[None])[0] == z
    assert math.isinf(dual_bounds(u[None], np.array([17.5]), lo[None], hi[None])[0])


def test_sort_true_finds_the_bound_by_the_batched_sort(monkeypatch):
    """The docstring's dispatch: sort=True (the GPU's way) goes through dual_bounds, sort=False
    (and the default on a CPU) through the sort-free search; both give the same bound."""
    calls = []
    real = problem.dual_bounds
    monkeypatch.setattr(problem, "dual_bounds", lambda *a: calls.append(1) or real(*a))
    u = torch.tensor([1.0, -2.0, 4.0], dtype=torch.float64)
    lo, hi = -torch.ones(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    assert dual_bound(u, 3.5, lo, hi, sort=True) == 0.5 and len(calls) == 1
    assert dual_bound(u, 3.5, lo, hi, sort=False) == 0.5 and dual_bound(u, 3.5, lo, hi) == 0.5 and len(calls) == 1


def test_a_zero_row_with_b_zero_is_satisfied_by_every_r_and_changes_nothing():
    """0 . r <= 0 holds for every r: only b < 0 makes an all-zero row infeasible (prepare's docstring)."""
    A, b = _instance(4)
    with_zero = torch.cat([A, torch.zeros(1, A.shape[1], dtype=A.dtype)])
    prep = prepare(with_zero, torch.cat([b, torch.zeros(1, dtype=b.dtype)]))
    assert prep.trivial != "infeasible"
    from mlalp_core.lp import solve_linf
    alone, both = solve_linf(A, b), solve_linf(with_zero, torch.cat([b, torch.zeros(1, dtype=b.dtype)]))
    assert both.status == alone.status == "optimal" and both.z == pytest.approx(alone.z, rel=1e-9)
    assert prepare(with_zero, torch.cat([b, -torch.ones(1, dtype=b.dtype)])).trivial == "infeasible"


def test_matvec64_takes_a_list_or_a_tuple_of_vectors():
    A, _ = _instance(5)
    M = A.float()
    vs = [torch.randn(A.shape[1], generator=torch.Generator().manual_seed(k)) for k in range(3)]
    want = A.double() @ torch.stack(vs, 1).double()
    for given in (vs, tuple(vs)):
        got = problem.matvec64(M, given)
        assert got.dtype == torch.float64 and torch.allclose(got, M.double() @ torch.stack(vs, 1).double(), rtol=0,
                                                             atol=1e-12)
        assert torch.allclose(got, want, rtol=1e-6)
