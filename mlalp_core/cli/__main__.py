"""``python -m mlalp_core.cli ...`` (used by torchrun for sharded batch runs)."""

import sys

from .main import main

sys.exit(main())
