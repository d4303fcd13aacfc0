"""Low-rank denoising autoencoders for MoLRG and their training by SGD (Wang et al. 2024,
arXiv:2409.02426, §3.2 and App. E.1).

Parameterisations (``theta = {U_k}``, ``U_k in O^{n x d_k}``):

* soft-max, eq. 9: ``x_theta(x_t, t) = s/(s^2+gamma^2) sum_k w_k U_k U_k^T x_t`` with
  ``w = softmax_k(log pi_k + phi_t ||U_k^T x_t||^2)``, ``phi_t = s^2 / (2 gamma^2 (s^2+gamma^2))``
  (every component of one problem has the same ``d``, so eq. 9 is the exact posterior form);
* hard-max, eq. 16/17: the same with ``w = onehot(argmax_k ||U_k^T x_0||)`` (needs the clean
  ``x_0``, so it is a *training* surrogate; the trained ``U_k`` are evaluated with eq. 9).

Training: Algorithm 1 (App. E.1) on the DAE loss (6) with ``lambda_t = 1``: each step draws,
for every problem, ``M`` pairs (training index, time) uniformly -- time from ``time_steps``
equally spaced points ``t_j = j / time_steps`` (j = 1..time_steps) of the VP schedule
(:func:`~lowdim_app.synthetic.molrg.vp_schedule`) -- and fresh noise; takes a Euclidean gradient
step of the mean squared error and retracts every ``U_k`` to the Stiefel manifold by QR
(sign-fixed, :func:`~lowdim_app.synthetic.subspace.stiefel_retract`). Everything is batched
over ``B`` independent problems (trials / grid cells) in one tensor program.

Initialisations: ``"random"`` (Haar), ``"perturbed"`` (eq. 48: ``U_k^0 = U_k* + 0.2 Delta``,
``Delta ~ N(0, I)`` entrywise, then retracted; needs the truth).

App. E.1 settings (:data:`PAPER_SETTINGS`): K = 1: lr 1e-4, batch 128 N_k, 1e4 iterations;
K = 2: lr 2e-5, batch 1024, 1e5 iterations, init eq. 48. With the loss as written
(mean over the batch, ``lambda_t = 1``) those step sizes barely move the bases in 1e4 steps
(the per-step change is ``~ lr * ||grad|| ~ 1e-4``); the lab's default (:data:`FAST_SETTINGS`)
uses a larger step (cosine-decayed) and a few hundred iterations. Both are selectable
(:func:`default_dae_config`). For K >= 2 the lab defaults to the hard-max DAE (eq. 16), which
SGD trains much faster than the soft-max one (eq. 9; also available).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Callable

import torch

from .molrg import vp_schedule
from .subspace import stiefel_retract

__all__ = ["DAEConfig", "PAPER_SETTINGS", "FAST_SETTINGS", "dae_forward", "dae_loss",
           "train_dae", "time_grid", "init_bases", "default_dae_config", "expected_dae_loss"]


@dataclass
class DAEConfig:
    variant: str = "softmax"          # softmax (eq. 9) | hardmax (eq. 16/17)
    iters: int = 300
    lr: float = 0.5
    batch: int = 0                    # M; 0 -> 128 * N_k (App. E.1, K = 1)
    time_steps: int = 64
    init: str = "auto"                # auto | random | perturbed; auto: K=1 random, K>1 perturbed
    perturb: float = 0.2
    dtype: str = "float32"
    lr_decay: str = "constant"        # constant (Algorithm 1) | cosine (to 0 over the run)

    def resolved_init(self, K: int) -> str:
        if self.init == "auto":
            return "random" if K == 1 else "perturbed"
        return self.init

    def batch_size(self, N_k: int) -> int:
        return int(self.batch) if self.batch > 0 else 128 * int(N_k)

    def to_dict(self) -> dict:
        return asdict(self)


PAPER_SETTINGS = {
    1: DAEConfig(iters=10_000, lr=1e-4, batch=0, init="random", dtype="float32"),
    2: DAEConfig(iters=100_000, lr=2e-5, batch=1024, init="perturbed", dtype="float32"),
}
FAST_SETTINGS = {
    # K = 1 (the variant does not matter): 300 steps, lr 1 with cosine decay, batch 128 N_k
    (1, "softmax"): DAEConfig(variant="softmax", iters=300, lr=1.0, batch=0, init="random",
                              lr_decay="cosine"),
    # K >= 2 hard-max (eq. 16, the parameterisation of Thm. 3/4): same step rule, batch 256
    (2, "hardmax"): DAEConfig(variant="hardmax", iters=300, lr=1.0, batch=256, init="perturbed",
                              lr_decay="cosine"),
    # K >= 2 soft-max (eq. 9) is unstable at large steps: smaller constant step, more of them
    (2, "softmax"): DAEConfig(variant="softmax", iters=600, lr=0.2, batch=256, init="perturbed"),
}


def default_dae_config(K: int, variant: str = "hardmax", preset: str = "fast") -> DAEConfig:
    """The lab's DAE-SGD settings (``preset='fast'``) or App. E.1's (``'paper'``) for ``K``."""
    if variant not in ("softmax", "hardmax"):
        raise ValueError(f"unknown DAE variant {variant!r} (softmax | hardmax)")
    if preset == "paper":
        cfg = PAPER_SETTINGS[1 if K == 1 else 2]
    elif preset == "fast":
        cfg = FAST_SETTINGS[(1, "softmax")] if K == 1 else FAST_SETTINGS[(2, variant)]
    else:
        raise ValueError(f"unknown preset {preset!r} (fast | paper)")
    return replace(cfg, variant=variant)


def time_grid(time_steps: int, dtype=torch.float32):
    """``(s_t, gamma_t)`` at ``t_j = j / time_steps`` (j = 1..time_steps) of the VP schedule."""
    t = torch.arange(1, time_steps + 1, dtype=torch.float64) / time_steps
    s, g = vp_schedule(t)
    return s.to(dtype), g.to(dtype)


def dae_forward(U: torch.Tensor, xt: torch.Tensor, s: torch.Tensor, g: torch.Tensor,
                log_pi: torch.Tensor | None = None, variant: str = "softmax",
                x0: torch.Tensor | None = None) -> torch.Tensor:
    """Batched low-rank DAE. ``U (B, K, n, d)`` (zero columns allowed), ``xt (B, M, n)``,
    ``s, g`` broadcastable to ``(B, M)``. Returns ``(B, M, n)``."""
    proj = torch.einsum("bmn,bknd->bmkd", xt, U)
    c = s / (s * s + g * g)
    if U.shape[1] == 1:
        w = None
    elif variant == "softmax":
        phi = s * s / (2 * g * g * (s * s + g * g))
        logits = phi.unsqueeze(-1) * (proj ** 2).sum(-1)
        if log_pi is not None:
            logits = logits + log_pi
        w = torch.softmax(logits, dim=-1)
    elif variant == "hardmax":
        if x0 is None:
            raise ValueError("the hard-max DAE (eq. 17) needs the clean x0")
        e0 = (torch.einsum("bmn,bknd->bmkd", x0, U) ** 2).sum(-1)
        w = torch.nn.functional.one_hot(e0.argmax(-1), U.shape[1]).to(xt.dtype)
    else:
        raise ValueError(f"unknown DAE variant {variant!r} (softmax | hardmax)")
    if w is not None:
        proj = proj * w.unsqueeze(-1)
    return c.unsqueeze(-1) * torch.einsum("bmkd,bknd->bmn", proj, U)


def dae_loss(U, x0, s, g, eps, variant="softmax", log_pi=None):
    """Per-problem mean DAE loss (eq. 6 integrand, ``lambda_t = 1``): ``(B,)``."""
    xt = s.unsqueeze(-1) * x0 + g.unsqueeze(-1) * eps
    out = dae_forward(U, xt, s, g, log_pi, variant, x0)
    return ((out - x0) ** 2).sum(-1).mean(-1)


def init_bases(B: int, K: int, n: int, d: torch.Tensor, dmax: int, init: str,
               generator: torch.Generator | None, U_true: torch.Tensor | None = None,
               perturb: float = 0.2, dtype=torch.float64):
    """Initial bases ``(B, K, n, dmax)`` (padded columns random, masked in use)."""
    G = torch.randn(B, K, n, dmax, generator=generator, dtype=torch.float64)
    if init == "random":
        Z = G
    elif init == "perturbed":
        if U_true is None:
            raise ValueError("init 'perturbed' (eq. 48) needs the true bases")
        colmask = (torch.arange(dmax) < d.view(B, 1, 1, 1)).to(torch.float64)
        Z = U_true.to(torch.float64) * colmask + perturb * G
    else:
        raise ValueError(f"unknown init {init!r}")
    return stiefel_retract(Z).to(dtype)


def _reduced_grad(W: torch.Tensor, X: torch.Tensor, P0: torch.Tensor, i: torch.Tensor,
                  s: torch.Tensor, g: torch.Tensor, K: int, dm: int, variant: str,
                  log_pi: torch.Tensor | None, generator: torch.Generator | None,
                  eps: torch.Tensor | None = None):
    """One stochastic gradient of the mean DAE loss in the reduced, exact-in-distribution form.

    ``W (B, n, K*dm)`` are the stacked (masked) bases, ``P0 = W^T X`` ``(B, K*dm, N)``, ``i``
    ``(B, M)`` the drawn training indices, ``s, g`` ``(B, M)`` the drawn ``(s_t, gamma_t)``.

    Per sample, with ``x_t = s x + gamma eps``, ``p_k = U_k^T x_t``, ``w = softmax(phi ||p||^2)``,
    ``z_k = c w_k p_k``, ``r = W z - x``, ``rho = W^T r``, ``q_k = p_k^T rho_k``:
    ``grad_{U_k} ||r||^2 = r a_k^T + x_t b_k^T`` with ``a_k = 2 c w_k p_k`` and
    ``b_k = 2 c w_k rho_k + 4 c phi w_k (q_k - sum_j w_j q_j) p_k`` (no weight term for the
    hard-max or K = 1). The noise enters only through ``W^T eps`` and the sum
    ``sum_m gamma_m eps_m b_m^T``. Write ``W = Q R`` (QR), ``eps = Q xi + eps_perp`` with
    ``xi ~ N(0, I)`` and ``eps_perp ~ N(0, I - Q Q^T)`` independent of everything else; then
    ``W^T eps = R^T xi`` and ``sum_m gamma_m eps_perp_m b_m^T`` is exactly distributed as
    ``(I - Q Q^T) H S^{1/2}``, ``H`` an ``n x K dm`` standard Gaussian matrix and
    ``S = sum_m gamma_m^2 b_m b_m^T``. So the estimator has the same distribution as autograd
    with full ``n``-dimensional noise, at ``O(M K d)`` instead of ``O(M n)`` cost per step.
    Passing ``eps (B, M, n)`` uses that noise instead (deterministic; for tests).
    Returns ``(grad (B, n, K*dm), loss (B,))``.
    """
    B, n, Kd = W.shape
    M = i.shape[1]
    dt = W.dtype
    Q, R = torch.linalg.qr(W)                                          # (B,n,Kd), (B,Kd,Kd)
    G = W.transpose(1, 2) @ W                                           # (B, Kd, Kd)
    P0i = torch.gather(P0.transpose(1, 2), 1, i.unsqueeze(-1).expand(B, M, Kd))   # (B, M, Kd)
    xi = torch.randn(B, M, Kd, generator=generator, dtype=dt) if eps is None else eps @ Q
    p = s.unsqueeze(-1) * P0i + g.unsqueeze(-1) * (xi @ R)             # (B, M, Kd)  (R^T xi)
    c = (s / (s * s + g * g)).unsqueeze(-1)                            # (B, M, 1)
    pk = p.view(B, M, K, dm)
    if K == 1:
        w = torch.ones(B, M, 1, dtype=dt)
    elif variant == "softmax":
        phi = s * s / (2 * g * g * (s * s + g * g))
        logits = phi.unsqueeze(-1) * (pk ** 2).sum(-1)
        if log_pi is not None:
            logits = logits + log_pi.view(-1, 1, K) if log_pi.ndim == 2 else logits + log_pi
        w = torch.softmax(logits, -1)
    elif variant == "hardmax":
        e0 = (P0i.view(B, M, K, dm) ** 2).sum(-1)
        w = torch.nn.functional.one_hot(e0.argmax(-1), K).to(dt)
    else:
        raise ValueError(f"unknown DAE variant {variant!r} (softmax | hardmax)")
    wk = w.unsqueeze(-1)                                                # (B, M, K, 1)
    z = (c.unsqueeze(-1) * wk * pk).reshape(B, M, Kd)
    rho = z @ G - P0i                                                   # W^T r
    xnorm2 = (X ** 2).sum(-1)                                           # (B, N)
    loss_m = (z * (z @ G)).sum(-1) - 2 * (z * P0i).sum(-1) + torch.gather(xnorm2, 1, i)
    a = 2 * c * (wk * pk).reshape(B, M, Kd)
    rk = rho.view(B, M, K, dm)
    b = 2 * c.unsqueeze(-1) * wk * rk
    if K > 1 and variant == "softmax":
        q = (pk * rk).sum(-1)                                           # (B, M, K)
        qbar = (w * q).sum(-1, keepdim=True)
        b = b + (4 * c * phi.unsqueeze(-1)).unsqueeze(-1) * (wk * (q - qbar).unsqueeze(-1)) * pk
    b = b.reshape(B, M, Kd)
    # deterministic parts
    grad = W @ (z.transpose(1, 2) @ a)                                  # W sum z a^T
    coef = s.unsqueeze(-1) * b - a                                      # x_i (s b - a)^T
    Acc = torch.zeros(B, X.shape[1], Kd, dtype=dt).scatter_add_(1, i.unsqueeze(-1).expand(B, M, Kd), coef)
    grad = grad + X.transpose(1, 2) @ Acc
    gb = g.unsqueeze(-1) * b
    grad = grad + Q @ (xi.transpose(1, 2) @ gb)                          # Q sum gamma xi b^T
    if eps is None:
        S = gb.transpose(1, 2) @ gb
        lam, V = torch.linalg.eigh(S)
        Sh = (V * lam.clamp(min=0).sqrt().unsqueeze(-2)) @ V.transpose(1, 2)
        H = torch.randn(B, n, Kd, generator=generator, dtype=dt) @ Sh
    else:
        H = eps.transpose(1, 2) @ gb
    grad = grad + H - Q @ (Q.transpose(1, 2) @ H)
    return grad / M, loss_m.mean(-1)


def train_dae(X: torch.Tensor, K: int, d, cfg: DAEConfig, smask: torch.Tensor | None = None,
              n_valid: torch.Tensor | None = None, U_true: torch.Tensor | None = None,
              log_pi: torch.Tensor | None = None, generator: torch.Generator | None = None,
              callback: Callable[[int, torch.Tensor], None] | None = None, callback_every: int = 50,
              should_stop: Callable[[], bool] | None = None, N_k: int | None = None,
              engine: str = "reduced") -> torch.Tensor:
    """Algorithm 1 with QR retraction, batched over ``B`` problems.

    ``X (B, N, n)`` training samples (the first ``n_valid[b]`` rows of problem ``b`` are real;
    the index draw ``i_m`` is uniform over them); ``d`` int or ``(B,)``; ``U_true (B, K, n, dmax)``
    only for ``init='perturbed'``. ``engine``: ``"reduced"`` (default, exact-in-distribution
    O(M K d) gradient, see :func:`_reduced_grad`) or ``"autograd"`` (full ``n``-dimensional
    noise, the literal Algorithm 1; the reference). ``callback(iteration, loss (B,))`` every
    ``callback_every`` steps; ``should_stop()`` is polled there too (returns early with the
    current bases). Returns ``U (B, K, n, dmax)`` (float64, columns past ``d`` zeroed).
    """
    dtype = getattr(torch, cfg.dtype)
    B, N, n = X.shape
    d = torch.as_tensor(d, dtype=torch.long).expand(B).clone()
    dmax = int(d.max())
    if n_valid is None:
        n_valid = smask.sum(-1) if smask is not None else torch.full((B,), N)
    n_valid = n_valid.to(torch.long).clamp(min=1)
    N_k = int(N_k) if N_k is not None else max(1, int(n_valid.max()) // K)
    M = cfg.batch_size(N_k)
    colmask = (torch.arange(dmax) < d.view(B, 1, 1, 1)).to(dtype)
    U = init_bases(B, K, n, d, dmax, cfg.resolved_init(K), generator, U_true, cfg.perturb,
                   dtype=dtype)
    s_tab, g_tab = time_grid(cfg.time_steps, dtype)
    Xd = X.to(dtype)
    lp = None if log_pi is None else log_pi.to(dtype)
    bidx = torch.arange(B).unsqueeze(-1)
    lr = float(cfg.lr)
    if engine not in ("reduced", "autograd"):
        raise ValueError(f"unknown engine {engine!r} (reduced | autograd)")
    for it in range(int(cfg.iters)):
        i = (torch.rand(B, M, generator=generator, dtype=torch.float64) * n_valid.unsqueeze(-1)).long()
        j = torch.randint(0, cfg.time_steps, (B, M), generator=generator)
        s, g = s_tab[j], g_tab[j]
        if engine == "reduced":
            Um = U * colmask
            W = Um.permute(0, 2, 1, 3).reshape(B, n, K * dmax)
            P0 = W.transpose(1, 2) @ Xd.transpose(1, 2)
            gW, loss = _reduced_grad(W, Xd, P0, i, s, g, K, dmax, cfg.variant, lp, generator)
            grad = gW.view(B, n, K, dmax).permute(0, 2, 1, 3) * colmask
        else:
            eps = torch.randn(B, M, n, generator=generator, dtype=dtype)
            x0 = Xd[bidx, i]
            Uv = U.detach().requires_grad_(True)
            loss = dae_loss(Uv * colmask, x0, s, g, eps, cfg.variant, lp)
            (grad,) = torch.autograd.grad(loss.sum(), Uv)
        step = lr if cfg.lr_decay == "constant" else \
            lr * 0.5 * (1 + math.cos(math.pi * it / max(1, int(cfg.iters))))
        U = stiefel_retract(U - step * grad)
        if callback is not None and ((it + 1) % callback_every == 0 or it + 1 == cfg.iters):
            callback(it + 1, loss.detach())
        if should_stop is not None and (it + 1) % callback_every == 0 and should_stop():
            break
    return (U * colmask).to(torch.float64)


def expected_dae_loss(U: torch.Tensor, X: torch.Tensor, d, time_steps: int = 64, mc: int = 64,
                      variant: str = "softmax", generator: torch.Generator | None = None,
                      log_pi: torch.Tensor | None = None) -> torch.Tensor:
    """Monte-Carlo estimate of the DAE loss (6) (``lambda_t = 1``, all ``time_steps`` times, all
    training samples, ``mc`` noise draws each) for bases ``U (B, K, n, dmax)`` on ``X (B, N, n)``.
    Pass the same ``generator`` state to compare two sets of bases with common random numbers."""
    B, N, n = X.shape
    s_tab, g_tab = time_grid(time_steps, torch.float64)
    T = time_steps
    x0 = X.to(torch.float64).unsqueeze(1).unsqueeze(1).expand(B, T, mc, N, n).reshape(B, -1, n)
    s = s_tab.view(1, T, 1, 1).expand(B, T, mc, N).reshape(B, -1)
    g = g_tab.view(1, T, 1, 1).expand(B, T, mc, N).reshape(B, -1)
    eps = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    return dae_loss(U.to(torch.float64), x0, s, g, eps, variant, log_pi)
