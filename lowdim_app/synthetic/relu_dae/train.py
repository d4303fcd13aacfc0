"""Training the ReLU DAE on eq. 6 of Zhang et al. 2025 (arXiv:2512.20963).

The expectation over ``eps`` is a fresh Monte-Carlo draw every step; the trainer is Adam with
hand-written gradients (no autograd: a step is a few small matrix products) and a cosine learning-rate
decay, so a default run converges in seconds on a CPU where the paper ran RMSprop for 5e5-4e7 steps
(App. B.1).
"""
from __future__ import annotations

import math
import time
from typing import Callable

import torch

from ...errors import UserError
from .model import ReluDAE

Tensor = torch.Tensor


def train_dae(X: Tensor, p: int, sigma: float, lam: float, *, tied: bool = True, steps: int = 3000,
              lr: float = 1e-2, batch: int = 512, seed: int = 0, init_scale: float = 1.0,
              init: tuple[Tensor, Tensor] | None = None, log_every: int = 50,
              callback: Callable[[int, float], None] | None = None) -> ReluDAE:
    """Minimise eq. 6 with Adam (hand-written gradients, cosine learning-rate decay).

    ``X``: ``n x d`` training rows (duplicates allowed). When ``n < batch`` every step uses all rows
    repeated ``batch // n`` times, each with its own noise draw; otherwise a random mini-batch of ``batch``
    rows. ``init``: warm start ``(W1, W2)``; otherwise ``N(0, init_scale^2 / d)`` entries.
    ``callback(step, data_loss)`` is called every ``log_every`` steps (progress, cancellation).
    """
    X = torch.as_tensor(X, dtype=torch.float32)
    n, d = X.shape
    g = torch.Generator().manual_seed(seed)
    if init is not None:
        W1 = init[0].clone().float()
        W2 = W1.clone() if tied else init[1].clone().float()
    else:
        W1 = torch.randn(d, p, generator=g) * (init_scale / math.sqrt(d))
        W2 = W1.clone() if tied else torch.randn(d, p, generator=g) * (init_scale / math.sqrt(d))
    params = [W1] if tied else [W1, W2]
    m = [torch.zeros_like(P) for P in params]
    v = [torch.zeros_like(P) for P in params]
    b1, b2, eps = 0.9, 0.999, 1e-8
    reps = max(1, batch // n) if n < batch else 0
    x_full = X.repeat(reps, 1) if reps else None
    curve: list[float] = []
    start = time.perf_counter()
    with torch.no_grad():
        for step in range(steps):
            x0 = x_full if reps else X[torch.randint(0, n, (batch,), generator=g)]
            B = x0.shape[0]
            xt = x0 + sigma * torch.randn(x0.shape, generator=g)
            Z = xt @ W1
            H = Z.clamp_min(0)
            V = W1 if tied else W2
            R = H @ V.T - x0                                   # residual f(x_t) - x_0
            G1 = xt.T @ ((R @ V) * (Z > 0)) * (2.0 / B)        # d/dW1 of the data term
            G2 = R.T @ H * (2.0 / B)                           # d/dW2 of the data term
            grads = [G1 + G2 + 4 * lam * W1] if tied else [G1 + 2 * lam * W1, G2 + 2 * lam * W2]
            if step % log_every == 0 or step == steps - 1:
                loss = float(R.pow(2).sum(1).mean())
                curve.append(loss)
                if callback is not None:
                    callback(step, loss)
            lr_t = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
            c1, c2 = 1 - b1 ** (step + 1), 1 - b2 ** (step + 1)
            for P, G, mm, vv in zip(params, grads, m, v):
                mm.mul_(b1).add_(G, alpha=1 - b1)
                vv.mul_(b2).addcmul_(G, G, value=1 - b2)
                P.sub_(lr_t * (mm / c1) / ((vv / c2).sqrt() + eps))
    if not torch.isfinite(W1).all():
        raise UserError("training diverged (non-finite weights); lower the learning rate")
    return ReluDAE(W1=W1, W2=W1 if tied else W2, sigma=float(sigma), lam=float(lam), tied=tied,
                   loss_curve=curve, log_every=log_every, steps=steps, wall_s=time.perf_counter() - start)
