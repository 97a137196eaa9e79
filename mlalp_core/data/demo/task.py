"""What the demo task is: its labels, scene size, splits, how many digits of which sizes, the
companion groups that make labels co-occur, and the version of the generating process."""

from __future__ import annotations

from ...errors import InvalidInputError

DEMO_LABELS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: Scene side in pixels.
SCENE_SIZE = 96
SPLITS = ("train", "test")
#: Classes that tend to appear together (indices into DEMO_LABELS).
COMPANION_GROUPS: tuple[tuple[int, ...], ...] = ((1, 7), (3, 8), (0, 6, 9))
#: Probability that a drawn class brings its companions.
COMPANION_PROB = 0.8
#: P(k = 2, 3, 4 digits).
OBJECT_COUNT_PROBS = (0.35, 0.40, 0.25)
DIGIT_SIZES = (20, 34)  # inclusive range of the digit box side, px
MAX_OVERLAP = 0.08  # box intersection / smaller box area
HALO = 2  # px of dark halo around each digit
#: Version of the generating process: bump it when scenes change, and regenerate the gallery.
GENERATOR_VERSION = 1


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise InvalidInputError(f"split must be one of {SPLITS}, got {split!r}")
