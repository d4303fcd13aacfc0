"""Numerical rank of the denoiser's Jacobian along a sampling trajectory (Wang et al. 2024,
arXiv:2409.02426, Fig. 3a; numerical rank App. D.1 eq. 46).

At each visited timestep ``t`` of a seeded DDIM trajectory we take ``J_t = d x0_hat / d x_t`` at the
current ``x_t`` and report the numerical rank ``r`` (smallest r with
``sum_{i<=r} s_i^2 / sum_i s_i^2 > eta^2``, eta = 0.99) against the SNR ``1 / sigma_t`` with
``sigma_t = sqrt(1 - abar_t) / sqrt(abar_t)``.

* ``n <= EXACT_MAX_N``: the full spectrum from the exact Jacobian.
* larger ``n``: the top-k spectrum from JVP/VJP and ``||J||_F^2`` from a Hutchinson estimate
  (``E ||J z||^2`` over Gaussian ``z``); if the top-k energy never reaches ``eta^2 ||J||_F^2``,
  the rank is reported as a lower bound ``> k``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import check_range
from ..metrics import numerical_rank
from . import jacobian as jac


@dataclass
class RankPoint:
    t: int
    sigma: float
    snr: float
    rank: int
    rank_is_lower_bound: bool
    n: int
    top_singular_values: list[float] = field(default_factory=list)

    @property
    def rank_fraction(self) -> float:
        return self.rank / self.n


def sigma_of(model, t: int) -> float:
    a = float(model.alphas_cumprod[t])
    return float(np.sqrt((1 - a) / a))


def jacobian_rank(model, x_t: torch.Tensor, t: int, cond=None, eta: float = 0.99, k: int = 32,
                  hutchinson: int = 16, seed: int = 0) -> tuple[int, bool, torch.Tensor]:
    """``(rank, is_lower_bound, top singular values)`` of ``J_t`` at ``x_t``."""
    n = model.n
    if n <= jac.EXACT_MAX_N:
        res = jac.jacobian_of_x0_hat(model, x_t, t, cond, k=min(k, n), method="exact")
        return int(numerical_rank(res.spectrum, eta)), False, res.spectrum
    res = jac.jacobian_of_x0_hat(model, x_t, t, cond, k=k, method="krylov", seed=seed)
    op = jac.x0_hat_operator(model, x_t, t, cond)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn((hutchinson, *x_t.shape[1:]), generator=g).to(x_t.device)
    with model.forward_ad_safe():
        fro2 = float(op.jvp(z).pow(2).reshape(hutchinson, -1).sum(1).mean())
    s2 = res.singular_values.double().pow(2).cumsum(0)
    hit = torch.nonzero(s2 > eta ** 2 * fro2)
    if len(hit):
        return int(hit[0]) + 1, False, res.singular_values
    return int(res.k), True, res.singular_values


def rank_along_trajectory(model, steps: int = 50, points: int = 12, seed: int = 0, cond=None, eta: float = 0.99,
                          k: int = 32, progress: bool = False,
                          on_point: Callable[[int, int], None] | None = None) -> list[RankPoint]:
    """Numerical rank of ``J_t`` at ``points`` timesteps of one seeded DDIM trajectory from ``T``.

    ``on_point(done, total)`` is called after each measured point (progress, cancellation)."""
    check_range("points", points, 2, 200)
    if model.is_text and cond is None:
        cond = model.default_conditioning()
    ts = model.timesteps(model.num_train_timesteps - 1, steps)
    visit = set(np.unique(np.round(np.linspace(0, len(ts) - 1, points)).astype(int)).tolist())
    x = model.randn(1, seed)
    out: list[RankPoint] = []
    for i, t in enumerate(tqdm(ts, desc="rank along trajectory", disable=not progress)):
        if i in visit:
            r, lower, s = jacobian_rank(model, x, t, cond, eta=eta, k=k, seed=seed)
            sig = sigma_of(model, t)
            out.append(RankPoint(t, sig, 1.0 / sig, r, lower, model.n, [float(v) for v in s[:16]]))
            if on_point is not None:
                on_point(len(out), len(visit))
        with torch.no_grad():
            eps, x0 = model.predict(x, t, cond)
            x = model._ddim_move(eps, x0, ts[i + 1] if i + 1 < len(ts) else None)
    return out
