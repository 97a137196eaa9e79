"""What the structured solver and the full-LP backends return (in the scaled problem's units),
and the count of passes over A that every solver phase adds to."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Solution:
    rho: torch.Tensor | None
    z: float
    lam: torch.Tensor  # (m,) scaled dual
    status: str  # optimal | infeasible | failed
    message: str
    iterations: int
    passes: int
    info: dict


#: A certified scaled lower bound above this means "infeasible" for practical purposes (rows of A
#: that cancel exactly, with b asking for the impossible).
_Z_INFEASIBLE = 1e12


class _Counter:
    def __init__(self) -> None:
        self.passes = 0
