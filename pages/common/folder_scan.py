"""Keeping Streamlit's legacy ``pages/`` folder scan off.

app.py lists the pages with ``st.navigation``, which turns the scan off. But Streamlit decides
whether to scan before any script runs: when a folder named ``pages/`` sits beside the main
script, a new server's first run goes through the legacy mode (streamlit 1.67:
``PagesManager.uses_pages_directory`` is set from the folder's existence and read by the script
runner before app.py executes). A first visit to ``/compare`` then runs pages/compare.py without
app.py, and the navigation lists the folder's files (app, benchmark, compare, explore, models) for
the rest of the server's life. So app.py turns the scan off first thing (its own st.navigation
then replaces the legacy one), and a page that finds the scan still on was run without app.py:
it turns the scan off and starts the run again, under app.py's navigation.
"""

from __future__ import annotations

import streamlit as st


def keep_folder_scan_off(*, rerun: bool) -> None:
    """Turn Streamlit's folder scan off if this run came through it; with ``rerun``, start the
    run again (a page run without app.py). Once per server: the flag is process-wide."""
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a Streamlit without the legacy mode has nothing to turn off
        return
    if getattr(PagesManager, "uses_pages_directory", None):
        PagesManager.uses_pages_directory = False
        if rerun:
            st.rerun()
