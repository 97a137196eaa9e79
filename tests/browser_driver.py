"""Drive every page of the app in a real headless Chromium as a newcomer would, and look at what
the page shows: the main action of each page, screenshots, labels drawn over each other, and the
server's log.

Used by tests/test_browser.py and, on its own, by .ci/run's newcomer step, which serves the app
from the runtime-only install and drives it from a separate small venv holding only playwright:

    python tests/browser_driver.py http://127.0.0.1:8501 [--shots DIR] [--server-log FILE]

The tour, in one browser session (so the sidebar's choices carry from page to page):

1. Models, opened by its own address first (on a new server this is its first run, the one
   Streamlit's legacy scan of a pages/ folder would take over): the navigation lists exactly the
   four pages, the sidebar is drawn, the models table shows every "what to do" line in full.
2. Explore: a gallery image, MLA-LP, Run: the result, three distortion surfaces, the confidence
   bars, the trace; then "Make the file" in "Export for a paper": the section stays open and its
   download is a PDF. Then ML-CW at the paper's settings, Run, Stop after a binary step: the best
   iterate so far is shown, marked "stopped early".
3. Compare (through the sidebar's navigation): the quick preset on the same image: the Fig. 1
   grid with one colour bar and each attack's name beside its own row; the estimate shown before
   the click next to the time from the click until the page is idle and drawn.
4. Benchmark: a small batch run (two examples, five attacks, quick settings) into a store of its
   own, Table III (one row per run), its CSV/LaTeX/Markdown downloads, the budget curves' PDF,
   and "Open in Explore" on a stored example.

On every page: no exception box, no error box, and no two labels of a 2-D figure drawn over each
other (the bounding boxes of the SVG text plotly draws); 3-D tick labels at a readable size.
With --server-log: no traceback, error or warning in the server's log. Exit status 0 when no
problem was found, 1 otherwise (the findings are printed either way).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--enable-unsafe-swiftshader"]
#: A gallery scene MLA-LP (hide-one, seed 0) turns in two iterations on demo-gcn: the run stays short.
IMAGE = "scene_009"
PAGES = ["Explore", "Compare", "Benchmark", "Models"]
#: Lines of a server log that mean something went wrong.
BAD_LOG = re.compile(r"Traceback|Error|WARNING|Warning|filesystem events were lost|Inotify")
#: Smallest tick label size in a 3-D scene (px, as plotly's layout says it).
MIN_3D_TICK_PX = 12
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
RUNNING = "[data-testid='stApp'][data-test-script-state='running']"
LONG = 300_000  # ms: a step that computes (attacks, batch runs, drawing 15 WebGL surfaces)


def find_chromium() -> str | None:
    """MLALP_CHROMIUM when set (and only it), else Debian's /usr/bin/chromium, else PATH."""
    named = os.environ.get("MLALP_CHROMIUM", "").strip()
    if named:
        return named if os.access(named, os.X_OK) else None
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


def bad_log_lines(lines: list[str]) -> list[str]:
    """The server log's lines that show a traceback, an error or a warning."""
    return [line for line in lines if BAD_LOG.search(line)]


# ---------------------------------------------------------------------------------------------
# What is on the page
# ---------------------------------------------------------------------------------------------

#: The 2-D labels (SVG text) of every plotly figure that are drawn over each other or cut off.
#: Each label is the quadrilateral of its text box as drawn (rotation included); two labels
#: overlap when no axis separates them and they overlap by more than 2 px (the box holds the
#: font's line gap). A label is cut off when it leaves its figure, or a point's label its panel.
_LABELS_JS = """
() => {
  const quad = t => { const b = t.getBBox(), m = t.getScreenCTM();
    return [[b.x, b.y], [b.x + b.width, b.y], [b.x + b.width, b.y + b.height], [b.x, b.y + b.height]]
      .map(([x, y]) => [m.a * x + m.c * y + m.e, m.b * x + m.d * y + m.f]); };
  const depth = (P, Q) => { let best = Infinity;
    for (const poly of [P, Q]) for (let i = 0; i < 4; i++) {
      const [x1, y1] = poly[i], [x2, y2] = poly[(i + 1) % 4];
      let nx = y1 - y2, ny = x2 - x1; const len = Math.hypot(nx, ny); if (!len) continue; nx /= len; ny /= len;
      const a = P.map(([x, y]) => x * nx + y * ny), b = Q.map(([x, y]) => x * nx + y * ny);
      best = Math.min(best, Math.min(Math.max(...a), Math.max(...b)) - Math.max(Math.min(...a), Math.min(...b)));
    }
    return best; };
  const outside = (q, r) => q.some(([x, y]) => x < r.left - 2 || x > r.right + 2 || y < r.top - 2 || y > r.bottom + 2);
  const overlaps = [], cut = [];
  document.querySelectorAll('.js-plotly-plot').forEach((plot, n) => {
    const whole = plot.getBoundingClientRect();
    const seen = Array.from(plot.querySelectorAll('svg text')).filter(t => {
      const s = getComputedStyle(t), b = t.getBBox();
      return t.textContent.trim() && s.visibility !== 'hidden' && s.display !== 'none' && +s.opacity > 0
        && b.width > 0.5 && b.height > 0.5 && t.getScreenCTM();
    }).map(t => ({el: t, text: t.textContent.trim(), q: quad(t)}));
    for (let i = 0; i < seen.length; i++) for (let j = i + 1; j < seen.length; j++) {
      const d = depth(seen[i].q, seen[j].q);
      if (d > 2) overlaps.push({figure: n, a: seen[i].text, b: seen[j].text, overlap_px: Math.round(d)});
    }
    for (const s of seen) {
      let box = whole;
      const sub = s.el.closest('.textpoint') && s.el.closest('g.subplot');
      if (sub) {
        const drag = plot.querySelector('.draglayer .' + sub.classList[1] + ' .nsewdrag');
        if (drag) box = drag.getBoundingClientRect();
      }
      if (outside(s.q, box)) cut.push({figure: n, text: s.text});
    }
  });
  return {overlaps, cut};
}
"""

#: Tick font sizes of every 3-D scene on the page.
_SCENE_TICKS_JS = """
() => Array.from(document.querySelectorAll('.js-plotly-plot')).flatMap(p => !p._fullLayout ? [] :
  Object.keys(p._fullLayout).filter(k => /^scene\\d*$/.test(k)).flatMap(k =>
    ['xaxis', 'yaxis', 'zaxis'].map(a => p._fullLayout[k][a].tickfont.size)))
"""

#: Fig. 1: each attack name's height on the page against its own row of surfaces.
_GRID_ROWS_JS = """
() => {
  const p = Array.from(document.querySelectorAll('.js-plotly-plot')).find(
    p => p._fullData && p._fullData.filter(t => t.type === 'surface').length >= 6);
  if (!p) return null;
  const names = p._fullLayout.meta.attacks, box = p.getBoundingClientRect(), size = p._fullLayout._size;
  const scenes = Object.keys(p._fullLayout).filter(k => /^scene\\d*$/.test(k))
    .map(k => p._fullLayout[k].domain).filter(d => d.x[0] < 0.05).sort((a, b) => b.y[1] - a.y[1]);
  const texts = Array.from(p.querySelectorAll('svg text'));
  return names.map((name, i) => {
    const t = texts.find(t => t.textContent.trim() === name);
    const r = t ? t.getBoundingClientRect() : null;
    const d = scenes[i];
    return {name, y: r ? (r.top + r.bottom) / 2 - box.top : null,
            row: d ? [size.t + (1 - d.y[1]) * size.h, size.t + (1 - d.y[0]) * size.h] : null};
  });
}
"""


def settle(page, timeout: int = LONG) -> None:
    """Wait until the app's script has finished and the browser has painted the result."""
    page.wait_for_timeout(400)
    page.locator(IDLE).wait_for(timeout=timeout)
    page.wait_for_timeout(600)
    page.locator(IDLE).wait_for(timeout=timeout)
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")


def click_and_settle(page, target, timeout: int = LONG) -> float:
    """Click, wait for the script to start and to finish; the seconds from the click to idle."""
    t0 = time.perf_counter()
    target.click()
    try:
        page.locator(RUNNING).wait_for(timeout=10_000)
    except Exception:  # noqa: BLE001 - a very quick run may be over before it is seen running
        pass
    settle(page, timeout)
    return time.perf_counter() - t0


def main_area(page):
    return page.get_by_test_id("stMainBlockContainer")


def look(page, where: str) -> dict[str, Any]:
    """What any page must not show: exception boxes, error boxes, labels over labels, tiny 3-D ticks."""
    ticks = page.evaluate(_SCENE_TICKS_JS)
    labels = page.evaluate(_LABELS_JS)
    return {
        "page": where,
        "exceptions": [e.inner_text()[:300] for e in page.locator("[data-testid=stException]").all()],
        "errors": [e.inner_text()[:300] for e in page.locator("[data-testid=stAlertContentError]").all()],
        "overlapping_labels": labels["overlaps"],
        "cut_labels": labels["cut"],
        "scene_tick_px": sorted(set(ticks)),
        "webgl_errors": page.get_by_text("WebGL is not supported").count(),
    }


def pick_option(page, label: str, option: str, within=None) -> None:
    """Choose ``option`` in the selectbox labelled ``label``, typing to filter as a user does."""
    scope = within or main_area(page)
    box = scope.locator("[data-testid=stSelectbox]").filter(has=page.get_by_text(label, exact=True)).first
    box.click()
    page.keyboard.type(option)
    page.get_by_role("option", name=option, exact=True).first.click()
    settle(page)


def pick_image(page, image: str) -> None:
    box = main_area(page).locator("[data-testid=stSelectbox]").filter(has=page.get_by_text("Image", exact=True)).first
    box.click()
    page.keyboard.type(image)
    page.get_by_role("option").filter(has_text=image).first.click()
    page.locator("strong", has_text=image).first.wait_for(timeout=LONG)
    settle(page)


def open_section(page, title: str):
    """Open an expander (if shut) by its title; returns it."""
    exp = page.locator("[data-testid=stExpander]").filter(has_text=title).last
    if exp.locator("details").get_attribute("open") is None:
        exp.locator("summary").click()
        page.wait_for_timeout(300)
    return exp


def make_paper_file(page, section, shots: Path | None, name: str) -> dict[str, Any]:
    """Press "Make the file" in an "Export for a paper" section; the section must stay open and
    offer the file, which is downloaded and checked."""
    click_and_settle(page, section.get_by_role("button", name="Make the file"))
    download = section.get_by_role("button", name=re.compile(r"^Download "))
    error = section.locator("[data-testid=stAlertContentError]")
    try:  # on a loaded machine the rerun that draws the file may start after the page looked idle
        download.or_(error).first.wait_for(timeout=120_000)
    except Exception:  # noqa: BLE001 - judged below: no download is a finding
        pass
    found = {"section_open": section.locator("details").get_attribute("open") is not None,
             "download_visible": download.count() == 1 and download.first.is_visible(),
             "errors": [e.inner_text()[:300] for e in error.all()]}
    if shots is not None:
        section.screenshot(path=str(shots / f"{name}.png"))
    if found["download_visible"]:
        with page.expect_download(timeout=60_000) as info:
            download.first.click()
        data = Path(info.value.path()).read_bytes()
        found["file"] = info.value.suggested_filename
        found["file_kind"] = "pdf" if data[:5] == b"%PDF-" else "svg" if b"<svg" in data[:2000] else "other"
    return found


def download_text(page, button) -> tuple[str, str]:
    with page.expect_download(timeout=60_000) as info:
        button.click()
    return info.value.suggested_filename, Path(info.value.path()).read_text()


def navigate(page, url: str, title: str) -> None:
    """Go to a page through the sidebar's navigation, as a user does (the session is kept)."""
    if not page.url.startswith(url):  # a tour that starts here
        page.goto(url, wait_until="domcontentloaded")
        page.locator("[data-testid=stSidebarNav] a").first.wait_for(timeout=LONG)
    page.locator("[data-testid=stSidebarNav] a").filter(has_text=re.compile(f"^{title}$")).first.click()
    page.locator("h1").filter(has_text=re.compile({"Explore": "Explore", "Compare": "Compare",
                                                   "Benchmark": "Benchmark", "Models": "Models"}[title])).first.wait_for(
        timeout=LONG)
    settle(page)


def shoot(page, shots: Path | None, name: str) -> None:
    if shots is not None:
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)


def chart_with(page, predicate_js: str):
    """The plotly chart for which ``predicate_js`` (a function of its plot div) is true."""
    i = page.evaluate(f"() => Array.from(document.querySelectorAll('.js-plotly-plot')).findIndex({predicate_js})")
    return page.locator(".js-plotly-plot").nth(i) if i >= 0 else None


# ---------------------------------------------------------------------------------------------
# The tour
# ---------------------------------------------------------------------------------------------


def visit_models_first(page, url: str, shots: Path | None) -> dict[str, Any]:
    page.goto(f"{url}/models", wait_until="domcontentloaded")
    page.locator("h1").filter(has_text="Models").first.wait_for(timeout=LONG)
    settle(page)
    table = main_area(page).locator("[data-testid=stTable]").first
    cells = table.locator("td").all() if table.count() else []
    found = look(page, "Models")
    found.update({
        "navigation": [a.inner_text().strip() for a in page.locator("[data-testid=stSidebarNav] a").all()],
        "sidebar_drawn": page.locator("[data-testid=stSidebar]").get_by_text("Setup", exact=True).count() == 1,
        "table_rows": table.locator("tbody tr").count() if table.count() else 0,
        "models": [r.locator("th, td").first.inner_text().strip() for r in table.locator("tbody tr").all()]
        if table.count() else [],
        # a cell whose text is wider than the cell is cut off
        "cut_cells": [c.inner_text()[:80] for c in cells if c.evaluate("e => e.scrollWidth > e.clientWidth + 1")],
        # a cell read as Markdown: "-" drawn as a bullet, "_" as emphasis
        "markdown_in_cells": table.locator("td :is(ul, ol, li, em, strong)").count() if table.count() else 0,
        "empty_cells": sum(not c.inner_text().strip() for c in cells if c.evaluate("e => e.cellIndex < 6")),
        "warnings": [w.inner_text() for w in main_area(page).locator("[data-testid=stAlertContentWarning]").all()],
    })
    shoot(page, shots, "models")
    return found


def explore_run_and_export(page, url: str, shots: Path | None, image: str) -> dict[str, Any]:
    page.goto(f"{url}/?image={image}", wait_until="domcontentloaded")
    run = main_area(page).get_by_role("button", name="Run", exact=True)
    run.wait_for(timeout=LONG)
    settle(page)
    seconds = click_and_settle(page, run)
    page.wait_for_function(
        "() => document.querySelectorAll('.js-plotly-plot .gl-container canvas').length >= 3", timeout=LONG)
    page.wait_for_timeout(1500)  # let the WebGL scenes paint before the screenshots
    found = look(page, "Explore")
    found.update({
        "image": image,
        "click_to_idle_s": round(seconds, 2),
        "success": page.get_by_text("reached the target").count() > 0,
        "surfaces": page.evaluate(
            "() => Array.from(document.querySelectorAll('.js-plotly-plot')).filter("
            "p => p._fullData && p._fullData.some(t => t.type === 'surface'))"
            ".map(p => p._fullData.filter(t => t.type === 'surface').length)"),
        "bar_points": page.evaluate("() => document.querySelectorAll('.js-plotly-plot .barlayer .point').length"),
    })
    if shots is not None:
        shoot(page, shots, "explore_mlalp")
        for name, pred in (("explore_surfaces", "p => p._fullData && p._fullData.some(t => t.type === 'surface')"),
                           ("explore_bars", "p => p._fullData && p._fullData.some(t => t.name === 'after')"),
                           ("explore_trace", "p => p._fullLayout && p._fullLayout.meta && 'fields' in p._fullLayout.meta")):
            chart = chart_with(page, pred)
            if chart is not None:
                chart.screenshot(path=str(shots / f"{name}.png"))
    section = open_section(page, "Export for a paper")
    found["export"] = make_paper_file(page, section, shots, "explore_export")
    return found


def explore_stop(page, shots: Path | None) -> dict[str, Any]:
    """ML-CW at the paper's settings (1000 iterations x 10 binary steps), stopped during step 2."""
    pick_option(page, "Attack", "ML-CW")
    run = main_area(page).get_by_role("button", name="Run", exact=True)
    run.click()
    progress = page.get_by_text(re.compile(r"ML-CW: binary step [2-9]/10", re.I)).first
    progress.wait_for(timeout=LONG)
    seen = progress.inner_text()
    main_area(page).get_by_role("button", name="Stop", exact=True).click()
    settle(page)
    page.wait_for_timeout(1000)
    found = look(page, "Explore (stopped)")
    metrics = {m.locator("[data-testid=stMetricLabel]").inner_text().strip():
               m.locator("[data-testid=stMetricValue]").inner_text().strip()
               for m in main_area(page).locator("[data-testid=stMetric]").all()}
    found.update({
        "progress_when_stopped": seen,
        "stopped_early_note": page.get_by_text(re.compile("^Stopped early")).count(),
        "lost_run_warning": page.get_by_text("stopped before it finished").count(),
        "result_header": main_area(page).locator("h2").filter(has_text="Result").count(),
        "metrics": metrics,
    })
    shoot(page, shots, "explore_stopped")
    return found


def compare_quick(page, url: str, shots: Path | None, image: str) -> dict[str, Any]:
    navigate(page, url, "Compare")
    pick_image(page, image)
    estimate = page.get_by_text("Estimated at most").first
    estimate.wait_for(timeout=LONG)
    est_text = estimate.inner_text()
    run = main_area(page).get_by_role("button", name=re.compile(r"^Run (all five|\d+ attack)"))
    t0 = time.perf_counter()
    run.click()
    page.wait_for_function(
        "() => Array.from(document.querySelectorAll('.js-plotly-plot')).some("
        "p => p._fullData && p._fullData.filter(t => t.type === 'surface').length === 15)", timeout=LONG)
    settle(page)
    page.wait_for_function(
        "() => document.querySelectorAll('.js-plotly-plot .gl-container canvas').length >= 15", timeout=LONG)
    seconds = time.perf_counter() - t0
    page.wait_for_timeout(1500)
    together = re.search(r"together ([\d.]+) (s|min)", est_text)
    found = look(page, "Compare")
    found.update({
        "estimate": est_text,
        "estimated_s": None if not together else float(together.group(1)) * (60 if together.group(2) == "min" else 1),
        "click_to_idle_s": round(seconds, 1),
        "grid_rows": page.evaluate(_GRID_ROWS_JS),
        "grid_axes": page.evaluate(
            "() => { const p = Array.from(document.querySelectorAll('.js-plotly-plot')).find("
            "p => p._fullData && p._fullData.filter(t => t.type === 'surface').length === 15);"
            " const axes = Object.keys(p._fullLayout).filter(k => /^coloraxis\\d*$/.test(k));"
            " return {surfaces: p._fullData.filter(t => t.type === 'surface').map(t => t.coloraxis),"
            " axes: axes.map(k => [k, p._fullLayout[k].cmin, p._fullLayout[k].cmax])}; }"),
        "colour_bars": page.evaluate(
            "() => { const p = Array.from(document.querySelectorAll('.js-plotly-plot')).find("
            "p => p._fullData && p._fullData.filter(t => t.type === 'surface').length === 15);"
            " return p ? p.querySelectorAll('.colorbar').length : -1; }"),
        "attack_seconds": [float(m.group(1)) for m in re.finditer(
            r"in ([\d.]+) s", " ".join(page.locator("[data-testid=stExpander] summary").all_inner_texts()))],
    })
    if shots is not None:
        shoot(page, shots, "compare")
        grid = chart_with(page, "p => p._fullData && p._fullData.filter(t => t.type === 'surface').length === 15")
        if grid is not None:
            grid.screenshot(path=str(shots / "compare_grid.png"))
    return found


def benchmark_small_run(page, url: str, shots: Path | None, store: Path) -> dict[str, Any]:
    navigate(page, url, "Benchmark")
    box = main_area(page).get_by_role("textbox", name="Results store (SQLite)")
    box.fill(str(store))
    box.press("Enter")
    settle(page)
    launch = open_section(page, "Launch a batch run")
    n = launch.get_by_role("spinbutton", name="Examples per model (N)")
    n.fill("2")
    n.press("Enter")
    settle(page)
    launch.get_by_text("quick (CW family: 100 x 3)").click()
    settle(page)
    seconds = click_and_settle(page, launch.get_by_role("button", name="Launch"))
    page.get_by_text("Table III: attacks").wait_for(timeout=LONG)
    settle(page)
    found = look(page, "Benchmark")
    found["click_to_idle_s"] = round(seconds, 1)
    found["batch_status"] = [s for s in page.locator("[data-testid=stExpander] summary").all_inner_texts()
                             if "Batch run" in s]
    downloads = {}
    for label in ("Table III as CSV", "Table III as LaTeX", "Table III as Markdown"):
        name, text = download_text(page, main_area(page).get_by_role("button", name=label))
        downloads[name] = text
    csv_lines = [line for line in downloads.get("table3.csv", "").splitlines() if line.strip()]
    found["table3_csv_rows"] = len(csv_lines) - 1
    found["table3_latex_ok"] = "\\begin{tabular}" in downloads.get("table3.tex", "")
    found["table3_markdown_rows"] = sum(1 for line in downloads.get("table3.md", "").splitlines()
                                        if line.startswith("|")) - 2
    section = page.locator("[data-testid=stExpander]").filter(has_text="Export for a paper").first
    if section.locator("details").get_attribute("open") is None:
        section.locator("summary").click()
    found["curves_export"] = make_paper_file(page, section, shots, "benchmark_export")
    shoot(page, shots, "benchmark")
    click_and_settle(page, main_area(page).get_by_role("button", name="Open in Explore"))
    page.get_by_text("Showing a stored result").first.wait_for(timeout=LONG)
    settle(page)
    stored = look(page, "Explore (stored result)")
    found["opened_in_explore"] = page.get_by_text("not re-run").count() > 0
    found["stored_view_problems"] = {k: v for k, v in stored.items() if k in ("exceptions", "errors") and v}
    shoot(page, shots, "explore_stored")
    return found


def tour(url: str, chromium: str, shots: Path | None = None, image: str = IMAGE,
         steps: tuple[str, ...] = ("models", "explore", "stop", "compare", "benchmark")) -> dict[str, Any]:
    """Every page and its main action, in one browser session; what each step found."""
    from playwright.sync_api import sync_playwright

    if shots is not None:
        shots.mkdir(parents=True, exist_ok=True)
    found: dict[str, Any] = {}
    with sync_playwright() as pw, tempfile.TemporaryDirectory() as tmp:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            # tall enough that whole pages are in view: every WebGL scene paints and one screenshot holds it
            page = browser.new_page(viewport={"width": 1400, "height": 5200}, accept_downloads=True)
            page.set_default_timeout(60_000)
            plan = [("models", lambda: visit_models_first(page, url, shots)),
                    ("explore", lambda: explore_run_and_export(page, url, shots, image)),
                    ("stop", lambda: explore_stop(page, shots)),
                    ("compare", lambda: compare_quick(page, url, shots, image)),
                    ("benchmark", lambda: benchmark_small_run(page, url, shots, Path(tmp) / "bench.sqlite"))]
            for name, step in plan:
                if name not in steps:
                    continue
                t0 = time.perf_counter()
                try:
                    found[name] = step()
                except Exception as exc:  # noqa: BLE001 - a failed step is a finding; the tour goes on
                    found[name] = {"failed": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
                    shoot(page, shots, f"{name}_failed")
                found[name]["step_s"] = round(time.perf_counter() - t0, 1)
        finally:
            browser.close()
    return found


# ---------------------------------------------------------------------------------------------
# Judging
# ---------------------------------------------------------------------------------------------


def _page_problems(step: str, f: dict[str, Any]) -> list[str]:
    out = []
    if f.get("exceptions"):
        out.append(f"{step}: exception box(es): {f['exceptions']}")
    if f.get("errors"):
        out.append(f"{step}: error box(es): {f['errors']}")
    if f.get("overlapping_labels"):
        out.append(f"{step}: labels drawn over each other: {f['overlapping_labels'][:6]}")
    if f.get("cut_labels"):
        out.append(f"{step}: labels cut off at the edge of their figure or panel: {f['cut_labels'][:6]}")
    small = [s for s in f.get("scene_tick_px", []) if s < MIN_3D_TICK_PX]
    if small:
        out.append(f"{step}: 3-D tick labels of {small} px (at least {MIN_3D_TICK_PX})")
    if f.get("webgl_errors"):
        out.append(f"{step}: plotly reported that WebGL is not available in the browser")
    return out


def problems(found: dict[str, Any]) -> list[str]:
    """What is wrong with what the tour saw ([] when every page showed what it should)."""
    out = []
    for step, f in found.items():
        if "failed" in f:
            out.append(f"{step}: the step failed: {f['failed']}")
            continue
        out += _page_problems(step, f)
        if step == "models":
            if f["navigation"] != PAGES:
                out.append(f"models: the navigation lists {f['navigation']}, not {PAGES}")
            if not f["sidebar_drawn"]:
                out.append("models: opened by its address, the page has no sidebar")
            if f["table_rows"] < 3:
                out.append(f"models: the models table has {f['table_rows']} rows")
            if f["markdown_in_cells"] or f["empty_cells"]:
                out.append(f"models: the models table shows {f['markdown_in_cells']} cell(s) as Markdown "
                           f"and {f['empty_cells']} empty cell(s)")
            if f["cut_cells"]:
                out.append(f"models: cut-off cells in the models table: {f['cut_cells']}")
            twice = [w for w in f["warnings"] if any(w.count(m) > 1 for m in f["models"])]
            if twice:
                out.append(f"models: warnings name the model twice: {twice}")
        elif step == "explore":
            if not f["success"]:
                out.append("explore: MLA-LP did not reach the target on the page")
            if not f["surfaces"] or f["surfaces"][0] != 3:
                out.append(f"explore: expected one figure with three surfaces, found {f['surfaces']}")
            if f["bar_points"] < 20:
                out.append(f"explore: expected before/after bars for 10 labels, found {f['bar_points']} bar points")
            ex = f["export"]
            if not (ex["section_open"] and ex["download_visible"]):
                out.append(f"explore: after 'Make the file' the export section is shut or has no download: {ex}")
            elif ex.get("file_kind") != "pdf":
                out.append(f"explore: the paper export is not a PDF: {ex}")
        elif step == "stop":
            if f["lost_run_warning"] or not f["stopped_early_note"] or not f["result_header"]:
                out.append(f"stop: Stop did not keep and show the best iterate (stopped-early note "
                           f"{f['stopped_early_note']}, result {f['result_header']}, lost-run warning "
                           f"{f['lost_run_warning']})")
            if not f["metrics"].get("l_inf"):
                out.append(f"stop: no metrics of the stopped result: {f['metrics']}")
        elif step == "compare":
            rows = f["grid_rows"] or []
            if len(rows) != 5:
                out.append(f"compare: expected five attack rows in Fig. 1, found {rows}")
            ys = [r["y"] for r in rows]
            if None in ys or len({round(y) for y in ys if y is not None}) != len(ys):
                out.append(f"compare: Fig. 1's row labels are not at distinct heights: {rows}")
            for r in rows:
                if r["y"] is not None and r["row"] and not r["row"][0] <= r["y"] <= r["row"][1]:
                    out.append(f"compare: {r['name']} is labelled at {r['y']:.0f} px, outside its row {r['row']}")
            if f["colour_bars"] != 1:
                out.append(f"compare: expected one colour bar on Fig. 1, found {f['colour_bars']}")
        elif step == "benchmark":
            if f["table3_csv_rows"] != 5:
                out.append(f"benchmark: Table III's CSV has {f['table3_csv_rows']} rows, expected one per attack (5)")
            if not f["table3_latex_ok"] or f["table3_markdown_rows"] != 5:
                out.append("benchmark: the LaTeX or Markdown table is not what Table III shows")
            ex = f["curves_export"]
            if not (ex["section_open"] and ex["download_visible"] and ex.get("file_kind") == "pdf"):
                out.append(f"benchmark: the budget curves' paper export failed: {ex}")
            if not f["opened_in_explore"] or f["stored_view_problems"]:
                out.append(f"benchmark: 'Open in Explore' did not show the stored result: {f['stored_view_problems']}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("url")
    ap.add_argument("--shots", type=Path, default=None, help="keep screenshots here")
    ap.add_argument("--server-log", type=Path, default=None, help="the server's log, checked after the tour")
    ap.add_argument("--steps", default="models,explore,stop,compare,benchmark", help="comma-separated")
    args = ap.parse_args(argv)
    chromium = find_chromium()
    if chromium is None:
        print("no Chromium found (apt-get install chromium)", file=sys.stderr)
        return 1
    found = tour(args.url.rstrip("/"), chromium, args.shots, steps=tuple(args.steps.split(",")))
    print(json.dumps(found, indent=1))
    bad = problems(found)
    if args.server_log is not None:
        time.sleep(1.0)  # let the server write what the last step logged
        bad += [f"server log: {line}" for line in bad_log_lines(args.server_log.read_text(errors="replace").splitlines())]
    for line in bad:
        print("PROBLEM:", line, file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
