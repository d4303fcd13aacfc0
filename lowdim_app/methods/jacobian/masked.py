"""Local edit directions (Chen et al. 2024, LOCO Edit, arXiv:2409.02374): the top right singular vectors of
``P_mask J`` projected off the top-``r`` right singular vectors of ``P_not_mask J`` (null-space projection),
unit-normalised."""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ...errors import UserError, check_range
from .exact import exact_jacobian
from .operator import OPERATOR_KEYS, TINY, as_operator, unflat
from .plan import SearchPlan, plan_search
from .result import JacobianSVD
from .solve import run_plan


@dataclass
class MaskedDirections:
    """``directions``: ``(k, *shape)`` unit vectors; ``inside`` / ``outside``: the SVDs of ``P_mask J`` and
    ``P_not_mask J``; ``inside_fraction``: ``||P_mask J d||^2 / ||J d||^2`` per direction (``None`` if not
    measured); ``inside_fraction_unprojected``: the same for ``inside.V``; ``passes``: network evaluations."""

    directions: torch.Tensor
    inside: JacobianSVD
    outside: JacobianSVD
    null_rank: int
    inside_fraction: torch.Tensor | None = None
    inside_fraction_unprojected: torch.Tensor | None = None
    passes: int = 0
    batched_calls: int = 0
    wall_time_s: float = 0.0
    plan: SearchPlan | None = None

    @property
    def stopped_at_budget(self) -> bool:
        return self.inside.stopped_at_budget or self.outside.stopped_at_budget

    @property
    def converged(self) -> bool:
        return self.inside.converged and self.outside.converged

    @property
    def status(self) -> str:
        if self.inside.stop_reason == "exact":
            return f"exact (full Jacobian, {self.passes} network evaluations)"
        return f"inside the mask: {self.inside.status}; outside: {self.outside.status}"


def mask_energy_fraction(J_dirs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``||mask * y||^2 / ||y||^2`` for each row ``y`` of ``J_dirs`` (``(k, *shape)``)."""
    m = torch.broadcast_to(torch.as_tensor(mask, dtype=J_dirs.dtype, device=J_dirs.device), J_dirs.shape[1:])
    inside = (J_dirs * m).pow(2).reshape(J_dirs.shape[0], -1).sum(1)
    return inside / J_dirs.pow(2).reshape(J_dirs.shape[0], -1).sum(1).clamp(min=TINY)


def _checked_mask(base, mask) -> torch.Tensor:
    m = torch.as_tensor(mask, dtype=base.dtype, device=base.device)
    try:
        m = torch.broadcast_to(m, base.shape)
    except RuntimeError as e:
        raise UserError(f"mask of shape {tuple(m.shape)} does not broadcast to {base.shape}") from e
    if not bool(((m >= 0) & (m <= 1)).all()):
        raise UserError("mask values must lie in [0, 1]")
    inside = float(m.sum())
    if inside == 0 or inside == base.n:
        raise UserError("the mask must cover part of the image, not none or all of it")
    return m


def _exact_pair(base, m, k: int, null_rank: int, progress: bool) -> tuple[JacobianSVD, JacobianSVD]:
    """Both SVDs from one exact Jacobian (``n`` VJPs)."""
    J = exact_jacobian(base, progress=progress).double()
    mf = m.reshape(-1, 1).double()
    out = []
    for P, kk in ((mf, k), (1 - mf, max(null_rank, 1))):
        Uf, s, Vh = torch.linalg.svd(P * J)
        out.append(JacobianSVD(singular_values=s[:kk].to(base.dtype).cpu(), U=unflat(Uf[:, :kk], base.shape, base.dtype),
                               V=unflat(Vh[:kk].T, base.shape, base.dtype), method="exact",
                               spectrum=s.to(base.dtype).cpu()))
    return out[0], out[1]


def masked_directions(f_or_op, x: torch.Tensor | None, mask: torch.Tensor, k: int = 5, *, null_rank: int = 5,
                      method: str = "auto", measure: bool = True, plan: SearchPlan | None = None,
                      max_passes: int | None = None, tol: float | None = None, seed: int = 0,
                      progress: bool = False, **op_kwargs) -> MaskedDirections:
    """LOCO Edit's local directions at ``x``: ``mask`` broadcastable to the sample shape, 1 inside the edit
    region. ``plan`` (else :func:`~.plan.plan_search` with ``method``, ``max_passes``, ``tol``) sets the
    solver and splits the budget: ``2k`` measuring JVPs (``measure``) and the exact path, or two searches."""
    base = as_operator(f_or_op, x, **{kk: op_kwargs.pop(kk) for kk in OPERATOR_KEYS
                                      if kk in op_kwargs and kk != "output_mask"})
    if op_kwargs:
        raise TypeError(f"unexpected arguments {sorted(op_kwargs)}")
    if base.mask is not None:
        raise UserError("pass the mask to masked_directions, not to the operator")
    m = _checked_mask(base, mask)
    check_range("null_rank", null_rank, 0, base.n - 1)
    if plan is None:
        plan = plan_search(base.n, k, solver=method, max_passes=max_passes, tol=tol, jvp_mode=base.jvp_mode,
                           masked=True, null_rank=null_rank, measure=measure, device=base.device.type,
                           directions_per_call=base.directions_per_call("vjp"))
    start, t0 = base.counter.snapshot(), time.perf_counter()
    if plan.method == "exact":
        inside, outside = _exact_pair(base, m, k, null_rank, progress)
    else:
        inside = run_plan(base.with_output_mask(m), plan, seed=seed, progress=progress)
        outside = run_plan(base.with_output_mask(1 - m), plan.outside(), seed=seed, progress=progress)
    Vin = inside.V.reshape(k, -1).double()
    D = Vin
    if null_rank > 0:
        Qo, _ = torch.linalg.qr(outside.V.reshape(-1, base.n)[:null_rank].double().T)
        D = Vin - (Vin @ Qo) @ Qo.T
    norms = D.norm(dim=1, keepdim=True)
    if bool((norms < 1e-8).any()):
        raise UserError("a masked direction lies in the null-space projection; lower null_rank")
    D = (D / norms).to(base.dtype).reshape(k, *base.shape)
    frac = frac0 = None
    if measure:
        JD = base.jvp(torch.cat([D, inside.V.to(base.dtype)]))
        frac, frac0 = mask_energy_fraction(JD[:k], m).cpu(), mask_energy_fraction(JD[k:], m).cpu()
    used = base.counter.since(start)
    return MaskedDirections(directions=D, inside=inside, outside=outside, null_rank=null_rank, inside_fraction=frac,
                            inside_fraction_unprojected=frac0, passes=used.passes, batched_calls=used.calls,
                            wall_time_s=time.perf_counter() - t0, plan=plan)
