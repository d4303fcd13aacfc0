"""The two-layer ReLU DAE of Zhang et al. 2025 (arXiv:2512.20963), §2.2.

Model (eq. 5): ``f(x) = W2 [W1^T x]_+`` with ``W1, W2`` in ``R^{d x p}``; representation
``h(x) = [W1^T x]_+``. Loss at one noise level ``sigma`` with weight decay ``lam`` (eq. 6)::

    L(W2, W1) = 1/n sum_i E_eps || f(x_i + sigma eps) - x_i ||^2 + lam (||W1||_F^2 + ||W2||_F^2)

(tied: ``W1 = W2 = W``, so the penalty is ``2 lam ||W||_F^2``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

Tensor = torch.Tensor


@dataclass
class ReluDAE:
    """``f(x) = W2 [W1^T x]_+`` trained at noise ``sigma`` with weight decay ``lam``."""

    W1: Tensor
    W2: Tensor
    sigma: float
    lam: float
    tied: bool
    loss_curve: list[float] = field(default_factory=list)   # data term every ``log_every`` steps
    log_every: int = 50
    steps: int = 0
    wall_s: float = 0.0

    @property
    def d(self) -> int:
        return self.W1.shape[0]

    @property
    def p(self) -> int:
        return self.W1.shape[1]

    def encode(self, x: Tensor) -> Tensor:
        """Representation ``h(x) = [W1^T x]_+`` for rows ``x`` (``n x d`` -> ``n x p``)."""
        return (x @ self.W1).clamp_min(0)

    def __call__(self, x: Tensor) -> Tensor:
        return self.encode(x) @ self.W2.T

    def objective(self, X: Tensor, seed: int = 0, draws: int = 8) -> dict:
        """Monte-Carlo estimate of eq. 6 on ``X`` (data term, penalty, total)."""
        g = torch.Generator().manual_seed(seed)
        x0 = X.repeat(draws, 1)
        xt = x0 + self.sigma * torch.randn(x0.shape, generator=g)
        data = float((self(xt) - x0).pow(2).sum(1).mean())
        pen = float(self.lam * (self.W1.pow(2).sum() + self.W2.pow(2).sum()))
        return {"data": data, "penalty": pen, "total": data + pen}


def representations(dae: ReluDAE, X: Tensor, *, draws: int = 1, seed: int = 0, noisy: bool = True) -> Tensor:
    """``h(x + sigma eps)`` for each row (``draws`` noise draws each, stacked) -- the representation
    whose spikiness separates memorized from generalized samples (§3.3)."""
    g = torch.Generator().manual_seed(seed)
    x = X.repeat(draws, 1)
    if noisy:
        x = x + dae.sigma * torch.randn(x.shape, generator=g)
    return dae.encode(x)


def denoise(dae: ReluDAE, X: Tensor, seed: int = 0) -> dict:
    """One-step denoising (App. A.2): ``y = x + sigma eps``, ``f(y)``; MSE per coordinate."""
    g = torch.Generator().manual_seed(seed)
    y = X + dae.sigma * torch.randn(X.shape, generator=g)
    out = dae(y)
    return {"noisy": y, "out": out, "mse": (out - X).pow(2).mean(1), "noisy_mse": (y - X).pow(2).mean(1)}
