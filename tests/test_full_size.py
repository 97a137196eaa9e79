"""The paper's two architectures at full input size, loaded by name from files in the published
layouts, through the whole library: attacks, metrics, the batch runner and the results store.

Random weights (no checkpoint can be downloaded here), rescaled so that outputs are not
saturated; one image and the fewest iterations. MLA-LP (a 20-row Jacobian and an LP with
d = 268,203) runs on ML-LIW at 299x299 here; at 448x448 a ResNet-101 Jacobian costs 20 backward
passes (half a minute on this CPU), so ML-GCN goes through the Carlini-Wagner path, and its
MLA-LP timing is in bench/ (bench/paper_models.py, bench/attack.py --full-size).
"""

from __future__ import annotations

import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch

from mlalp_core.experiments.runner import BenchConfig, run_benchmark
from mlalp_core.experiments.store import ResultsStore
from mlalp_core.models import ml_gcn, ml_liw
from mlalp_core.models.gcn import cooccurrence_adjacency
from mlalp_core.models.registry import load_model
from mlalp_core.training.paper import calibrate_batchnorm


def _unsaturate(model, layer: torch.nn.Parameter, x: torch.Tensor) -> None:
    """Scale the last layer so that the logits on ``x`` have a spread of about 3."""
    with torch.no_grad():
        layer.mul_(3.0 / float(model(x).std()))


class _Images:
    """One image whose ground truth is what the model predicts (so the paper's rule selects it)."""

    name = "random"

    def __init__(self, model):
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(1, 3, *model.input_size, generator=g)
        self.label_names = model.label_names
        with torch.no_grad():
            self.y = model.predict(self.x)

    def __len__(self):
        return 1

    def ids(self):
        return ["img0"]

    def labels(self):
        return self.y.clone()

    def valid(self):
        return torch.ones_like(self.y)

    def image(self, i, size):
        return self.x[i].clone()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    torch.set_num_threads(2)
    d = tmp_path_factory.mktemp("paper_files")
    torch.manual_seed(0)
    wv = np.random.default_rng(0).standard_normal((20, 300)).astype(np.float32)
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 60, (20, 20)).astype(np.int64)
    np.fill_diagonal(counts, 0)
    gcn = ml_gcn.MLGCN(wv, cooccurrence_adjacency(counts, rng.integers(60, 120, 20))).eval()
    probe = torch.rand(1, 3, 448, 448)
    calibrate_batchnorm(gcn.features, gcn.normalize(probe))
    _unsaturate(gcn, gcn.gc2.weight, probe)
    state = OrderedDict((k, v) for k, v in gcn.state_dict().items() if not k.endswith("num_batches_tracked"))
    torch.save({"epoch": np.int64(1), "arch": "resnet101", "state_dict": state, "best_score": np.float64(0.0)},
               d / "voc_checkpoint.pth.tar", _use_new_zipfile_serialization=False)
    with open(d / "voc_glove_word2vec.pkl", "wb") as fh:
        pickle.dump(wv, fh)
    liw = ml_liw.MLLIW().eval()
    probe = torch.rand(1, 3, 299, 299)
    calibrate_batchnorm(liw.trunk, liw.normalize(probe))
    _unsaturate(liw, liw.fc.weight, probe)
    torch.save(ml_liw.authors_state_dict(liw), d / "mlliw.pth", _use_new_zipfile_serialization=False)
    return d


@pytest.fixture
def configured(files, monkeypatch, tmp_path):
    monkeypatch.setenv("MLALP_MLGCN_CHECKPOINT", str(files / "voc_checkpoint.pth.tar"))
    monkeypatch.setenv("MLALP_MLGCN_WORD_VECTORS", str(files / "voc_glove_word2vec.pkl"))
    monkeypatch.setenv("MLALP_MLLIW_CHECKPOINT", str(files / "mlliw.pth"))
    monkeypatch.setenv("MLALP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MLALP_DEVICE", "cpu")


@pytest.mark.slow
@pytest.mark.parametrize("name,attacks", [
    ("ml-gcn", {"ml-cw": {"max_iterations": 2, "binary_search_steps": 1}}),
    ("ml-liw", {"mla-lp": {"max_iterations": 1}, "ml-rank2": {"max_iterations": 2, "binary_search_steps": 1}}),
])
def test_paper_model_through_attacks_runner_and_store(configured, tmp_path, name, attacks):
    model = load_model(name)
    assert model.input_size == ((448, 448) if name == "ml-gcn" else (299, 299)) and model.num_labels == 20
    data = _Images(model)
    positives = int(data.y.sum())
    if positives < 2:
        pytest.fail(f"the random {name} predicts {positives} label(s): the fixture must give >= 2")
    store = tmp_path / "store.sqlite"
    cfg = BenchConfig(models=[name], dataset="random", split="all", attacks=list(attacks), batch_size=1,
                      device="cpu", store=store, precision="float32", attack_settings=attacks)
    table = run_benchmark(cfg, model_loader=lambda n, device=None: model, dataset_loader=lambda n, split=None: data)
    assert {r["attack"] for r in table} == set(attacks)
    rs = ResultsStore(store)
    for row in rs.rows():
        ex = rs.example(row["run_key"], row["example_id"])
        assert ex["perturbation"].shape == (3, *model.input_size)
        assert np.isfinite([row["l2"], row["linf"], row["rmsd"]]).all()
        x_adv = (data.x[0] + ex["perturbation"]).clamp(0, 1)
        again = bool((model.predict(x_adv[None])[0] == ex["target"]).all())
        assert again == row["success"], row["attack"]
        trace = ex["trace"]
        assert trace, row["attack"]
    if "mla-lp" in attacks:
        mla = next(r for r in rs.rows() if r["attack"] == "mla-lp")
        step = rs.example(mla["run_key"], mla["example_id"])["trace"][0]
        assert step["lp_status"] == "optimal" and step["lp_gap"] <= 1e-6
