"""Print one of the README's two opening commands (``app`` or ``tests``), as CI must run them
verbatim: the first and second ```bash blocks of README.md, one line each; or (``tour``) the
third block, the command-line tour, whole."""

import re
import sys
from pathlib import Path

blocks = re.findall(r"```bash\n(.*?)\n```", (Path(__file__).resolve().parents[1] / "README.md").read_text(), re.S)
which = {"app": 0, "tests": 1, "tour": 2}[sys.argv[1]]
command = blocks[which].strip()
if sys.argv[1] == "tour":
    print(command)
    sys.exit(0)
if "\n" in command:
    sys.exit(f"README's {sys.argv[1]} command must be one line, got:\n{command}")
print(command)
