"""The app's pages headless (Streamlit's AppTest): select, run, see results; bad uploads and
unconfigured models get a clear message; cached results are not recomputed when a view changes.

Attacks run on the demo model (96x96, 10 labels) with small iteration counts so the file stays
fast on a 2-core CPU; scene_009 is a gallery scene MLA-LP turns in two iterations.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from apptest_server import as_on_a_running_server
from PIL import Image
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")
if str(ROOT) not in sys.path:  # pages.common, for the test that looks inside it
    sys.path.insert(0, str(ROOT))
SCENE = 9  # scene_009


@pytest.fixture(autouse=True)
def _plain_settings(monkeypatch, tmp_path):
    """No paper model or VOC configured, the CPU, and a results store of the test's own."""
    for k in list(os.environ):
        if k.startswith("MLALP_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("MLALP_DEVICE", "cpu")
    monkeypatch.setenv("MLALP_RESULTS", str(tmp_path / "results.sqlite"))
    monkeypatch.chdir(tmp_path)  # no mlalp.toml here
    as_on_a_running_server(monkeypatch)


def _app() -> AppTest:
    """The app after its first run (app.py: navigation, sidebar, the Explore page)."""
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    _no_exception(at)
    return at


def _no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _charts(at: AppTest) -> list[dict]:
    import json

    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def test_explore_runs_mlalp_and_shows_results_without_rerunning_for_a_view_change():
    at = _app()
    assert at.sidebar.selectbox(key="g_model").value == "demo-gcn"
    at.selectbox(key="explore_index").set_value(SCENE).run()
    _no_exception(at)
    assert not at.error
    assert "hide" in " ".join(m.value for m in at.markdown)  # the paper's hide-one target is shown
    assert at.selectbox(key="explore_attack").value == "mla-lp"
    at.number_input(key="explore_mla-lp_max_iterations").set_value(3)
    at.button(key="explore_run").click().run()
    _no_exception(at)
    assert not at.error
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["success"] == "yes"
    assert 0 < float(metrics["l_inf"]) < 0.03
    assert int(metrics["iterations"]) <= 3
    specs = _charts(at)
    types = [sorted({t["type"] for t in s["data"]}) for s in specs]
    assert ["image"] in types and ["surface"] in types and ["bar", "scatter"] in types
    surf = next(s for s in specs if s["data"][0]["type"] == "surface")
    assert len(surf["data"]) == 3 and surf["layout"]["scene"]["zaxis"]["range"] == [-0.03, 0.03]
    bars = next(s for s in specs if "bar" in {t["type"] for t in s["data"]})
    assert bars["layout"]["meta"]["attacked"] and bars["layout"]["meta"]["wrongly_flipped"] == []

    results = at.session_state["_results"]
    assert len(results) == 1
    first = next(iter(results.values()))
    # change views: z-range and pooling; the cached result is reused, not recomputed
    at.radio(key="explore_pool").set_value("mean")
    at.radio(key="explore_zmode").set_value("data").run()
    _no_exception(at)
    again = at.session_state["_results"]
    assert len(again) == 1 and next(iter(again.values())) is first
    surf = next(s for s in _charts(at) if s["data"][0]["type"] == "surface")
    linf = float(first.perturbation.abs().max())
    assert surf["layout"]["scene"]["zaxis"]["range"][1] == pytest.approx(linf, rel=1e-6)


def test_compare_runs_all_five_attacks_once_and_draws_fig1():
    at = _app()
    at.switch_page("pages/compare.py").run()
    _no_exception(at)
    at.selectbox(key="compare_index").set_value(SCENE).run()
    small = {"mla-lp": {"max_iterations": 2}, "ml-deepfool": {"max_iterations": 2},
             "ml-cw": {"max_iterations": 5, "binary_search_steps": 1},
             "ml-rank1": {"max_iterations": 5, "binary_search_steps": 1},
             "ml-rank2": {"max_iterations": 5, "binary_search_steps": 1}}
    for attack, values in small.items():
        for name, v in values.items():
            at.number_input(key=f"compare_{attack}_{name}").set_value(v)
    at.button(key="compare_run").click().run()
    _no_exception(at)
    assert not at.error
    assert len(at.session_state["_results"]) == 5
    grid = next(s for s in _charts(at) if any(t["type"] == "surface" for t in s["data"]))
    assert sum(t["type"] == "surface" for t in grid["data"]) == 15
    assert sum(t["type"] == "image" for t in grid["data"]) == 6  # original + five adversarial
    assert grid["layout"]["meta"]["attacks"] == ["MLA-LP", "ML-DeepFool", "ML-CW", "ML-Rank1", "ML-Rank2"]
    table = at.dataframe[-1].value
    assert list(table["attack"]) == ["MLA-LP", "ML-DeepFool", "ML-CW", "ML-Rank1", "ML-Rank2"]
    assert table.loc[0, "success"]  # MLA-LP turns scene_009 in two iterations
    # the button now offers nothing to run: every result is cached
    at.run()
    assert at.button(key="compare_run").label == "Run all five"
    assert len(at.session_state["_results"]) == 5


def test_upload_that_is_not_an_image_gives_an_error_and_a_real_one_works():
    at = _app()
    at.sidebar.selectbox(key="g_dataset").set_value("upload").run()
    _no_exception(at)
    at.file_uploader(key="explore_upload").set_value(("notes.png", b"this is not an image at all", "image/png"))
    at.run()
    _no_exception(at)
    assert at.error and "not a readable image" in at.error[0].value
    assert not at.get("plotly_chart")

    buf = io.BytesIO()
    Image.fromarray((np.arange(50 * 70) % 255).astype(np.uint8).reshape(50, 70), "L").save(buf, "PNG")
    at.file_uploader(key="explore_upload").set_value(("grey.png", buf.getvalue(), "image/png"))
    at.run()
    _no_exception(at)
    assert not at.error
    assert any("resized to 96x96" in c.value for c in at.caption)
    assert at.dataframe  # the label table with the model's predictions
    assert not any("much smaller" in w.value for w in at.warning)  # 50x70 for 96x96: less than 2x
    assert any("model input (96x96)" in str(e.proto) for e in at.get("imgs") + at.get("image"))  # side by side

    tiny = io.BytesIO()
    Image.fromarray(np.full((12, 9, 3), 200, np.uint8)).save(tiny, "PNG")
    at.file_uploader(key="explore_upload").set_value(("tiny.png", tiny.getvalue(), "image/png"))
    at.run()
    _no_exception(at)
    assert any("tiny.png is 9x12 pixels, much smaller than the model's 96x96" in w.value for w in at.warning)


def test_an_upload_says_what_loading_did_to_it():
    """Alpha flattened on white, one frame of an animation, a stretch: each an st.info line."""
    at = _app()
    at.sidebar.selectbox(key="g_dataset").set_value("upload").run()
    rgba = np.zeros((40, 100, 4), np.uint8)
    rgba[..., :3] = (np.arange(40 * 100 * 3) % 251).reshape(40, 100, 3)
    rgba[..., 3] = 255
    rgba[:, :30, 3] = 0
    frames = [Image.fromarray(rgba, "RGBA"), Image.fromarray(255 - rgba[..., :3], "RGB")]
    buf = io.BytesIO()
    frames[0].save(buf, "PNG")
    at.file_uploader(key="explore_upload").set_value(("clear.png", buf.getvalue(), "image/png"))
    at.run()
    _no_exception(at)
    infos = [i.value for i in at.info]
    assert any(i.startswith("clear.png: 30% of the image's pixels are transparent") for i in infos), infos
    assert any("clear.png: the image (100x40) is resized to the model's 96x96, which stretches it" in i
               for i in infos), infos
    gif = io.BytesIO()
    frames[1].save(gif, "GIF", save_all=True, append_images=[frames[1].transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    at.file_uploader(key="explore_upload").set_value(("anim.gif", gif.getvalue(), "image/gif"))
    at.run()
    _no_exception(at)
    assert any("anim.gif: the image is animated (2 frames): only its first frame is used" in i.value
               for i in at.info)


def test_a_bad_environment_setting_is_an_error_in_the_sidebar(monkeypatch):
    monkeypatch.setenv("MLALP_LP_BATCH", "yes")
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    _no_exception(at)
    assert at.sidebar.error and "MLALP_LP_BATCH must be auto, 1 or 0, got 'yes'" in at.sidebar.error[0].value


def test_target_choices_are_kept_across_modes():
    at = _app()
    at.selectbox(key="explore_index").set_value(SCENE).run()
    at.radio(key="explore_tmode").set_value("add").run()
    options = at.multiselect(key="explore_tadd").options
    at.multiselect(key="explore_tadd").set_value(options[:2]).run()
    at.radio(key="explore_tmode").set_value("hide").run()
    at.radio(key="explore_tmode").set_value("add").run()
    _no_exception(at)
    assert at.multiselect(key="explore_tadd").value == options[:2]
    assert any("add **" in m.value for m in at.markdown)


def test_unconfigured_model_shows_its_reason_on_every_page():
    at = _app()
    at.sidebar.selectbox(key="g_model").set_value("ml-gcn").run()
    _no_exception(at)
    assert any("MLALP_MLGCN_CHECKPOINT" in w.value for w in at.warning)
    assert not at.button  # nothing to run
    at.switch_page("pages/compare.py").run()
    assert any("MLALP_MLGCN_CHECKPOINT" in w.value for w in at.warning)
    at.switch_page("pages/models.py").run()
    _no_exception(at)
    assert any("ml-liw" in w.value and "MLALP_MLLIW_CHECKPOINT" in w.value for w in at.warning)


def test_a_bad_attack_table_in_mlalp_toml_is_one_line_in_the_sidebar(tmp_path):
    # the settings keep [attacks.*] as written; the sidebar has each attack's schema check them
    (tmp_path / "mlalp.toml").write_text("[attacks.mla-lp]\nlp_tol = 0.0\n")
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    _no_exception(at)
    assert any("mlalp.toml [attacks.mla-lp]: mla-lp.lp_tol must be a finite number in (0, 0.5], got 0.0"
               in e.value for e in at.sidebar.error), [e.value for e in at.sidebar.error]
    assert not at.button  # the page stopped: nothing runs on a setting that cannot be read


def test_models_page_lists_models_and_computes_table_one():
    at = _app()
    at.switch_page("pages/models.py").run()
    _no_exception(at)
    # a static table (every cell in full), its cells escaped for Markdown, one type per column
    listing = at.table[0].value.replace(r"\\(.)", r"\1", regex=True)
    assert {"demo-gcn", "demo-liw", "ml-gcn", "ml-liw"} <= set(listing["model"])
    rows = listing.set_index("model")
    assert rows.loc["ml-gcn", "available"] == "no" and rows.loc["demo-gcn", "labels"] == "10"
    assert rows.loc["ml-gcn", "labels"] == "not known until loaded"
    assert rows.loc["ml-gcn", "what to do"].startswith("set MLALP_MLGCN_CHECKPOINT")
    assert all(isinstance(v, str) for v in listing.to_numpy().ravel())
    warning = next(w.value for w in at.warning if "ml-gcn" in w.value)
    assert warning.count("ml-gcn") == 1, warning  # the model named once
    at.number_input(key="models_limit").set_value(16)
    at.button(key="models_compute").click().run()
    _no_exception(at)
    assert not at.error
    table = at.dataframe[-1].value.set_index("metric")["value"]
    assert 0 <= table["hamming loss"] < 0.2 and 0.5 < table["micro-F1"] <= 1
    assert any("16 images" in c.value for c in at.caption)


def test_benchmark_page_tables_drill_down_and_open_in_explore(tmp_path):
    from mlalp_core.experiments.runner import BenchConfig, run_benchmark

    store = tmp_path / "results.sqlite"
    run_benchmark(BenchConfig(models=("demo-gcn",), dataset="demo", attacks=("mla-lp", "ml-deepfool"), n=2,
                              batch_size=2, device="cpu", store=store,
                              attack_settings={"mla-lp": {"max_iterations": 2}, "ml-deepfool": {"max_iterations": 2}}))
    at = _app()
    at.switch_page("pages/benchmark.py").run()
    _no_exception(at)
    assert at.text_input(key="bench_store").value == str(store)
    assert not at.error
    frames = [d.value for d in at.dataframe]
    t3 = next(f for f in frames if "success_rate" in f.columns)
    # the paper's order, each run labelled by what differs from the paper's settings
    assert list(t3["attack"]) == ["ML-DeepFool (max iterations 2)", "MLA-LP (max iterations 2)"]
    assert set(t3["attacked"]) == {2}
    assert not [c for c in t3.columns if c.startswith("paper_")]  # no paper numbers for the demo: hidden
    assert any("paper's columns are hidden" in c.value for c in at.caption)
    assert any("to_attack" in f.columns for f in frames)  # Table II
    labels = [b.label for b in at.get("download_button")]
    assert "Table III as CSV" in labels and "Table III as LaTeX" in labels
    assert any(len(s["data"]) == 4 for s in _charts(at))  # budget curves: 2 attacks x (l_inf, l_2)

    mla_run = next(r["run_key"] for r in t3_rows(store) if r["attack"] == "mla-lp")
    at.selectbox(key="bench_group").set_value(mla_run).run()
    assert any(f"Run {mla_run}: MLA-LP (max iterations 2)" in c.value for c in at.caption)
    at.button(key="bench_open").click().run()
    _no_exception(at)
    assert "stored_example" in at.session_state
    # now on Explore: the stored perturbation is shown, nothing re-run
    assert any("Stored result" in c.value for c in at.caption)
    assert "_results" not in at.session_state or not at.session_state["_results"]
    assert {m.label for m in at.metric} >= {"success", "l_2", "l_inf", "RMSD (0..255)"}
    assert any(s["data"][0]["type"] == "surface" for s in _charts(at))


def t3_rows(store):
    from mlalp_core.experiments.reporting import table3
    from mlalp_core.experiments.store import ResultsStore

    return table3(ResultsStore(store).rows())


def test_benchmark_page_launches_a_batch_run():
    at = _app()
    at.switch_page("pages/benchmark.py").run()
    _no_exception(at)
    assert any("No results store" in i.value for i in at.info)
    at.multiselect(key="bench_attacks").set_value(["ml-deepfool"])
    at.number_input(key="bench_n").set_value(1)
    at.button(key="bench_launch").click().run()
    _no_exception(at)
    assert not at.error
    t3 = next(d.value for d in at.dataframe if "success_rate" in d.value.columns)
    assert list(t3["attack"]) == ["ML-DeepFool"] and list(t3["attacked"]) == [1]
    assert not any(b.label == "Stop" for b in at.button)  # no stale Stop once the run has ended


def test_a_failing_lp_backend_is_explained_before_and_after_running():
    from mlalp_core.lp import backend_status

    ok, why = backend_status()["mosek"]
    if ok:
        pytest.skip("MOSEK has a licence here, so its LP does not fail")
    at = _app()
    at.selectbox(key="explore_index").set_value(SCENE).run()
    at.selectbox(key="explore_mla-lp_lp_backend").set_value("mosek").run()
    _no_exception(at)
    assert any("LP backend mosek" in w.value for w in at.warning)
    at.button(key="explore_run").click().run()
    _no_exception(at)  # a clear st.error, no traceback
    assert at.error and "MOSEK" in at.error[0].value
    assert not at.metric
    assert "_results" not in at.session_state or not at.session_state["_results"]
    at.button(key="explore_run").click().run()  # the page stays usable
    _no_exception(at)


def test_paper_export_draws_a_vector_pdf_on_the_server_without_a_browser():
    at = _app()
    at.selectbox(key="explore_index").set_value(SCENE).run()
    at.number_input(key="explore_mla-lp_max_iterations").set_value(3)
    at.button(key="explore_run").click().run()
    _no_exception(at)
    # every interactive chart keeps the browser-side SVG download in its modebar
    configs = [c.proto.config for c in at.get("plotly_chart")]
    assert configs and all('"format": "svg"' in cfg or '"format":"svg"' in cfg for cfg in configs)
    at.selectbox(key="explore_paper_xfmt").set_value("pdf")
    at.selectbox(key="explore_paper_xres").set_value(32)
    at.button(key="explore_paper_xgo").click().run()
    _no_exception(at)
    assert not at.error
    made = at.session_state["_exports"]
    ((key, fmt, dpi, options), (data, seconds)), = made.items()
    assert fmt == "pdf" and data.startswith(b"%PDF") and len(data) > 10_000 and dict(options)["resolution"] == 32
    assert any("Download" in str(b.proto.label) for b in at.get("download_button"))

def test_explore_runs_a_gradient_attack_in_minimum_budget_mode_and_a_show_many_target():
    at = _app()
    at.selectbox(key="explore_index").set_value(SCENE).run()
    at.selectbox(key="explore_attack").set_value("pgd").run()
    _no_exception(at)
    at.checkbox(key="explore_pgd_min_budget").check()
    at.button(key="explore_run").click().run()
    _no_exception(at)
    assert not at.error
    assert {m.label for m in at.metric} >= {"success", "l_inf"}
    assert any("minimum-budget search" in c.value for c in at.caption)  # the note of settings that differ
    at.radio(key="explore_tmode").set_value("show_many").run()
    at.selectbox(key="explore_attack").set_value("mla-lp").run()
    at.number_input(key="explore_mla-lp_max_iterations").set_value(2)
    at.button(key="explore_run").click().run()
    _no_exception(at)
    assert not at.error
    assert any("add **" in m.value for m in at.markdown)


def test_a_new_servers_first_run_of_a_page_goes_through_app_py(monkeypatch):
    """The pages live in pages/, the folder Streamlit's legacy mode scans on a server's first run
    (AppTest's every run). A page reached that way must not run on its own: it starts again
    under app.py, so the sidebar of global choices is drawn and the navigation is app.py's."""
    import streamlit.testing.v1.app_test as app_test
    from streamlit.runtime.pages_manager import PagesManager

    monkeypatch.setattr(app_test, "PagesManager", PagesManager)  # AppTest as it is: the scan on each run
    at = AppTest.from_file(APP, default_timeout=240)
    at.run()
    _no_exception(at)
    assert [t.value for t in at.title] == ["Explore one attack"]
    for path, title in (("pages/compare.py", "Compare the five attacks"), ("pages/models.py", "Models")):
        at.switch_page(path).run()
        _no_exception(at)
        assert [t.value for t in at.title] == [title]
        assert at.sidebar.selectbox(key="g_model").value == "demo-gcn"  # app.py drew the sidebar
    assert PagesManager.uses_pages_directory is False


def test_settings_the_other_settings_make_no_use_of_are_greyed_out_until_they_do():
    """MLA-LP's polish settings mean nothing without a polish (Setting.used_when): their widgets
    are disabled, their help says when they are used, and choosing the pgd polish enables them."""
    at = _app()
    assert at.selectbox(key="explore_attack").value == "mla-lp"
    factor = at.number_input(key="explore_mla-lp_polish_factor")
    assert factor.disabled and "used only when polish is pgd" in factor.help
    assert not at.number_input(key="explore_mla-lp_max_iterations").disabled
    at.selectbox(key="explore_mla-lp_polish").set_value("scale").run()
    _no_exception(at)
    assert at.number_input(key="explore_mla-lp_polish_factor").disabled
    assert not at.number_input(key="explore_mla-lp_polish_steps").disabled  # the scale polish's bisection steps
    at.selectbox(key="explore_mla-lp_polish").set_value("pgd").run()
    assert not at.number_input(key="explore_mla-lp_polish_factor").disabled
