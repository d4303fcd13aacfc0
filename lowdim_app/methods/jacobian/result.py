"""What a Jacobian SVD search returns."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ...metrics import numerical_rank
from .operator import PassCounter


@dataclass
class JacobianSVD:
    """Top-k singular triplets of ``J`` at a point.

    ``singular_values``: ``(k,)`` descending; ``U``, ``V``: ``(k, *shape)`` unit left / right singular vectors
    (``J v_i ~ s_i u_i``); ``spectrum``: all ``n`` singular values on the exact path, else ``None``.
    ``pairs``: which relation holds by construction -- ``"ritz"`` (``J v_i = s_i u_i``) or ``"one-sided"``
    (``J^T u_i = s_i v_i``); ``residuals``: the other relation's residual norms.
    ``error_estimate``: estimated sine of the largest principal angle between ``span(V)`` and the true top-k
    right singular subspace. ``jvp_error``: the JVP/VJP disagreement the search measured (relative to
    ``s_1``; a central difference is not exactly linear). ``passes``: network evaluations (a
    central-difference JVP direction counts two); ``batched_calls``: sequential operator calls.
    """

    singular_values: torch.Tensor
    U: torch.Tensor
    V: torch.Tensor
    method: str
    jvp_directions: int = 0
    vjp_directions: int = 0
    jvp_calls: int = 0
    vjp_calls: int = 0
    jvp_evaluations: int = 0
    iterations: int = 0
    converged: bool = True
    wall_time_s: float = 0.0
    residuals: torch.Tensor | None = None
    error_estimate: float = 0.0
    spectrum: torch.Tensor | None = None
    history: list[dict] = field(default_factory=list)
    max_passes: int | None = None
    tol: float | None = None
    stop_reason: str = "exact"             # exact | converged | budget | exhausted
    fro2_estimate: float | None = None     # ||J||_F^2 from the first (random orthonormal) block, if cold-started
    fro2_probes: int = 0
    basis: torch.Tensor | None = None      # Krylov: the final orthonormal search basis V (n x m, float64)
    basis_energy: float | None = None      # Krylov: ||J V||_F^2 of that basis (exact, no extra passes)
    jvp_mode: str = ""
    jvp_error: float | None = None
    memory: dict | None = None             # the memory plan the search ran under (MemoryPlan.describe())
    choice: str = ""                       # why this solver ran (the search plan's reason)
    block: int | None = None
    pairs: str = "ritz"

    def count(self, used: PassCounter) -> "JacobianSVD":
        self.jvp_directions, self.vjp_directions = used.jvp_directions, used.vjp_directions
        self.jvp_calls, self.vjp_calls, self.jvp_evaluations = used.jvp_calls, used.vjp_calls, used.jvp_evaluations
        return self

    @property
    def stopped_at_budget(self) -> bool:
        return self.stop_reason == "budget"

    @property
    def status(self) -> str:
        """One line: how the search ended."""
        if self.stop_reason == "exact":
            return f"exact (full Jacobian, {self.passes} network evaluations)"
        if self.stop_reason == "converged":
            return (f"converged (estimated error {self.error_estimate:.3g} <= tol {self.tol:g}, "
                    f"{self.passes} network evaluations)")
        err = "unknown (no spectral gap yet)" if not math.isfinite(self.error_estimate) else f"{self.error_estimate:.3g}"
        if self.stop_reason == "exhausted":
            return f"stopped: the Krylov space is exhausted ({self.passes} network evaluations), estimated error {err}"
        return (f"stopped at the pass budget ({self.passes} of {self.max_passes} network evaluations), estimated "
                f"error {err} (tol {self.tol:g})")

    @property
    def k(self) -> int:
        return int(self.singular_values.numel())

    @property
    def passes(self) -> int:
        """Network evaluations: JVP evaluations (two per central-difference direction) + VJP directions."""
        return self.jvp_evaluations + self.vjp_directions

    @property
    def directions(self) -> int:
        """JVP + VJP directions (a central-difference JVP direction counts once here)."""
        return self.jvp_directions + self.vjp_directions

    @property
    def batched_calls(self) -> int:
        return self.jvp_calls + self.vjp_calls

    def numerical_rank(self, eta: float = 0.99) -> int | None:
        """Wang et al. 2024, eq. 46 on the full spectrum (exact path); ``None`` when only the top-k is known."""
        return None if self.spectrum is None else numerical_rank(self.spectrum, eta)

    def summary(self) -> dict:
        return {"method": self.method, "k": self.k, "passes": self.passes, "jvp": self.jvp_directions,
                "jvp_evaluations": self.jvp_evaluations, "vjp": self.vjp_directions,
                "batched_calls": self.batched_calls, "block": self.block, "iterations": self.iterations,
                "converged": self.converged, "wall_time_s": round(self.wall_time_s, 4),
                "error_estimate": self.error_estimate if math.isfinite(self.error_estimate) else None,
                "jvp_error": self.jvp_error, "max_passes": self.max_passes, "tol": self.tol,
                "stop_reason": self.stop_reason, "stopped_at_budget": self.stopped_at_budget, "status": self.status,
                "jvp_mode": self.jvp_mode, "solver": self.method, "solver_choice": self.choice,
                "singular_values": [float(s) for s in self.singular_values]}
