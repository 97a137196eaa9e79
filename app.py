"""mlalp's app: ``streamlit run app.py``.

Navigation over four pages (Explore one attack, Compare all five, Benchmark, Models) and a
sidebar of global choices (data source, model, device, threshold) that every page reads. The
pages live in pages/ (their shared parts in pages/common/); this file alone decides what a page
is: st.navigation turns Streamlit's legacy scan of a pages/ folder off, and
pages.common.folder_scan keeps it off on a new server's first run too.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

import mlalp_core  # noqa: F401  (first: it sets the OpenMP wait policy before torch loads)

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # the pages import their shared pieces from pages.common
    sys.path.insert(0, str(ROOT))

from pages.common import sidebar  # noqa: E402
from pages.common.folder_scan import keep_folder_scan_off  # noqa: E402

keep_folder_scan_off(rerun=False)  # before st.navigation: see pages/common/folder_scan.py
st.set_page_config(page_title="mlalp: multi-label adversarial examples", layout="wide")

PAGES = [
    st.Page(ROOT / "pages" / "explore.py", title="Explore", default=True),
    st.Page(ROOT / "pages" / "compare.py", title="Compare"),
    st.Page(ROOT / "pages" / "benchmark.py", title="Benchmark"),
    st.Page(ROOT / "pages" / "models.py", title="Models"),
]

page = st.navigation(PAGES)
sidebar.sidebar()
page.run()
