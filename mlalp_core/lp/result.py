"""The result of one l_inf LP solve, with the certificate that proves its quality."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["optimal", "infeasible", "failed"]


@dataclass
class LPResult:
    """min ||r||_inf s.t. A r <= b (and lo <= r <= hi).

    ``r`` has the type and device of the ``A`` that was passed in (numpy or torch). ``dual`` is a
    point lam >= 0 (l,) of the Lagrangian dual; ``lower_bound`` is the bound it proves on the
    optimum, recomputed in float64 from the original data, so ``gap = (z - lower_bound) / z`` is
    a certified relative optimality gap. The bound is never capped at ``z``: it can exceed it by
    rounding or where ``r`` violates its rows (``max_violation``), and a larger excess raises
    :class:`~mlalp_core.lp.problem.CertificateError`. For ``infeasible``, ``dual`` is the Farkas
    certificate.
    """

    r: Any
    z: float
    status: Status
    message: str
    dual: Any = None
    lower_bound: float = float("nan")
    max_violation: float = float("nan")  # max_j (A r - b)_j, >= 0 part, in the units of b
    backend: str = ""
    iterations: int = 0
    passes: int = 0  # passes over A (matrix-vector products with the full matrix)
    time_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def gap(self) -> float:
        """Certified relative gap (z - lower_bound) / max(z, tiny); 0 for z = 0 with bound 0."""
        if self.status != "optimal":
            return float("nan")
        if self.z <= 0.0:
            return 0.0 if self.lower_bound <= 0.0 else float("nan")
        return max(0.0, (self.z - self.lower_bound) / self.z)

    @property
    def ok(self) -> bool:
        return self.status == "optimal"

    def summary(self) -> str:
        if self.status != "optimal":
            return f"{self.backend}: {self.status}: {self.message}"
        return (f"{self.backend}: z={self.z:.6g} gap={self.gap:.1e} viol={self.max_violation:.1e} "
                f"iters={self.iterations} passes={self.passes} {self.time_s * 1e3:.0f} ms")
