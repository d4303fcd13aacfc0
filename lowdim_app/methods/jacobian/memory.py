"""How many directions one batched JVP/VJP call may take within a memory budget.

Per-direction bytes are a linear law in a model's activation profile
(:meth:`~lowdim_app.diffusion.model.DiffusionModel.activation_profile`: ``A`` = bytes of all leaf-module
outputs of one float32 forward at batch 1, ``Q`` = bytes of all attention maps): ``a * A + q * Q`` per kind.
The coefficients are the upper envelope of the fit in ``bench/jacobian_memory.py``
(``bench/results/jacobian_memory.csv``: measured / predicted <= 1.00 at every measured architecture), so
``MEMORY_SAFETY`` stays 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ...errors import UserError

GIB = 2 ** 30
MEMORY_COEFFICIENTS = {
    "jvp_forward": (0.4833, 0.3190),
    "jvp_central": (0.3213, 0.0),
    "vjp": (1.2032, 0.0),
    "vjp_math": (1.2433, 0.2191),
}
MEMORY_SAFETY = 1.0
CPU_BUDGET_FRACTION = 0.5    # of the available RAM (MemAvailable) when no budget is given
CUDA_BUDGET_FRACTION = 0.8   # of the free CUDA memory when no budget is given
WORKSPACE_BYTES = 256e6      # float64 Krylov bases (V, W, U, Z) may hold this much before a thick restart


@dataclass(frozen=True)
class MemoryPlan:
    """Directions per batched call: ``floor((budget_bytes - fixed_bytes) / per_direction[kind])``.

    A budget that cannot hold one direction is a :class:`UserError` before any work, never an
    out-of-memory crash later."""

    budget_bytes: float
    per_direction: dict = field(default_factory=dict)
    fixed_bytes: float = 0.0
    source: str = ""

    def directions(self, kind: str) -> int:
        per = float(self.per_direction.get(kind, 0.0))
        if per <= 0:
            return 1 << 30
        free = self.budget_bytes - self.fixed_bytes
        d = int(math.floor(free / per))
        if d < 1:
            raise UserError(f"one {kind.upper()} direction needs about {per / GIB:.2f} GB but the memory budget leaves "
                            f"{max(free, 0) / GIB:.2f} GB; raise the memory budget (--memory-gb) or use a smaller model")
        return d

    def describe(self) -> dict:
        return {"budget_gb": round(self.budget_bytes / GIB, 3), "fixed_gb": round(self.fixed_bytes / GIB, 3),
                "per_direction_gb": {k: round(v / GIB, 4) for k, v in self.per_direction.items()},
                "directions_per_call": {k: self.directions(k) for k in self.per_direction}, "source": self.source}


def max_basis(n: int, k: int, block: int) -> int:
    """Columns the Krylov search keeps before a thick restart (each of its four float64 bases ``V``, ``W``,
    ``U``, ``Z`` is ``n x max_basis``): what ``WORKSPACE_BYTES`` holds, at least room for ``k`` and two blocks."""
    room = max(4 * block, 2 * k + 2 * block, min(300, int(WORKSPACE_BYTES / (32 * n))))
    return min(max(room, k + 2 * block), n)


def solver_workspace_bytes(n: int, k: int, block: int) -> float:
    """Bytes of the Krylov search's float64 bases (:func:`max_basis` columns each) and two blocks in flight."""
    return 8.0 * n * (4 * max_basis(n, k, block) + 2 * block)


def per_direction_bytes(profile: dict, kind: str) -> float:
    """Bytes one direction adds to a batched call of ``kind`` (``jvp_forward``, ``jvp_central``, ``vjp``,
    ``vjp_math``), from a model's activation profile."""
    a, q = MEMORY_COEFFICIENTS[kind]
    return MEMORY_SAFETY * (a * profile["activations"] + q * profile["attention"])


def default_budget(device) -> tuple[float, str]:
    """``CUDA_BUDGET_FRACTION`` of the free CUDA memory, or on the CPU ``CPU_BUDGET_FRACTION`` of the
    available RAM (``MemAvailable``; 8 GB if unreadable)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return CUDA_BUDGET_FRACTION * free, f"{CUDA_BUDGET_FRACTION:.0%} of the free CUDA memory"
    avail = 8 * GIB
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    return CPU_BUDGET_FRACTION * avail, f"{CPU_BUDGET_FRACTION:.0%} of the available RAM"


def memory_plan(profile: dict | None, device, jvp_mode: str, memory_gb: float | None, workspace_bytes: float,
                margin_gb: float = 0.25) -> MemoryPlan | None:
    """The :class:`MemoryPlan` of JVP/VJP work on a model with activation ``profile`` (``None``: no plan):
    the budget ``memory_gb`` (or :func:`default_budget` of ``device``), fixed = ``workspace_bytes`` +
    ``margin_gb``. A budget that cannot hold one direction of either kind fails here."""
    if profile is None:
        return None
    per = {"jvp": per_direction_bytes(profile, "jvp_" + jvp_mode), "vjp": per_direction_bytes(profile, "vjp")}
    if memory_gb is not None:
        if not (memory_gb > 0 and math.isfinite(memory_gb)):
            raise UserError(f"the memory budget must be a positive number of GB, got {memory_gb!r}")
        budget, source = memory_gb * GIB, f"{memory_gb:g} GB (given)"
    else:
        budget, source = default_budget(device)
    plan = MemoryPlan(budget_bytes=budget, per_direction=per, fixed_bytes=workspace_bytes + margin_gb * GIB,
                      source=source)
    for kind in per:
        plan.directions(kind)
    return plan
