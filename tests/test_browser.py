"""End to end in a real headless browser: the app starts, MLA-LP runs on a demo image, and the
distortion surfaces (WebGL canvases) and the confidence bars are drawn.

Drives Debian's system Chromium through Playwright (from PyPI; nothing is downloaded from a
browser vendor). Without a Chromium the test is skipped, unless MLALP_REQUIRE_BROWSER=1 (CI),
where it fails. The screenshot's path is printed (run pytest with -s to see it).
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
from browser_driver import CHROMIUM_ARGS, drive_explore, find_chromium, problems  # noqa: E402

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


#: Lines of a server log that mean something went wrong (a traceback, a flooded file watcher).
BAD_LOG_LINES = ("Traceback", "Error", "filesystem events were lost", "Inotify")


@contextmanager
def serve_app(log: list[str] | None = None):
    """``streamlit run app.py`` with the project's own Streamlit config (as a user starts it) on a
    free local port; yields its URL, stops it afterwards and appends its log lines to ``log``."""
    port = _free_port()
    env = dict(os.environ, MLALP_DEVICE="cpu")
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


def bad_log_lines(log: list[str]) -> list[str]:
    return [line for line in log if any(word in line for word in BAD_LOG_LINES)]


def test_mlalp_run_renders_surfaces_and_bars():
    chromium = _require_browser()
    shots = Path(os.environ.get("MLALP_SCREENSHOT_DIR", Path(tempfile.gettempdir()) / "mlalp-browser-test"))
    log: list[str] = []
    with serve_app(log) as app_url:
        found = drive_explore(app_url, chromium, shots)
    print(f"\nscreenshots of the Explore page after MLA-LP in {shots}: explore_mlalp.png (whole page), "
          "explore_surfaces.png (R, G, B surfaces), explore_bars.png (confidence bars)")
    assert not problems(found), problems(found)
    assert found["success"]
    assert not bad_log_lines(log), bad_log_lines(log)[:5]


def test_choosing_upload_and_uploading_keep_the_attack_settings(tmp_path):
    """Regression: choosing "upload an image" and uploading once reset MLA-LP's settings to the
    widgets' minima (1 iteration, LP gap 0, no best iterate) while the page still said "the
    paper's". Only the user's own edit may change a setting."""
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
        finally:
            browser.close()
    assert before == {"iterations": "10", "gap": 1e-6, "best": True}
    assert after == {"iterations": "10", "gap": 1e-4, "best": True}
    assert "LP relative gap 0.0001 (paper: 1e-06)" in note and "iterations" not in note
    assert not bad_log_lines(log), bad_log_lines(log)[:5]


def test_compare_grid_has_one_colour_bar_for_all_attacks():
    """Compare's Fig. 1 grid: one z-range and one colour bar across the five attacks (so they can
    be compared at a glance), on a CPU with the quick preset it starts on."""
    chromium = _require_browser()
    from playwright.sync_api import sync_playwright

    log: list[str] = []
    with serve_app(log) as app_url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 4000})
            page.goto(f"{app_url}/compare", wait_until="domcontentloaded")
            run = page.get_by_role("button", name="Run all five")
            run.wait_for(timeout=120_000)
            box = page.locator("[data-testid=stSelectbox]").filter(has_text="Image").first
            box.click()
            page.keyboard.type("scene_009")
            page.get_by_role("option", name="scene_009").first.click()
            page.locator("strong", has_text="scene_009").first.wait_for(timeout=120_000)
            page.get_by_text("Estimated at most").first.wait_for(timeout=60_000)
            run.click()
            page.get_by_text("Fig. 1").first.wait_for(timeout=300_000)
            page.wait_for_function(
                "() => Array.from(document.querySelectorAll('.js-plotly-plot')).some("
                "p => p._fullData && p._fullData.filter(t => t.type === 'surface').length === 15)", timeout=120_000)
            grid = page.evaluate(
                "() => { const p = Array.from(document.querySelectorAll('.js-plotly-plot')).find("
                "p => p._fullData && p._fullData.filter(t => t.type === 'surface').length === 15);"
                " const axes = Object.keys(p._fullLayout).filter(k => /^coloraxis\\d*$/.test(k));"
                " return {surfaces: p._fullData.filter(t => t.type === 'surface').map(t => t.coloraxis),"
                " axes: axes.map(k => [k, p._fullLayout[k].cmin, p._fullLayout[k].cmax]),"
                " bars: document.querySelectorAll('.js-plotly-plot .colorbar').length}; }")
            exceptions = page.locator("[data-testid=stException]").count()
        finally:
            browser.close()
    assert exceptions == 0
    assert set(grid["surfaces"]) == {"coloraxis"}, grid
    used = [a for a in grid["axes"] if a[0] == "coloraxis"]
    assert len(used) == 1 and used[0][1] == -used[0][2] > -1.01, grid
    assert grid["bars"] == 1, grid  # one colour bar on the page
    assert not bad_log_lines(log), bad_log_lines(log)[:5]
