"""Numerical rank of a spectrum (seed 000 App. D.1, eq. 46).

``rank = min { r in [1, n] : sum_{i<=r} s_i^2 / sum_i s_i^2 > eta^2 }`` with ``eta = 0.99``
(the paper's choice). Used for Jacobians of denoisers (posterior mean, low-rank DAE,
networks, and the image models in ``methods/jacobian.py``).
"""
from __future__ import annotations

import torch


def numerical_rank(singular_values, eta: float = 0.99):
    """Numerical rank (eq. 46) of singular values ``(..., n)`` (any order, any sign ignored).

    Returns an ``int`` for a 1-D input and a ``torch.long`` tensor of shape ``(...)`` for a
    batched input. An all-zero spectrum has rank 0.
    """
    if not 0.0 < eta <= 1.0:
        raise ValueError(f"eta must be in (0, 1], got {eta}")
    s = torch.as_tensor(singular_values)
    if not torch.is_floating_point(s):
        s = s.double()
    s2 = torch.sort(s.abs() ** 2, dim=-1, descending=True).values
    total = s2.sum(-1, keepdim=True)
    frac = torch.cumsum(s2, -1) / torch.where(total > 0, total, torch.ones_like(total))
    # tiny slack so an exactly-flat spectrum with eta = 1 still reaches n
    below = (frac <= eta ** 2 * (1 - 1e-12)).sum(-1) + 1
    r = torch.where(total[..., 0] > 0, below.clamp(max=s.shape[-1]), torch.zeros_like(below))
    return int(r) if r.ndim == 0 else r
