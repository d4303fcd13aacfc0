"""Numerical rank of the denoiser's Jacobian along a sampling trajectory (Wang et al. 2024,
arXiv:2409.02426, Fig. 3a; numerical rank App. D.1 eq. 46).

At each visited timestep ``t`` of a seeded DDIM trajectory we take ``J_t = d x0_hat / d x_t`` at the
current ``x_t`` and report the numerical rank ``r`` (smallest r with
``sum_{i<=r} s_i^2 / sum_i s_i^2 > eta^2``, eta = 0.99) against the SNR ``1 / sigma_t`` with
``sigma_t = sqrt(1 - abar_t) / sqrt(abar_t)``.

The search plan (:func:`~.jacobian.plan.plan_for_model`, with the Hutchinson probes inside the budget) decides:

* the exact Jacobian's ``n`` VJPs fit ``max_passes`` (network evaluations): the full spectrum;
* otherwise a budget-aware estimate per point: the top-k spectrum from block Krylov within what the probes
  leave of ``max_passes``, and ``||J||_F^2 = ||J V||_F^2 + ||J (I - V V^T)||_F^2`` over the
  Krylov method's final orthonormal basis ``V``: the first term is known exactly from the search, the
  second is a Hutchinson estimate from ``hutchinson`` Gaussian probes projected off ``V`` (the deflated
  estimator of Meyer, Musco, Musco & Woodruff 2021, Hutch++, arXiv:2010.09649). Plain Hutchinson
  on ``J`` itself is far too noisy here: the energy sits in a few directions, so 33 probes gave an
  energy fraction of 1.21 (and rank 4 where the exact rank is 100) on a digits trajectory point.
  If the top-k energy reaches ``eta^2 ||J||_F^2`` the rank is the first ``r`` that does (an estimate:
  Ritz values never exceed the true singular values, so an unconverged top-k can only overstate ``r``);
  if it never does, the rank is reported as the lower bound ``k + 1`` and :attr:`RankPoint.reason` says
  why (the energy fraction reached, and whether the top-k converged within the budget -- if it did
  not, the true top-k energy may be larger and the bound is not certain).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import UserError, check_range
from ..metrics import numerical_rank
from . import jacobian as jac

DEFAULT_HUTCHINSON = 16


@dataclass
class RankPoint:
    t: int
    sigma: float
    snr: float
    rank: int
    rank_is_lower_bound: bool
    n: int
    top_singular_values: list[float] = field(default_factory=list)
    method: str = "exact"            # exact | krylov
    passes: int = 0                  # network evaluations spent at this point (a central-difference JVP is two)
    converged: bool = True           # the top-k search met its tolerance (always True on the exact path)
    error_estimate: float | None = 0.0
    energy_fraction: float | None = 1.0   # top-k energy / ||J||_F^2 (estimate on the Krylov path)
    fro2_probes: int = 0             # Hutchinson probes behind ||J||_F^2 (0: exact)
    reason: str = ""                 # what could not be resolved ("" when exact)

    @property
    def rank_fraction(self) -> float:
        return self.rank / self.n

    @property
    def resolved(self) -> bool:
        """The rank is a number, not a lower bound, and the top-k converged (or the path was exact)."""
        return not self.rank_is_lower_bound and self.converged


def sigma_of(model, t: int) -> float:
    a = float(model.alphas_cumprod[t])
    return float(np.sqrt((1 - a) / a))


def min_passes(k: int, hutchinson: int = DEFAULT_HUTCHINSON, jvp_mode: str | None = None) -> int:
    """Smallest per-point budget (network evaluations) of the Krylov path: its first iteration(s) plus the
    Hutchinson probes."""
    return jac.min_passes(k, jvp_mode or jac.DEFAULT_JVP_MODE, extra_jvps=hutchinson)


@dataclass
class _Estimate:
    rank: int
    lower_bound: bool
    singular_values: torch.Tensor
    method: str
    passes: int
    converged: bool
    error_estimate: float | None
    energy_fraction: float | None
    probes: int
    reason: str


RANK_SOLVERS = ("auto", "exact", "krylov")


def remaining_energy(op, basis: torch.Tensor, probes: int, seed: int) -> tuple[float, int]:
    """Hutchinson estimate of ``||J (I - V V^T)||_F^2`` from ``probes`` Gaussian probes projected off the
    orthonormal columns of ``basis`` (``n x m``); ``(0, 0)`` when the basis spans everything."""
    V = basis.double()
    if probes == 0 or V.shape[1] >= V.shape[0]:
        return 0.0, 0
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(V.shape[0], probes, generator=g, dtype=torch.float64)
    for _ in range(2):                      # twice: orthogonal to working precision
        z = z - V @ (V.T @ z)
    fz = op.jvp(z.T.reshape(probes, *op.shape).to(op.device, op.dtype))
    return float(fz.double().pow(2).sum()) / probes, probes


def _estimate(model, x_t: torch.Tensor, t: int, cond, eta: float, k: int, hutchinson: int, seed: int,
              max_passes: int | None, tol: float | None, op_kwargs: dict, solver: str = "auto") -> _Estimate:
    n = model.n
    if solver not in RANK_SOLVERS:
        raise UserError(f"solver must be one of {', '.join(RANK_SOLVERS)}, got {solver!r}")
    op_kwargs = dict(op_kwargs)
    check = op_kwargs.pop("check", None)
    memory_gb = op_kwargs.pop("memory_gb", None)
    jvp_mode = op_kwargs.pop("jvp_mode", None)
    budget = 2000 if max_passes is None else max_passes
    with model.float32_unet():
        plan = jac.plan_for_model(model, min(k, n - 1) if solver != "exact" else min(k, n), solver=solver,
                                  max_passes=budget, tol=tol, jvp_mode=jvp_mode, memory_gb=memory_gb, spectrum=True,
                                  needs_basis=True, extra_jvps=hutchinson)
        if plan.method == "exact":
            res = jac.jacobian_of_x0_hat(model, x_t, t, cond, plan=plan, check=check, **op_kwargs)
            return _Estimate(int(numerical_rank(res.spectrum, eta)), False, res.spectrum, "exact", res.passes, True,
                             0.0, 1.0, 0, "")
        k = plan.k
        with jac.diffusion.x0_hat_session(model, x_t, t, cond, plan, {}, check, **op_kwargs) as (plan, op):
            res = jac.run_plan(op, plan, seed=seed)
            fro2, probes = remaining_energy(op, res.basis, hutchinson, seed + 1)
            fro2 += res.basis_energy
            passes_probes = probes * op.jvp_evaluations
    tol = plan.tol
    passes = res.passes + passes_probes
    s2 = res.singular_values.double().pow(2).cumsum(0)
    frac = float(s2[-1] / fro2) if fro2 > 0 else None
    err = res.error_estimate if math.isfinite(res.error_estimate) else None
    hit = torch.nonzero(s2 > eta ** 2 * fro2)
    not_conv = "" if res.converged else (f"; the top-{k} did not converge within {passes} network evaluations (estimated error "
                                          f"{'unknown' if err is None else f'{err:.2g}'} > tol {tol:g})")
    if len(hit):
        reason = "" if res.converged else ("estimate: the top-k energy reached eta^2 ||J||_F^2 but" + not_conv[1:]
                                           + ", so the rank may be overstated")
        return _Estimate(int(hit[0]) + 1, False, res.singular_values, "krylov", passes, res.converged, err, frac,
                         probes, reason)
    pct = "?" if frac is None else f"{100 * frac:.1f}%"
    reason = (f"rank > {k}: the top-{k} energy is {pct} of ||J||_F^2 (Hutchinson, {probes} probes), below "
              f"eta^2 = {100 * eta ** 2:.2f}%" + not_conv + ("; raise k (and max_passes) to resolve it" if res.converged
                                                              else "; raise max_passes to confirm the bound"))
    return _Estimate(k + 1, True, res.singular_values, "krylov", passes, res.converged, err, frac, probes, reason)


def jacobian_rank(model, x_t: torch.Tensor, t: int, cond=None, eta: float = 0.99, k: int = 32,
                  hutchinson: int = DEFAULT_HUTCHINSON, seed: int = 0, *, max_passes: int | None = None,
                  tol: float | None = None, solver: str = "auto", **op_kwargs) -> tuple[int, bool, torch.Tensor]:
    """``(rank, is_lower_bound, top singular values)`` of ``J_t`` at ``x_t`` (see the module docstring;
    :func:`rank_point` returns everything). ``solver``: ``auto`` (the exact Jacobian when it fits the
    budget, else Krylov), ``exact`` or ``krylov``. ``op_kwargs``: ``jvp_mode``, ``memory_gb``, ``check``, ..."""
    e = _estimate(model, x_t, t, cond, eta, k, hutchinson, seed, max_passes, tol, op_kwargs, solver)
    return e.rank, e.lower_bound, e.singular_values


def rank_point(model, x_t: torch.Tensor, t: int, cond=None, eta: float = 0.99, k: int = 32,
               hutchinson: int = DEFAULT_HUTCHINSON, seed: int = 0, *, max_passes: int | None = None,
               tol: float | None = None, solver: str = "auto", **op_kwargs) -> RankPoint:
    """The :class:`RankPoint` of ``J_t`` at ``x_t`` within ``max_passes`` network evaluations (``solver`` as in
    :func:`jacobian_rank`)."""
    e = _estimate(model, x_t, t, cond, eta, k, hutchinson, seed, max_passes, tol, op_kwargs, solver)
    sig = sigma_of(model, t)
    return RankPoint(int(t), sig, 1.0 / sig, e.rank, e.lower_bound, model.n, [float(v) for v in e.singular_values[:16]],
                     e.method, e.passes, e.converged, e.error_estimate, e.energy_fraction, e.probes, e.reason)


def rank_along_trajectory(model, steps: int = 50, points: int = 12, seed: int = 0, cond=None, eta: float = 0.99,
                          k: int = 32, progress: bool = False,
                          on_point: Callable[[int, int], None] | None = None, *, max_passes: int | None = None,
                          tol: float | None = None, hutchinson: int = DEFAULT_HUTCHINSON,
                          check: Callable[[], None] | None = None, solver: str = "auto",
                          **op_kwargs) -> list[RankPoint]:
    """Numerical rank of ``J_t`` at ``points`` timesteps of one seeded DDIM trajectory from ``T``.

    ``max_passes``: network evaluations per point (``None``: 2000; the search plan takes the exact path where
    its ``n`` VJPs fit); ``check()`` runs before every U-Net call of the trajectory and
    every batched JVP/VJP (raise there to cancel); ``on_point(done, total)`` after each measured
    point. ``op_kwargs`` (``jvp_mode``, ``memory_gb``) go to the Jacobian operator."""
    check_range("points", points, 2, 200)
    if model.is_text and cond is None:
        cond = model.default_conditioning()
    ts = model.timesteps(model.num_train_timesteps - 1, steps)
    visit = set(np.unique(np.round(np.linspace(0, len(ts) - 1, points)).astype(int)).tolist())
    x = model.randn(1, seed)
    out: list[RankPoint] = []
    with model.float32_unet():   # one float32 copy (half-precision models) for the whole trajectory
        for i, t in enumerate(tqdm(ts, desc="rank along trajectory", disable=not progress)):
            if check is not None:
                check()
            if i in visit:
                out.append(rank_point(model, x, t, cond, eta=eta, k=k, hutchinson=hutchinson, seed=seed,
                                      max_passes=max_passes, tol=tol, check=check, solver=solver, **op_kwargs))
                if on_point is not None:
                    on_point(len(out), len(visit))
            with torch.no_grad():
                eps, x0 = model.predict(x, t, cond)
                x = model._ddim_move(eps, x0, ts[i + 1] if i + 1 < len(ts) else None)
    return out
