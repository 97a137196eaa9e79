"""End to end in a real headless browser: every page of the app and its main action, as a new user
meets them (tests/browser_driver.py's tour), each of issue 21's findings checked on the page the
user sees, and the server's log clean.

Drives Debian's system Chromium through Playwright (from PyPI; nothing is downloaded from a
browser vendor). Without a Chromium the tests are skipped, unless MLALP_REQUIRE_BROWSER=1 (CI),
where they fail. The tour runs once for the module (about two minutes on a 2-core CPU); its
screenshots are kept in MLALP_SCREENSHOT_DIR (default: <tmp>/mlalp-browser-test), their path is
printed (run pytest with -s to see it).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser_driver import (  # noqa: E402
    _LABELS_JS,
    CHROMIUM_ARGS,
    PAGES,
    bad_log_lines,
    find_chromium,
    problems,
    tour,
)

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = os.environ.get("MLALP_REQUIRE_BROWSER", "").strip() in ("1", "true", "yes")

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _unavailable(reason: str) -> None:
    if REQUIRED:
        pytest.fail(f"MLALP_REQUIRE_BROWSER=1 but {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"streamlit did not answer at {url} within {timeout:.0f} s")


def _require_browser() -> str:
    """The browser, checked before the app is started: skip without one, or fail under
    MLALP_REQUIRE_BROWSER=1."""
    path = find_chromium()
    if path is None:
        _unavailable("no Chromium found (install it: apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("playwright is not installed (pip install -r requirements-dev.txt)")
    return path


@contextmanager
def serve_app(log: list[str] | None = None, env: dict[str, str] | None = None):
    """``streamlit run app.py`` with the project's own Streamlit config (as a user starts it) on a
    free local port; yields its URL, stops it afterwards and appends its log lines to ``log``."""
    port = _free_port()
    env = dict(os.environ, MLALP_DEVICE="cpu", **(env or {}))
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless=true",
             f"--server.port={port}", "--server.address=127.0.0.1"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_healthy(url, proc)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            out.seek(0)
            if log is not None:
                log.extend(out.read().splitlines())


@pytest.fixture(scope="module")
def seen(tmp_path_factory):
    """The tour of every page on a new server (its first run is the Models page, opened by its own
    address), what it found, and the server's log."""
    chromium = _require_browser()
    shots = Path(os.environ.get("MLALP_SCREENSHOT_DIR", Path(tempfile.gettempdir()) / "mlalp-browser-test"))
    log: list[str] = []
    # a results store of the tour's own: the Benchmark page must not start on the user's store
    with serve_app(log, env={"MLALP_RESULTS": str(tmp_path_factory.mktemp("store") / "results.sqlite")}) as url:
        found = tour(url, chromium, shots)
    print(f"\nscreenshots of every page in {shots}")
    return found, log


def test_every_page_and_its_main_action_show_what_they_should(seen):
    found, _ = seen
    assert set(found) == {"models", "explore", "stop", "compare", "benchmark"}
    assert not problems(found), problems(found)


def test_the_server_log_is_clean_after_every_page(seen):
    """No traceback, error or warning (the Models page once logged Arrow's conversion error)."""
    _, log = seen
    assert log, "no server log was captured"
    assert not bad_log_lines(log), bad_log_lines(log)[:10]


def test_a_new_servers_first_visit_to_a_page_lists_only_the_apps_pages(seen):
    """pages/ is the folder Streamlit's legacy mode scans on a server's first run: the first visit
    (to /models) must list the four pages of app.py, with the sidebar drawn."""
    models = seen[0]["models"]
    assert models["navigation"] == PAGES
    assert models["sidebar_drawn"]


def test_models_page_shows_its_table_in_full_and_names_each_model_once(seen):
    models = seen[0]["models"]
    assert set(models["models"]) >= {"demo-gcn", "demo-liw", "ml-gcn", "ml-liw"}
    assert models["cut_cells"] == [] and models["markdown_in_cells"] == 0 and models["empty_cells"] == 0
    assert len(models["warnings"]) == 2  # ml-gcn and ml-liw are not configured here
    for w in models["warnings"]:
        name = w.split(" ")[0]
        assert w.count(name) == 1, w


def test_stop_keeps_and_shows_the_best_iterate(seen):
    """ML-CW at the paper's settings, stopped during a binary step: the result so far is on the
    page, marked "stopped early", with its metrics (it was lost: "The run was stopped ...")."""
    stop = seen[0]["stop"]
    assert "binary step" in stop["progress_when_stopped"]
    assert stop["stopped_early_note"] == 1 and stop["result_header"] == 1 and stop["lost_run_warning"] == 0
    assert stop["metrics"]["success"] in ("yes", "no") and float(stop["metrics"]["l_inf"]) > 0


def test_the_export_section_stays_open_after_the_first_make_the_file(seen):
    for step, key in (("explore", "export"), ("benchmark", "curves_export")):
        export = seen[0][step][key]
        assert export["section_open"] and export["download_visible"], (step, export)
        assert export["file_kind"] == "pdf", (step, export)


def test_compare_labels_each_row_of_fig1_beside_its_own_surfaces(seen):
    compare = seen[0]["compare"]
    rows = compare["grid_rows"]
    assert [r["name"] for r in rows] == ["MLA-LP", "ML-DeepFool", "ML-CW", "ML-Rank1", "ML-Rank2"]
    ys = [r["y"] for r in rows]
    assert ys == sorted(ys) and min(b - a for a, b in zip(ys, ys[1:])) > 50, rows  # distinct heights, in order
    assert all(r["row"][0] <= r["y"] <= r["row"][1] for r in rows), rows
    assert not compare["overlapping_labels"], compare["overlapping_labels"]


def test_compare_grid_has_one_colour_bar_for_all_attacks(seen):
    """One z-range and one colour bar across the five attacks (they compare at a glance)."""
    compare = seen[0]["compare"]
    grid = compare["grid_axes"]
    assert set(grid["surfaces"]) == {"coloraxis"}, grid
    used = [a for a in grid["axes"] if a[0] == "coloraxis"]
    assert len(used) == 1 and used[0][1] == -used[0][2] > -1.01, grid
    assert compare["colour_bars"] == 1


def test_figures_have_readable_3d_ticks_and_no_label_over_another(seen):
    for step in ("explore", "stop", "compare", "benchmark", "models"):
        f = seen[0][step]
        assert not f["overlapping_labels"] and not f["cut_labels"], (step, f["overlapping_labels"], f["cut_labels"])
        assert all(size >= 12 for size in f["scene_tick_px"]), (step, f["scene_tick_px"])


def test_the_label_checks_see_a_title_on_a_tick_and_a_cut_off_label(tmp_path):
    """The tour's label check, on figures drawn wrong on purpose: a panel title on its y tick "1"
    (the trace before this issue), a point's long label running out of its panel (the efficiency
    figure before), and the same figures drawn right."""
    import plotly.graph_objects as go
    from playwright.sync_api import sync_playwright

    from mlalp_core.viz.figures import trace_chart

    chromium = _require_browser()

    def trace(fixed: bool) -> go.Figure:
        steps = [{"iteration": 1, "linf": 0.0018, "l2": 0.29, "labels_wrong": 1, "attacked_probs": {"five": 0.6}},
                 {"iteration": 2, "linf": 0.0026, "l2": 0.38, "labels_wrong": 0, "attacked_probs": {"five": 0.48}}]
        fig = trace_chart(steps, attack="mla-lp", threshold=0.5)
        if not fixed:  # as it was drawn: the probabilities on [0, 1], the titles right above the panels
            fig.update_yaxes(range=[0, 1], tickvals=None, col=4)
            fig.update_annotations(yshift=0)
        return fig.update_layout(width=940)

    def points(fixed: bool) -> go.Figure:
        fig = go.Figure(go.Scatter(x=[10, 150], y=[0.03, 0.05], mode="markers" if fixed else "markers+text",
                                   text=["MLA-LP", "ML-CW (max iterations 100, binary-search steps 3)"],
                                   textposition="top center"))
        return fig.update_layout(width=600, height=300, xaxis=dict(range=[0, 160]))

    found = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 800, "height": 700})
            for name, make in (("trace", trace), ("points", points)):
                for fixed in (False, True):
                    html = tmp_path / f"{name}_{fixed}.html"
                    make(fixed).write_html(html, include_plotlyjs=True)
                    page.goto(html.as_uri())
                    page.locator(".js-plotly-plot .main-svg").first.wait_for()
                    found[name, fixed] = page.evaluate(_LABELS_JS)
        finally:
            browser.close()
    assert [(o["a"], o["b"]) for o in found["trace", False]["overlaps"]] == [("1", "attacked labels' probability")]
    assert [c["text"] for c in found["points", False]["cut"]] == ["ML-CW (max iterations 100, binary-search steps 3)"]
    for fixed in (found["trace", True], found["points", True]):
        assert fixed == {"overlaps": [], "cut": []}, fixed


def test_choosing_upload_and_uploading_keep_the_attack_settings(tmp_path):
    """Regression: choosing "upload an image" and uploading once reset MLA-LP's settings to the
    widgets' minima (1 iteration, LP gap 0, no best iterate) while the page still said "the
    paper's". Only the user's own edit may change a setting. An upload's notes are shown."""
    import numpy as np
    from PIL import Image

    chromium = _require_browser()
    from playwright.sync_api import sync_playwright

    photo = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((60, 80, 3)) * 255).astype("uint8")).save(photo)
    log: list[str] = []
    with serve_app(log) as app_url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 3000})
            page.goto(app_url, wait_until="domcontentloaded")
            page.get_by_role("button", name="Run", exact=True).wait_for(timeout=90_000)

            def values() -> dict:
                return {"iterations": page.get_by_label("max iterations", exact=True).input_value(),
                        "gap": float(page.get_by_label("LP relative gap", exact=True).input_value()),
                        "best": page.get_by_label("return the best iterate", exact=True).is_checked()}

            before = values()
            gap = page.get_by_label("LP relative gap", exact=True)
            gap.fill("0.0001")
            gap.press("Enter")  # the user's own edit: it must stay
            page.get_by_text("LP relative gap 0.0001 (paper: 1e-06)").wait_for(timeout=30_000)
            page.locator("[data-testid=stSidebar] [data-testid=stSelectbox]").first.click()
            page.get_by_role("option", name="upload an image").click()
            page.locator("input[type=file]").wait_for(state="attached", timeout=60_000)
            page.wait_for_timeout(1000)
            page.locator("input[type=file]").set_input_files(str(photo))
            page.get_by_role("button", name="Run", exact=True).wait_for(timeout=90_000)
            page.wait_for_timeout(1500)
            after = values()
            note = page.get_by_text("Not the paper's settings").inner_text()
            infos = [i.inner_text() for i in page.locator("[data-testid=stAlertContentInfo]").all()]
        finally:
            browser.close()
    assert before == {"iterations": "10", "gap": 1e-6, "best": True}
    assert after == {"iterations": "10", "gap": 1e-4, "best": True}
    assert "LP relative gap 0.0001 (paper: 1e-06)" in note and "iterations" not in note
    # 80x60 to the model's square input: the page says the aspect ratio was not kept
    assert any("photo.png" in i and "aspect" in i.lower() for i in infos), infos
    assert not bad_log_lines(log), bad_log_lines(log)[:5]
