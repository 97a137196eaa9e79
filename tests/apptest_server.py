"""AppTest as the app runs on a server: Streamlit's legacy pages/ folder scan off.

A server decides once, on its first run, whether to scan a pages/ folder (pages.common.folder_scan
turns it off then, and it stays off for the server's life). AppTest instead resets that decision
before every run, so with the app's pages/ folder every AppTest run would take the legacy path,
and the page's rerun out of it would drop the button click being tested. This keeps it off, as
on a server after its first run; tests/test_app.py checks the first run itself without it.
"""

from __future__ import annotations

import pytest


def as_on_a_running_server(monkeypatch: pytest.MonkeyPatch) -> None:
    import streamlit.testing.v1.app_test as app_test
    from streamlit.runtime.pages_manager import PagesManager

    class AfterFirstRun(PagesManager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            PagesManager.uses_pages_directory = False

    monkeypatch.setattr(app_test, "PagesManager", AfterFirstRun)
