"""MLA-LP+ (the ``polish`` setting of MLA-LP): parsed by the schema like every setting, it keeps
every success and never grows a perturbation; its runs are their own rows, named MLA-LP+."""

from __future__ import annotations

import pytest
import torch
from tiny import synthetic_scenes, train_tiny

from mlalp_core.attacks import MLALP, make_attack, parse_settings
from mlalp_core.attacks.polish import polish_pgd, polish_scale
from mlalp_core.attacks.targets import hide_one
from mlalp_core.errors import InvalidInputError
from mlalp_core.experiments.reporting import run_labels, table3


@pytest.fixture(scope="module")
def scenes():
    torch.set_num_threads(1)
    model = train_tiny()
    x, y = synthetic_scenes(48, torch.Generator().manual_seed(1))
    with torch.no_grad():
        ok = (model.predict(x) == y).all(1) & (y.sum(1) >= 2)
    idx = ok.nonzero().flatten()[:8]
    return model, x[idx], hide_one(y[idx], seed=0, example_ids=idx.tolist())


def test_polish_settings_parse_through_the_schema():
    assert parse_settings("mla-lp", {"polish": "PGD", "polish_factor": "0.9", "polish_steps": "10"},
                          complete=False) == {"polish": "pgd", "polish_factor": 0.9, "polish_steps": 10}
    assert parse_settings("mla-lp", {})["polish"] == "none"  # the paper's MLA-LP by default
    for bad in ({"polish": "shrink"}, {"polish_factor": "1"}, {"polish_factor": 0}, {"polish_step": "0"},
                {"polish_steps": 2.5}, {"polish_rounds": "0"}):
        with pytest.raises(InvalidInputError, match="mla-lp.polish"):
            parse_settings("mla-lp", bad)


def _linf(res):
    return res.perturbation.flatten(1).abs().amax(1)


@pytest.mark.parametrize("polish", ["pgd", "scale"])
def test_polish_keeps_every_success_and_never_grows_a_perturbation(scenes, polish):
    model, x, target = scenes
    plain = MLALP(model, device="cpu")(x, target)
    polished = MLALP(model, device="cpu", polish=polish)(x, target)
    assert bool(plain.success.any())
    assert torch.equal(plain.success, polished.success)  # the base class re-checks every returned image
    assert bool((_linf(polished) <= _linf(plain) + 1e-7).all())
    assert bool((_linf(polished)[plain.success] < _linf(plain)[plain.success]).any())  # it does shrink some
    assert bool((polished.model_calls >= plain.model_calls).all())
    for tr, ok in zip(polished.trace, plain.success.tolist()):
        assert any(e.get("polish") == polish for e in tr) == ok  # only successes are polished
    # the failures are returned as they were
    fail = ~plain.success
    assert torch.equal(plain.x_adv[fail], polished.x_adv[fail])


def test_pgd_polish_rounds_are_monotone_and_stop_at_the_first_round_that_fails(scenes):
    model, x, target = scenes
    res = MLALP(model, device="cpu")(x, target)
    ok = res.success
    out = polish_pgd(model, x[ok], res.x_adv[ok], target[ok], 0.5, factor=0.9, steps=5, step=0.2, rounds=50)
    for tr in out.trace:
        linfs = [e["linf"] for e in tr]
        assert all(b <= a for a, b in zip(linfs, linfs[1:]))
        assert [e["reached"] for e in tr][:-1] == [True] * (len(tr) - 1)  # rounds go on while they reach y*
        assert not tr[-1]["reached"] or len(tr) == 50
        assert sum(e["model_calls"] for e in tr) > 0
    assert torch.equal(out.calls, torch.tensor([sum(e["model_calls"] for e in tr) for tr in out.trace]))
    with torch.no_grad():
        assert bool(((model.probabilities(out.x_adv) >= 0.5) == target[ok]).all())


def test_scale_polish_is_a_bisection_along_the_perturbation(scenes):
    model, x, target = scenes
    res = MLALP(model, device="cpu")(x, target)
    ok = res.success
    out = polish_scale(model, x[ok], res.x_adv[ok], target[ok], 0.5, steps=8)
    r = res.x_adv[ok] - x[ok]
    for k, tr in enumerate(out.trace):
        s = tr[0]["scale"]
        assert 0 < s <= 1
        if s < 1:  # the result is x + s r (clipped) and reaches y*
            expect = (x[ok][k] + torch.tensor(s, dtype=torch.float64).to(x.dtype) * r[k]).clamp(0, 1)
            assert torch.equal(out.x_adv[k], expect)
    assert torch.equal(out.calls, torch.full((int(ok.sum()),), 8))


def test_a_polished_run_is_its_own_row_named_mla_lp_plus():
    base = {"model": "m", "dataset": "d", "attack": "mla-lp", "seed": 0, "numerics": None, "success": True,
            "linf": 0.01, "l2": 1.0, "rmsd": 1.0, "rmsd_paper": 0.5, "time_s": 1.0, "model_calls": 10}
    rows = [{**base, "run_key": "a", "settings": {}},
            {**base, "run_key": "b", "settings": {"polish": "pgd"}},
            {**base, "run_key": "c", "settings": {"polish": "scale"}},
            {**base, "run_key": "d", "settings": {"polish": "pgd", "polish_factor": 0.9}}]
    assert run_labels(rows) == {"a": "MLA-LP", "b": "MLA-LP+", "c": "MLA-LP+ (scale)",
                                "d": "MLA-LP+ (polish budget factor 0.9)"}
    assert len(table3(rows)) == 4
    model = train_tiny(steps=1)
    assert make_attack("mla-lp", model, polish="pgd").config()["polish"] == "pgd"  # recorded with the run


def test_a_run_records_only_the_polish_settings_its_polish_uses():
    model = train_tiny(steps=1)
    plain = make_attack("mla-lp", model).config()
    assert plain["polish"] == "none" and not any(k.startswith("polish_") for k in plain)
    scale = make_attack("mla-lp", model, polish="scale").config()
    assert {k for k in scale if k.startswith("polish_")} == {"polish_steps"}
    pgd = make_attack("mla-lp", model, polish="pgd", polish_factor=0.9).config()
    assert {k for k in pgd if k.startswith("polish_")} == {"polish_factor", "polish_steps", "polish_step",
                                                           "polish_rounds"}
    # the paper's MLA-LP is labelled as such whatever polish defaults a store's older runs recorded
    assert make_attack("mla-lp", model, polish_factor=0.5).config() == plain
