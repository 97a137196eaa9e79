"""mlalp's app: ``streamlit run app.py``.

Navigation over four pages (Explore one attack, Compare all five, Benchmark, Models) and a
sidebar of global choices (data source, model, device, threshold) that every page reads.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:  # the pages import their shared helpers from pages/_ui.py
    sys.path.insert(0, str(ROOT))

from pages import _ui  # noqa: E402  (first: it sets up the OpenMP runtime before torch loads)

st.set_page_config(page_title="mlalp: multi-label adversarial examples", layout="wide")

PAGES = [
    st.Page(ROOT / "pages" / "explore.py", title="Explore", default=True),
    st.Page(ROOT / "pages" / "compare.py", title="Compare"),
    st.Page(ROOT / "pages" / "benchmark.py", title="Benchmark"),
    st.Page(ROOT / "pages" / "models.py", title="Models"),
]

page = st.navigation(PAGES)
_ui.sidebar()
st.session_state["_in_app"] = True  # pages check it: see _ui.require_app
try:
    page.run()
finally:
    st.session_state["_in_app"] = False
