"""Time from a click on Run to the drawn result, for MLA-LP on demo images, in a real browser.

Starts ``streamlit run app.py`` on a free port, opens the Explore page in Debian's headless
Chromium (Playwright), and for each image clicks Run and waits until the result message, the
three WebGL surfaces and the confidence bars are on the page. Prints one line per image and the
attack's own time as the page reports it. Each image opens in a fresh session, so nothing is
cached; the model is loaded before the click (when the page first draws).

    .venv/bin/python bench/app_latency.py [scene_009 scene_000 ...]
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_browser import CHROMIUM_ARGS, _free_port, _wait_healthy, find_chromium  # noqa: E402


def main(images: list[str]) -> int:
    import os
    import subprocess

    from playwright.sync_api import sync_playwright

    chromium = find_chromium()
    if chromium is None:
        print("no Chromium: apt-get install chromium")
        return 1
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless=true",
         f"--server.port={port}", "--server.address=127.0.0.1", "--browser.gatherUsageStats=false",
         "--server.fileWatcherType=none"],
        cwd=ROOT, env=dict(os.environ, MLALP_DEVICE="cpu"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            print(f"{'image':<12} {'click->result (s)':>18} {'click->text (s)':>16} {'attack (s)':>11}  status line")
            for image in images:
                page = browser.new_page(viewport={"width": 1400, "height": 5200})
                page.goto(f"{url}/?image={image}", wait_until="domcontentloaded")
                run = page.get_by_role("button", name="Run", exact=True)
                run.wait_for(timeout=120_000)
                page.wait_for_timeout(500)  # let the first script run finish
                t0 = time.perf_counter()
                run.click()
                page.get_by_text("reached the target").or_(page.get_by_text("did not reach")).first.wait_for(
                    timeout=300_000)
                t_text = time.perf_counter() - t0
                page.wait_for_function(
                    "() => document.querySelectorAll('.js-plotly-plot .gl-container canvas').length >= 3 && "
                    "document.querySelectorAll('.js-plotly-plot .barlayer .point').length >= 10", timeout=120_000)
                dt = time.perf_counter() - t0
                status = page.get_by_text(re.compile(r"^MLA-LP: (success|target not reached) in")).first.inner_text()
                attack_s = float(page.locator("[data-testid='stMetricValue']").nth(6).inner_text())
                print(f"{image:<12} {dt:>18.2f} {t_text:>16.2f} {attack_s:>11.2f}  {status.strip()}")
                page.close()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:] or ["scene_009", "scene_000", "scene_001", "scene_002"]))
