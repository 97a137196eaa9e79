"""End to end in a real headless browser: the app starts, MLA-LP runs on a demo image, and the
distortion surfaces (WebGL canvases) and the confidence bars are drawn.

Drives Debian's system Chromium through Playwright (from PyPI; nothing is downloaded from a
browser vendor). Without a Chromium the test is skipped, unless MLALP_REQUIRE_BROWSER=1 (CI),
where it fails. The screenshot's path is printed (run pytest with -s to see it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = os.environ.get("MLALP_REQUIRE_BROWSER", "").strip() in ("1", "true", "yes")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--enable-unsafe-swiftshader"]
#: A gallery scene MLA-LP (hide-one, seed 0) turns in two iterations on demo-gcn: the test stays short.
IMAGE = "scene_009"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def find_chromium() -> str | None:
    """MLALP_CHROMIUM when set (and only it), else Debian's /usr/bin/chromium, else PATH."""
    named = os.environ.get("MLALP_CHROMIUM", "").strip()
    if named:
        return named if os.access(named, os.X_OK) else None
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


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
def serve_app():
    """``streamlit run app.py`` on a free local port; yields its URL and stops it afterwards."""
    port = _free_port()
    env = dict(os.environ, MLALP_DEVICE="cpu")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless=true",
         f"--server.port={port}", "--server.address=127.0.0.1", "--browser.gatherUsageStats=false",
         "--server.fileWatcherType=none"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
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


def test_mlalp_run_renders_surfaces_and_bars():
    chromium = _require_browser()
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("MLALP_SCREENSHOT_DIR", Path(tempfile.gettempdir()) / "mlalp-browser-test"))
    shots.mkdir(parents=True, exist_ok=True)
    with serve_app() as app_url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            # tall enough that the whole page is in view: every WebGL scene paints and one screenshot holds it
            page = browser.new_page(viewport={"width": 1400, "height": 5200})
            page.goto(f"{app_url}/?image={IMAGE}", wait_until="domcontentloaded")
            run = page.get_by_role("button", name="Run", exact=True)
            run.wait_for(timeout=90_000)
            run.click()
            page.get_by_text("reached the target").or_(page.get_by_text("did not reach")).first.wait_for(
                timeout=180_000)
            # the three channel surfaces: one WebGL scene per channel
            page.wait_for_function(
                "() => document.querySelectorAll('.js-plotly-plot .gl-container canvas').length >= 3",
                timeout=60_000)
            page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .barlayer .point').length >= 10",
                                   timeout=60_000)
            surfaces = page.evaluate(
                "() => Array.from(document.querySelectorAll('.js-plotly-plot')).filter("
                "p => p._fullData && p._fullData.some(t => t.type === 'surface'))"
                ".map(p => p._fullData.filter(t => t.type === 'surface').length)")
            bars = page.evaluate("() => document.querySelectorAll('.js-plotly-plot .barlayer .point').length")
            webgl_error = page.get_by_text("WebGL is not supported").count()
            page.wait_for_timeout(1500)  # let the WebGL scenes paint before the screenshot
            shot = shots / "explore_mlalp.png"
            page.screenshot(path=str(shot), full_page=True)
            charts = page.locator(".js-plotly-plot")
            surf_shot, bars_shot = shots / "explore_surfaces.png", shots / "explore_bars.png"
            surf_i, bars_i = page.evaluate(
                "() => { const ps = Array.from(document.querySelectorAll('.js-plotly-plot'));"
                " const has = f => ps.findIndex(p => p._fullData && p._fullData.some(f));"
                " return [has(t => t.type === 'surface'), has(t => t.type === 'bar' && t.name === 'after')]; }")
            charts.nth(max(surf_i, 0)).screenshot(path=str(surf_shot))
            charts.nth(max(bars_i, 0)).screenshot(path=str(bars_shot))
            print(f"\nscreenshots of the Explore page after MLA-LP: {shot} (whole page), {surf_shot} (R, G, B "
                  f"surfaces), {bars_shot} (confidence bars)")
        finally:
            browser.close()
    assert webgl_error == 0, "plotly reported that WebGL is not available in the browser"
    assert surfaces and surfaces[0] == 3, f"expected one figure with three surfaces, found {surfaces}"
    assert bars >= 20, f"expected before/after bars for 10 labels, found {bars} bar points"


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
    with serve_app() as app_url, sync_playwright() as pw:
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
