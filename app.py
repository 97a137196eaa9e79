"""mlalp's app: ``streamlit run app.py``.

Navigation over four pages (Explore one attack, Compare all five, Benchmark, Models) and a
sidebar of global choices (data source, model, device, threshold) that every page reads. The
pages live in app_pages/, a folder Streamlit does not scan on its own: this file alone decides
what a page is.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

import mlalp_core  # noqa: F401  (first: it sets the OpenMP wait policy before torch loads)

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # the pages import their shared pieces from app_pages.common
    sys.path.insert(0, str(ROOT))

from app_pages.common import sidebar  # noqa: E402

st.set_page_config(page_title="mlalp: multi-label adversarial examples", layout="wide")

PAGES = [
    st.Page(ROOT / "app_pages" / "explore.py", title="Explore", default=True),
    st.Page(ROOT / "app_pages" / "compare.py", title="Compare"),
    st.Page(ROOT / "app_pages" / "benchmark.py", title="Benchmark"),
    st.Page(ROOT / "app_pages" / "models.py", title="Models"),
]

page = st.navigation(PAGES)
sidebar.sidebar()
page.run()
