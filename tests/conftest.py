"""Test-wide set-up: torch's OpenMP threads sleep instead of spinning while they wait (set
before any test module imports torch; see mlalp_core/__init__.py for why)."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
