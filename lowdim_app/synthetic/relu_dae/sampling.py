"""Sampling with ReLU DAEs (Zhang et al. 2025, arXiv:2512.20963, eq. 1, App. B.1).

A set of DAEs on a geometric VE grid ``sigma_max -> sigma_min`` (paper: 2 -> 0.02), each fine-tuned
from the main model (warm start; "varying sigma only slightly perturbs the solution", §3.2), then
DDIM eq. 1, ``x_{l-1} = f_l(x_l) + (sigma_{l-1}/sigma_l) (x_l - f_l(x_l))`` from
``x_L ~ N(0, sigma_max^2 I)``; the last step returns ``f_1(x_1)``. (Eq. 1 writes the score as
``(x - f)/sigma^2`` together with a minus sign in the update; both signs flip, the update above is
the one they give.)
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ...metrics import nearest
from .model import ReluDAE
from .train import train_dae

Tensor = torch.Tensor


def noise_levels(sigma_max: float, sigma_min: float, levels: int) -> list[float]:
    """Geometric VE grid, largest first (paper: sigma in [0.02, 2])."""
    return [float(s) for s in np.geomspace(sigma_max, sigma_min, levels)]


def train_level_daes(base: ReluDAE, X: Tensor, sigmas: list[float], *, steps: int = 300, lr: float = 3e-3,
                     batch: int = 512, seed: int = 0,
                     callback: Callable[[int, int, float], None] | None = None) -> list[ReluDAE]:
    """One DAE per noise level, each fine-tuned from ``base`` (warm start).

    ``callback(level, step, loss)`` is called from inside each level's training (progress, cancellation)."""
    out = []
    for i, s in enumerate(sigmas):
        cb = None if callback is None else (lambda step, loss, i=i: callback(i, step, loss))
        out.append(train_dae(X, base.p, s, base.lam, tied=base.tied, steps=steps, lr=lr, batch=batch,
                             seed=seed + 101 * (i + 1), init=(base.W1, base.W2), callback=cb))
    return out


def ddim_sample(daes: list[ReluDAE], n: int, seed: int = 0) -> Tensor:
    """Eq. 1 with the DAE denoiser: ``x <- f_l(x) + (sigma_{l-1}/sigma_l)(x - f_l(x))``, ``x_L ~ N(0, sigma_L^2 I)``."""
    sig = [m.sigma for m in daes]
    g = torch.Generator().manual_seed(seed)
    x = sig[0] * torch.randn(n, daes[0].d, generator=g)
    for i, m in enumerate(daes):
        f = m(x)
        nxt = sig[i + 1] if i + 1 < len(daes) else 0.0
        x = f + (nxt / sig[i]) * (x - f)
    return x


def nearest_train(samples: Tensor, X: Tensor) -> dict:
    """Most similar training row by cosine (the nearest neighbour of the unit-normalised rows), the
    cosine and the relative distance ``||s - x|| / ||x||`` to it."""
    unit = torch.nn.functional.normalize
    idx = nearest(unit(samples, dim=1), unit(X, dim=1)).index[:, 0]
    cos = (unit(samples, dim=1) * unit(X[idx], dim=1)).sum(1)
    dist = (samples - X[idx]).norm(dim=1) / X[idx].norm(dim=1).clamp_min(1e-12)
    return {"cos": cos, "index": idx, "rel_dist": dist}
