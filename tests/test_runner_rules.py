"""The batch runner's rules (experiments/runner.py docstrings, README): --limit takes the first N
selected examples; the authors' mode runs in the authors' own batch and records it; what makes a
run a run of its own (objective, stored precision) is recorded in its settings, and the paper's
objective keeps earlier keys; a configuration that cannot run is refused before any work; a
run restarted under other numerics is announced."""

from __future__ import annotations

import sqlite3

import pytest
import torch
from tiny import TinyScenes, load_tiny, synthetic_scenes

from mlalp_core.attacks import make_attack
from mlalp_core.errors import InvalidInputError
from mlalp_core.experiments.runner import DEFAULT_BATCH, BenchConfig, batch_for, numerics_note, run_benchmark
from mlalp_core.experiments.store import ResultsStore
from mlalp_core.numerics import Numerics


def _run(weights, store, notes=None, **kw):
    cfg = BenchConfig(**{**dict(models=["tiny"], dataset="tiny", split="all", attacks=["fgsm"], seed=1,
                                batch_size=4, device="cpu", store=store, threads=1), **kw})
    return run_benchmark(cfg, model_loader=lambda name, device=None: load_tiny(weights),
                         dataset_loader=lambda name, split=None: TinyScenes(n=24), notice=notes)


def test_limit_takes_the_first_selected_examples(weights, tmp_path):
    store = tmp_path / "s.sqlite"
    (row,) = _run(weights, store, n=3)
    assert row["attacked"] == 3
    full = tmp_path / "full.sqlite"
    (all_rows,) = _run(weights, full)
    assert all_rows["attacked"] > 3
    first = sorted(r["idx"] for r in ResultsStore(full).rows())[:3]
    assert sorted(r["idx"] for r in ResultsStore(store).rows()) == first


def test_what_makes_a_run_its_own_is_recorded_in_its_settings(weights, tmp_path):
    store = tmp_path / "s.sqlite"
    _run(weights, store)  # the paper's objective, float16: nothing extra in the settings (older keys hold)
    _run(weights, store, objective="hide-all")
    _run(weights, store, precision="float32")
    runs = {(r["settings"].get("objective"), r["settings"].get("precision")): r for r in ResultsStore(store).runs()}
    assert set(runs) == {(None, None), ("hide-all", None), (None, "float32")}
    assert len({r["run_key"] for r in runs.values()}) == 3 and all(r["examples"] > 0 for r in runs.values())
    with sqlite3.connect(store) as conn:
        dtypes = dict(conn.execute("SELECT run_key, group_concat(DISTINCT pert_dtype) FROM results GROUP BY run_key"))
    conn.close()
    assert dtypes[runs[None, "float32"]["run_key"]] == "float32" and dtypes[runs[None, None]["run_key"]] == "float16"


def test_the_authors_mode_runs_in_the_authors_batch(weights):
    model = load_tiny(weights)
    for name, batch in (("mla-lp", 10), ("ml-cw", 18)):
        attack = make_attack(name, model, mode="authors")
        size, recorded = batch_for(attack, None)
        assert size == batch and recorded["batch_size"] == batch and recorded["mode"] == "authors"
        size, recorded = batch_for(attack, 4)  # asked: that batch, recorded (their results depend on it)
        assert size == 4 and recorded["batch_size"] == 4
    plain = make_attack("mla-lp", model)
    assert batch_for(plain, None) == (DEFAULT_BATCH, plain.config())  # no batch in the key outside their mode
    assert batch_for(plain, 5)[0] == 5 and "batch_size" not in batch_for(plain, 5)[1]


@pytest.mark.parametrize("kw, words", [
    (dict(attacks=["nope"]), "unknown attack"), (dict(models=[]), "at least one model"),
    (dict(attacks=[]), "at least one attack"), (dict(batch_size=0), "batch size must be >= 1"),
    (dict(n=0), "n must be >= 1"), (dict(threads=0), "threads must be a whole number"),
    (dict(precision="float64"), "precision must be float16 or float32"),
    (dict(attack_settings={"nope": {}}), "settings given for unknown attack"),
    (dict(attack_settings={"fgsm": {"eps": -1}}), "fgsm.eps"), (dict(objective="hide-some"), "unknown objective"),
    (dict(attacks=["ml-rank1"], objective="hide-all"), "cannot pursue the objective hide-all"),
])
def test_a_configuration_that_cannot_run_is_refused_before_any_work(weights, tmp_path, kw, words):
    store = tmp_path / "s.sqlite"
    with pytest.raises(InvalidInputError, match=words):
        _run(weights, store, **kw)
    assert not store.exists() or ResultsStore(store).rows() == []


def test_a_run_restarted_under_other_numerics_is_announced(weights, tmp_path):
    store = tmp_path / "s.sqlite"
    first: list[str] = []
    _run(weights, store, n=2, threads=1, notes=first.append)
    assert not [n for n in first if "other numerics" in n]  # a new run: nothing to announce
    notes: list[str] = []
    _run(weights, store, n=2, threads=2, notes=notes.append)
    (note,) = [n for n in notes if "other numerics" in n]
    assert "threads 2 (stored 1)" in note and "pass --threads 1 to resume that one" in note
    runs = ResultsStore(store).runs()
    assert sorted(r["numerics"]["threads"] for r in runs) == [1, 2] and all(r["examples"] == 2 for r in runs)
    _run(weights, store, n=2, threads=4)  # no one to tell: the run starts anew all the same
    assert sorted(r["numerics"]["threads"] for r in ResultsStore(store).runs()) == [1, 2, 4]
    # the same numerics again: resumed, nothing to announce
    notes.clear()
    _run(weights, store, n=2, threads=2, notes=notes.append)
    assert not [n for n in notes if "other numerics" in n]
    # a run stored before numerics were recorded is named as such
    rs = ResultsStore(store, readonly=False)
    old = runs[0]
    now = Numerics(**{**old["numerics"], "threads": 3})
    key = rs.open_run(model="tiny", model_id=old["model_id"], dataset="tiny", split="all", data_id=old["data_id"],
                      attack="fgsm", settings=old["settings"], seed=1, threshold=0.5, label_names=["a"],
                      input_size=[16, 16], device="cpu", numerics=now.as_dict())
    assert numerics_note(rs, key, now, model_id=old["model_id"], data_id=old["data_id"], attack="fgsm",
                         settings=old["settings"], seed=1).startswith("fgsm: the store has this run under other")
    assert numerics_note(rs, key, now, model_id=old["model_id"], data_id=old["data_id"], attack="fgsm",
                         settings=old["settings"], seed=2) == ""  # another seed: another run, nothing to say


def test_models_are_loaded_on_the_device_asked_for(weights, tmp_path):
    asked = []

    def loader(name, device=None):
        asked.append(device)
        return load_tiny(weights)

    cfg = BenchConfig(models=["tiny"], dataset="tiny", split="all", attacks=["fgsm"], n=1, device="cpu",
                      store=tmp_path / "s.sqlite", threads=1)
    run_benchmark(cfg, model_loader=loader, dataset_loader=lambda name, split=None: TinyScenes(n=24))
    assert asked == [torch.device("cpu")]


def test_without_a_gpu_every_rank_uses_gloo():
    from mlalp_core.experiments.runner import process_group_plan

    assert process_group_plan(True, 0, 1, 0) == ("gloo", None)  # CUDA asked for, none there
    assert process_group_plan(True, 1, 2, 0) == ("gloo", None)


def test_a_run_without_a_split_records_the_data_sets_default(weights, tmp_path):
    store = tmp_path / "s.sqlite"
    _run(weights, store, n=1, split=None)  # the tiny scenes are not registered: the registry's fallback
    (run,) = ResultsStore(store).runs()
    assert run["split"] == "default"


def _paper_selection(model, dataset) -> list[str]:
    """The paper's rule, computed here: every label predicted right and at least two positives."""
    x = torch.stack([dataset.image(i, model.input_size) for i in range(len(dataset))])
    with torch.no_grad():
        right = ((torch.sigmoid(model(x)) >= 0.5) == dataset.labels()).all(1)
    ids = dataset.ids()
    return [ids[i] for i in range(len(ids)) if right[i] and dataset.labels()[i].sum() >= 2]


def test_examples_are_selected_by_the_papers_rule_with_or_without_a_store(weights, tmp_path):
    from mlalp_core.experiments.runner import select_examples

    model, data = load_tiny(weights), TinyScenes(n=24)
    expected = _paper_selection(model, data)
    assert 4 <= len(expected) < 24  # the fixture selects some, not all
    bare = select_examples(model, data, model_name="tiny", dataset_name="tiny", split="all")
    store = ResultsStore(tmp_path / "s.sqlite", readonly=False)
    stored = select_examples(model, data, model_name="tiny", dataset_name="tiny", split="all", store=store)
    assert bare.ids == stored.ids == expected
    assert len(store.selection(stored.model_id, stored.data_id)) == 24  # cached for the next run


def test_a_second_rank_attacks_its_own_batches_with_the_numbers_of_one_process(weights, tmp_path, monkeypatch):
    """Rank 1 of a sharded run, in this process (torch.distributed's rank, gather and barrier stand
    in for by what rank 0 would contribute): it predicts its own chunks of the selection, attacks
    its own batches into the store rank 0 created, and stores the numbers one process stores for
    them; rank 0 speaks for the run (estimates, notes) and writes the shared selection."""
    import mlalp_core.experiments.runner as runner
    from mlalp_core.experiments.runner import attack_batches

    one_path = tmp_path / "one.sqlite"
    notes: list[str] = []
    _run(weights, one_path, notes=notes.append)  # one process: every example
    assert any(n.startswith("tiny: at most ~") for n in notes)  # what the run may cost, said before it
    one = ResultsStore(one_path)
    (run,) = one.runs()
    correct = {r["idx"]: r["correct"] for r in one.selection(run["model_id"], run["data_id"])}
    ref = sorted(one.rows(), key=lambda r: r["idx"])
    sel_ids = [r["example_id"] for r in ref]

    shard_path = tmp_path / "shard.sqlite"
    ResultsStore(shard_path, readonly=False)  # rank 0 created it (the barrier waits for that)
    predicted: list[int] = []

    def all_gather(obj):
        if isinstance(obj, dict) and obj and all(isinstance(k, int) for k in obj):  # this rank's predictions
            predicted.extend(sorted(obj))
            return [{i: c for i, c in correct.items() if i not in obj}, obj]
        return [obj, obj]  # rank 0 computes with the same numerics

    monkeypatch.setattr(runner, "dist_rank_world", lambda: (1, 2))
    monkeypatch.setattr(runner, "_all_gather", all_gather)
    monkeypatch.setattr(runner, "_barrier", lambda: None)
    rank1_notes: list[str] = []
    _run(weights, shard_path, notes=rank1_notes.append)
    assert rank1_notes == []
    assert predicted == [i for chunk in attack_batches(24, 16)[1::2] for i in chunk]  # selection chunks of 16
    shard = ResultsStore(shard_path)
    assert shard.selection(run["model_id"], run["data_id"]) == []  # written once, by rank 0
    mine = {sel_ids[p] for b in attack_batches(len(sel_ids), 4)[1::2] for p in b}
    assert mine and len(mine) < len(sel_ids)
    got = {r["example_id"]: r for r in shard.rows()}
    assert set(got) == mine and {r["run_key"] for r in got.values()} == {run["run_key"]}
    for r in ref:
        if r["example_id"] in mine:
            assert [got[r["example_id"]][k] for k in ("success", "linf", "l2", "model_calls")] == \
                [r[k] for k in ("success", "linf", "l2", "model_calls")]


def test_a_model_that_breaks_after_its_selection_was_stored_is_named_by_example(weights, tmp_path):
    """A resumed run reuses the stored selection (same weights, same data), so a model whose outputs
    now break (here: NaN on one scene, from something outside its weights) is first met by the
    attack: the one line names that example by its id, not by its place in a batch."""
    from mlalp_core.experiments.store import model_identity

    store = tmp_path / "s.sqlite"
    _run(weights, store, n=2)
    sel = sorted(ResultsStore(store).rows(), key=lambda r: r["idx"])
    data = TinyScenes(n=24)
    good = load_tiny(weights)
    chosen = _paper_selection(good, data)
    victim = chosen[5]  # in the second batch of 4, at place 1
    bad_image = data.image(data.ids().index(victim), (16, 16))

    class BreaksOnOneScene(type(good)):
        def forward(self, x):
            out = super().forward(x)
            hit = (x - bad_image).flatten(1).abs().amax(1) < 1e-7
            return torch.where(hit[:, None], torch.full_like(out, float("nan")), out)

    broken = BreaksOnOneScene()
    broken.load_state_dict(good.state_dict())
    broken.eval()
    assert model_identity(broken) == model_identity(good) and sel  # the stored selection is reused
    cfg = BenchConfig(models=["tiny"], dataset="tiny", split="all", attacks=["fgsm"], seed=2, batch_size=4,
                      device="cpu", store=store, threads=1)
    with pytest.raises(InvalidInputError) as info:
        run_benchmark(cfg, model_loader=lambda name, device=None: broken,
                      dataset_loader=lambda name, split=None: data)
    msg = str(info.value)
    assert f"its output on example {victim} is not finite" in msg and "\n" not in msg


def test_the_selection_predicts_in_the_same_chunks_whatever_the_runs_batch(weights, tmp_path, monkeypatch):
    """An ordinary model's last bits move with its batch: the selection's chunks (and so which
    examples a cached selection holds) must not depend on --batch."""
    from mlalp_core.experiments import runner

    seen: dict[int, list[int]] = {}
    real = runner.checked_probabilities

    def record(model, x, images=None):
        seen.setdefault(batch, []).append(x.shape[0])
        return real(model, x, images)

    monkeypatch.setattr(runner, "checked_probabilities", record)
    for batch in (4, 32):
        _run(weights, tmp_path / f"b{batch}.sqlite", batch_size=batch)
    assert seen[4] == seen[32] and max(seen[4]) == runner.SELECTION_BATCH


def test_each_stored_example_names_the_process_that_attacked_it(weights, tmp_path):
    import sqlite3

    store = tmp_path / "s.sqlite"
    _run(weights, store, n=3)
    workers = {w for (w,) in sqlite3.connect(store).execute("SELECT worker FROM results")}
    assert workers == {"rank0/1"}


def test_an_objective_that_names_labels_is_checked_with_the_models_label_names(weights):
    from tiny import LABELS

    from mlalp_core.experiments.runner import Selection, check_objective

    sel = Selection(indices=[0, 1], ids=["a", "b"], labels=torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0]]).bool(),
                    test_examples=2, model_id="m", data_id="d")
    attack = make_attack("fgsm", load_tiny(weights), device="cpu")
    check_objective(attack, f"hide:{LABELS[0]}", sel, LABELS, seed=0)  # present in both: nothing to refuse
    with pytest.raises(InvalidInputError, match="purple"):
        check_objective(attack, "hide:purple", sel, LABELS, seed=0)
    with pytest.raises(InvalidInputError, match=LABELS[1]):
        check_objective(attack, f"hide:{LABELS[1]}", sel, LABELS, seed=0)  # absent from the second example


def test_a_resumed_run_counts_the_examples_it_had_finished(weights, tmp_path):
    store = tmp_path / "resume.sqlite"
    _run(weights, store, n=3)
    seen = []
    cfg = BenchConfig(models=["tiny"], dataset="tiny", split="all", attacks=["fgsm"], seed=1, batch_size=4,
                      device="cpu", store=store, threads=1)
    run_benchmark(cfg, lambda done, total, msg: seen.append((done, total, msg)),
                  model_loader=lambda name, device=None: load_tiny(weights),
                  dataset_loader=lambda name, split=None: TinyScenes(n=24))
    attack = [(d, t) for d, t, m in seen if m.startswith("fgsm:")]
    assert attack and attack[0][0] > 3 and attack[-1][0] == attack[-1][1]


def test_a_run_of_an_attack_whose_arithmetic_changed_is_not_resumed_by_the_new_code(weights, tmp_path, monkeypatch):
    """The store keeps which revision of an attack's arithmetic computed a run (Attack.arithmetic;
    the first is left out of the record, so older runs keep their keys): after a change that moves
    a bit of FGSM's numbers, the same command starts a run of its own and says why, and Table III
    tells the two apart; another attack's runs are resumed as before."""
    from mlalp_core.attacks.fgsm import FGSM
    from mlalp_core.attacks.ml_deepfool import MLDeepFool
    from mlalp_core.experiments.reporting import table3

    store = tmp_path / "s.sqlite"
    _run(weights, store, n=2, attacks=["fgsm", "ml-deepfool"])
    before = {r["attack"]: r for r in ResultsStore(store).runs()}
    assert before["fgsm"]["numerics"]["arithmetic"] == FGSM.arithmetic == 2  # the gradient attacks' second
    assert "arithmetic" not in before["ml-deepfool"]["numerics"] and MLDeepFool.arithmetic == 1
    monkeypatch.setattr(FGSM, "arithmetic", 3)
    notes: list[str] = []
    _run(weights, store, n=2, attacks=["fgsm", "ml-deepfool"], notes=notes.append)
    (note,) = [n for n in notes if "other numerics" in n]
    assert note.startswith("fgsm:") and "arithmetic 3 (stored 2)" in note
    runs = ResultsStore(store).runs()
    assert sorted((r["attack"], r["numerics"].get("arithmetic", 1)) for r in runs) == [
        ("fgsm", 2), ("fgsm", 3), ("ml-deepfool", 1)]
    assert all(r["examples"] == 2 for r in runs)
    labels = sorted(r["label"] for r in table3(ResultsStore(store).rows()) if r["attack"] == "fgsm")
    assert labels == ["FGSM (arithmetic 2)", "FGSM (arithmetic 3)"]


def test_runs_that_differ_only_in_a_setting_nothing_uses_are_one_run(weights, tmp_path):
    """A setting the others make no use of (Setting.used_when) is left out of the record: PGD's
    margin with the BCE loss, or its restarts and seed without a random start, change no number,
    so the second command finds the first one's run finished; a setting in use makes a run of
    its own. And PGD without a random start makes its passes once, whatever restarts says."""
    from mlalp_core.attacks import make_attack

    store = tmp_path / "s.sqlite"
    base = {"random_start": False, "iterations": 3}
    _run(weights, store, n=4, attacks=["pgd"], attack_settings={"pgd": base})
    _run(weights, store, n=4, attacks=["pgd"], attack_settings={"pgd": {**base, "margin": 2.0, "restarts": 3,
                                                                       "seed": 7}})
    runs = ResultsStore(store).runs()
    assert len(runs) == 1 and runs[0]["examples"] == 4
    assert not {"margin", "restarts", "seed", "max_eps", "budget_steps"} & set(runs[0]["settings"])
    _run(weights, store, n=4, attacks=["pgd"], attack_settings={"pgd": {**base, "loss": "margin", "margin": 2.0}})
    assert len(ResultsStore(store).runs()) == 2  # the margin in use: another run
    model, x = load_tiny(weights), synthetic_scenes(8, 7)[0]
    target = ~model.predict(x)  # out of reach: every example runs every step
    once = make_attack("pgd", model, device="cpu", **base)(x, target)
    thrice = make_attack("pgd", model, device="cpu", **base, restarts=3)(x, target)
    assert torch.equal(once.model_calls, thrice.model_calls) and torch.equal(once.x_adv, thrice.x_adv)


def test_settings_given_for_an_attack_stay_the_ones_given(weights, tmp_path):
    """A run's attack settings are those given, the rest the attack's own (README, "Attack
    settings"): given only mode = authors, the run is the authors' mode with its fixed settings,
    not a refusal for the paper's defaults of the settings that mode fixes."""
    cfg = BenchConfig(models=["tiny"], dataset="tiny", attacks=["mla-lp"], attack_settings={"mla-lp": {"mode": "authors"}})
    cfg.check()
    assert cfg.attack_settings == {"mla-lp": {"mode": "authors"}}
    store = tmp_path / "s.sqlite"
    (row,) = _run(weights, store, attacks=["mla-lp"], attack_settings={"mla-lp": {"mode": "authors"}}, n=2)
    assert row["attacked"] == 2
    (run,) = ResultsStore(store).runs()
    assert run["settings"]["mode"] == "authors" and run["settings"]["box"] is False
