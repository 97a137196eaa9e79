"""Drive the app's Explore page in a real headless Chromium as a newcomer would: pick a gallery
image, run MLA-LP, and look at what the page shows.

Used by tests/test_browser.py and, on its own, by .ci/run's newcomer step, which serves the app
from the runtime-only install and drives it from a separate small venv holding only playwright:

    python tests/browser_driver.py http://127.0.0.1:8501 [--shots DIR]

Exit status 0 when the page shows a result, three distortion surfaces, the confidence bars and
no exception box; 1 otherwise (the findings are printed either way).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--enable-unsafe-swiftshader"]
#: A gallery scene MLA-LP (hide-one, seed 0) turns in two iterations on demo-gcn: the run stays short.
IMAGE = "scene_009"


def find_chromium() -> str | None:
    """MLALP_CHROMIUM when set (and only it), else Debian's /usr/bin/chromium, else PATH."""
    named = os.environ.get("MLALP_CHROMIUM", "").strip()
    if named:
        return named if os.access(named, os.X_OK) else None
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


def drive_explore(url: str, chromium: str, shots: Path | None = None, image: str = IMAGE) -> dict:
    """Pick ``image`` in the Image box, press Run, wait for the result; return what is on the page."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            # tall enough that the whole page is in view: every WebGL scene paints and one screenshot holds it
            page = browser.new_page(viewport={"width": 1400, "height": 5200})
            page.goto(url, wait_until="domcontentloaded")
            run = page.get_by_role("button", name="Run", exact=True)
            run.wait_for(timeout=120_000)
            # the Image box, as a user does it: open it, type to filter, pick the one option left
            box = page.locator("[data-testid=stSelectbox]").filter(has_text="Image").first
            box.click()
            page.keyboard.type(image)
            page.get_by_role("option", name=image).first.click()
            page.locator("strong", has_text=image).first.wait_for(timeout=180_000)
            run.wait_for(timeout=120_000)
            run.click()
            page.get_by_text("reached the target").or_(page.get_by_text("did not reach")).first.wait_for(
                timeout=180_000)
            page.wait_for_function(
                "() => document.querySelectorAll('.js-plotly-plot .gl-container canvas').length >= 3",
                timeout=60_000)
            page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .barlayer .point').length >= 10",
                                   timeout=60_000)
            page.wait_for_timeout(1500)  # let the WebGL scenes paint before the screenshots
            found = {
                "image": image,
                "success": page.get_by_text("reached the target").count() > 0,
                "surfaces": page.evaluate(
                    "() => Array.from(document.querySelectorAll('.js-plotly-plot')).filter("
                    "p => p._fullData && p._fullData.some(t => t.type === 'surface'))"
                    ".map(p => p._fullData.filter(t => t.type === 'surface').length)"),
                "bar_points": page.evaluate("() => document.querySelectorAll('.js-plotly-plot .barlayer .point').length"),
                "exception_boxes": page.locator("[data-testid=stException]").count(),
                "error_boxes": [e.inner_text()[:200] for e in page.locator("[data-testid=stAlertContentError]").all()],
                "webgl_errors": page.get_by_text("WebGL is not supported").count(),
            }
            if shots is not None:
                shots.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(shots / "explore_mlalp.png"), full_page=True)
                charts = page.locator(".js-plotly-plot")
                surf_i, bars_i = page.evaluate(
                    "() => { const ps = Array.from(document.querySelectorAll('.js-plotly-plot'));"
                    " const has = f => ps.findIndex(p => p._fullData && p._fullData.some(f));"
                    " return [has(t => t.type === 'surface'), has(t => t.type === 'bar' && t.name === 'after')]; }")
                charts.nth(max(surf_i, 0)).screenshot(path=str(shots / "explore_surfaces.png"))
                charts.nth(max(bars_i, 0)).screenshot(path=str(shots / "explore_bars.png"))
                found["screenshots"] = str(shots)
        finally:
            browser.close()
    return found


def problems(found: dict) -> list[str]:
    """What is wrong with a page ([] when it shows everything it should)."""
    out = []
    if found["exception_boxes"]:
        out.append(f"{found['exception_boxes']} exception box(es) on the page")
    if found["error_boxes"]:
        out.append(f"error boxes: {found['error_boxes']}")
    if found["webgl_errors"]:
        out.append("plotly reported that WebGL is not available in the browser")
    if not found["surfaces"] or found["surfaces"][0] != 3:
        out.append(f"expected one figure with three surfaces, found {found['surfaces']}")
    if found["bar_points"] < 20:
        out.append(f"expected before/after bars for 10 labels, found {found['bar_points']} bar points")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("--shots", type=Path, default=None, help="keep screenshots here")
    args = ap.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print("no Chromium found (apt-get install chromium)", file=sys.stderr)
        return 1
    found = drive_explore(args.url, chromium, args.shots)
    print(json.dumps(found, indent=1))
    bad = problems(found)
    for line in bad:
        print("PROBLEM:", line, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
