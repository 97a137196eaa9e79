"""Time from a click on Run to the drawn result, for MLA-LP on demo images, in a real browser.

Starts ``streamlit run app.py`` on a free port, opens the Explore page in Debian's headless
Chromium (Playwright), and for each image clicks Run and waits until the result message, the
three WebGL surfaces and the confidence bars are on the page. Prints one line per image: the
time to the full drawing, to the result message, and the attack's own time as the page reports
it. Each image opens in a fresh session (nothing cached; the model is loaded before the click,
when the page first draws). Then, in one session, new targets (other hide-one seeds) are run one
after the other: the time from the click until the page has finished updating.

    .venv/bin/python bench/app_latency.py [scene_009 scene_000 ...]

With ``--compare``, the Compare page instead: for each image, in a fresh session, the estimate
the page shows before the click (per attack and together), then Run all five (the quick preset a
CPU starts on) and the time from the click until the page is idle with Fig. 1 drawn (15 WebGL
surfaces), next to the attacks' own times. The estimate is meant to be an upper bound of the
click-to-idle time:

    PYTHONPATH=$PWD .venv/bin/python bench/app_latency.py --compare scene_009 scene_000 scene_021
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_browser import CHROMIUM_ARGS, find_chromium, serve_app  # noqa: E402


def main(images: list[str]) -> int:
    from playwright.sync_api import sync_playwright

    chromium = find_chromium()
    if chromium is None:
        print("no Chromium: apt-get install chromium")
        return 1
    with serve_app() as url:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            print(f"{'image':<12} {'click->drawn (s)':>17} {'click->message (s)':>19} {'attack (s)':>11}  status line")
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
                status = " ".join(t.split("\n")[-1] for t in page.locator("summary").all_inner_texts() if "MLA-LP:" in t)
                attack_s = float(page.locator("[data-testid='stMetricValue']").nth(6).inner_text())
                print(f"{image:<12} {dt:>17.2f} {t_text:>19.2f} {attack_s:>11.2f}  {status.strip()}")
                page.close()
            page = browser.new_page(viewport={"width": 1400, "height": 5200})
            page.goto(f"{url}/?image={images[0]}", wait_until="domcontentloaded")
            run = page.get_by_role("button", name="Run", exact=True)
            run.wait_for(timeout=120_000)
            state = "[data-testid='stApp'][data-test-script-state='{}']"
            print(f"\none session, {images[0]}, new targets:")
            for seed in range(4):
                if seed:
                    box = page.get_by_role("spinbutton", name="Seed")
                    box.fill(str(seed))
                    box.press("Enter")
                page.wait_for_timeout(1000)
                page.locator(state.format("notRunning")).wait_for(timeout=120_000)
                target = page.get_by_text("Target: ").first.inner_text()
                t0 = time.perf_counter()
                run.click()
                page.locator(state.format("running")).wait_for(timeout=30_000)
                page.locator(state.format("notRunning")).wait_for(timeout=300_000)
                page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
                print(f"  seed {seed}: {time.perf_counter() - t0:.2f} s  ({target}; cached if seen before)")
            browser.close()
    return 0


def compare(images: list[str]) -> int:
    from playwright.sync_api import sync_playwright

    chromium = find_chromium()
    if chromium is None:
        print("no Chromium: apt-get install chromium")
        return 1
    state = "[data-testid='stApp'][data-test-script-state='{}']"
    with serve_app() as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        print(f"{'image':<10} {'estimate (s)':>12} {'click->idle, drawn (s)':>23} {'click->script done (s)':>23} "
              f"{'attacks (s)':>11}  estimate per attack")
        for image in images:
            page = browser.new_page(viewport={"width": 1400, "height": 5200})
            page.goto(f"{url}/compare?image={image}", wait_until="domcontentloaded")
            note = page.get_by_text("Estimated at most").first
            note.wait_for(timeout=300_000)
            page.locator(state.format("notRunning")).wait_for(timeout=300_000)
            page.wait_for_timeout(1000)
            text = note.inner_text()
            total = re.search(r"together ([\d.]+) (s|min)", text)
            estimate = float(total.group(1)) * (60 if total.group(2) == "min" else 1)
            per_attack = text.split(": ", 1)[1].split(";")[0]
            t0 = time.perf_counter()
            page.get_by_role("button", name="Run all five").click()
            page.locator(state.format("running")).wait_for(timeout=30_000)
            page.locator(state.format("notRunning")).wait_for(timeout=900_000)
            script = time.perf_counter() - t0
            page.wait_for_function(
                "() => document.querySelectorAll('.js-plotly-plot .gl-container canvas').length >= 15",
                timeout=300_000)
            page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
            drawn = time.perf_counter() - t0
            attacks = sum(float(m.group(1)) for m in re.finditer(
                r"in ([\d.]+) s$", "\n".join(page.locator("[data-testid=stExpander] summary").all_inner_texts()),
                re.M))
            print(f"{image:<10} {estimate:>12.0f} {drawn:>23.1f} {script:>23.1f} {attacks:>11.1f}  {per_attack}")
            page.close()
        browser.close()
    return 0


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--compare"]:
        raise SystemExit(compare(args[1:] or ["scene_009", "scene_000", "scene_021"]))
    raise SystemExit(main(args or ["scene_009", "scene_000", "scene_001", "scene_002"]))
