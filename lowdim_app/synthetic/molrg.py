"""Mixtures of low-rank Gaussians (MoLRG) and their exact posterior mean.

Wang et al. 2024 (arXiv:2409.02426), "Diffusion Models Learn Low-Dimensional Distributions via
Subspace Clustering": Definition 1 / eq. 15, Lemma 1 (eq. 8), Lemma 2 (App. D.1, eq. 44).

Data (eq. 15): ``x = U_k* a + e`` with probability ``pi_k``; ``U_k*`` is ``n x d_k`` with
orthonormal columns, the blocks are mutually orthogonal (columns of one random orthogonal
matrix), ``a ~ N(0, I_{d_k})`` and ``e ~ N(0, noise^2 I_n)``. So component ``k`` is
``N(0, U_k U_k^T + noise^2 I)``.

Forward process: ``x_t = s_t x_0 + gamma_t eps`` (eq. 3, ``gamma_t = s_t sigma_t``).
:func:`vp_schedule` is the continuous variance-preserving schedule (Song et al. 2021) with
``beta(t) = beta_min + t (beta_max - beta_min)``, ``beta_min = 0.1``, ``beta_max = 20``,
``t in [0, T]`` (``T = 1``): ``s_t = exp(-t^2 (beta_max - beta_min) / 4 - t beta_min / 2)``,
``gamma_t = sqrt(1 - s_t^2)``. It is the continuous limit of the diffusers DDPM linear
schedule (``beta`` 1e-4 .. 0.02 over 1000 steps), i.e. ``s_t = sqrt(abar_t)``. The rank-vs-SNR
experiment (App. D.2) uses the EDM convention ``s_t = 1``, ``gamma_t = sigma_t``
(:func:`edm_sigmas`); SNR is ``1 / sigma_t = s_t / gamma_t`` (Fig. 3).

About eq. 8: the paper's formula weights component ``k`` by ``pi_k exp(phi_t ||U_k^T x||^2)``.
The exact posterior weights also carry the Gaussian normaliser
``det(s^2 U_k U_k^T + gamma^2 I)^{-1/2} ∝ ((s^2 + gamma^2) / gamma^2)^{-d_k / 2}``, which cancels
only when all ``d_k`` are equal (the paper's setting in §3.2). :meth:`MoLRG.posterior_mean`
keeps it (exact for unequal ``d_k`` too; identical to eq. 8 when the ``d_k`` are equal); the
Monte-Carlo test in ``tests/test_molrg.py`` checks the exact form.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..metrics import numerical_rank

__all__ = [
    "MoLRG", "vp_schedule", "edm_sigmas", "lemma2_bounds", "random_orthonormal_blocks",
]

VP_BETA_MIN = 0.1
VP_BETA_MAX = 20.0


def vp_schedule(t, T: float = 1.0, beta_min: float = VP_BETA_MIN, beta_max: float = VP_BETA_MAX):
    """Continuous VP schedule: returns ``(s_t, gamma_t)`` for ``t in [0, T]``.

    ``s_t = exp(-(u^2 (beta_max - beta_min) / 4 + u beta_min / 2))`` with ``u = t / T``,
    ``gamma_t = sqrt(1 - s_t^2)`` (so ``s_t^2 + gamma_t^2 = 1``). Accepts floats or tensors.
    """
    tt = torch.as_tensor(t, dtype=torch.float64) / T
    log_s = -(tt ** 2) * (beta_max - beta_min) / 4.0 - tt * beta_min / 2.0
    s = torch.exp(log_s)
    g = torch.sqrt(-torch.expm1(2.0 * log_s))
    if s.ndim == 0:
        return float(s), float(g)
    return s, g


def edm_sigmas(num_steps: int = 18, sigma_min: float = 0.002, sigma_max: float = 80.0,
               rho: float = 7.0) -> torch.Tensor:
    """EDM (Karras et al. 2022) noise levels, decreasing, length ``num_steps`` (no final 0)."""
    i = torch.arange(num_steps, dtype=torch.float64)
    a, b = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (a + i / max(num_steps - 1, 1) * (b - a)) ** rho


def random_orthonormal_blocks(n: int, dims: list[int], generator: torch.Generator | None = None,
                              dtype=torch.float64) -> list[torch.Tensor]:
    """Mutually orthogonal orthonormal blocks: consecutive columns of one random orthogonal
    ``n x n`` matrix (QR of a Gaussian matrix with the sign fix, i.e. Haar)."""
    total = sum(dims)
    g = torch.randn(n, total, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    q = q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(()))
    out, c = [], 0
    for d in dims:
        out.append(q[:, c:c + d].to(dtype).contiguous())
        c += d
    return out


def lemma2_bounds(dims: list[int]) -> tuple[int, int]:
    """Lemma 2 (Wang et al. 2024, eq. 44): ``min_k d_k <= rank(J) <= sum_k d_k``."""
    return min(dims), sum(dims)


@dataclass
class MoLRG:
    """Mixture of low-rank Gaussians (Wang et al. 2024, Def. 1, eq. 15).

    ``bases[k]`` is ``n x d_k`` with orthonormal, mutually orthogonal columns; ``weights`` are
    the mixing proportions ``pi_k`` (normalised on construction); ``noise`` is the std of the
    isotropic noise ``e`` (component ``k`` is then ``N(0, U_k U_k^T + noise^2 I)``).
    """

    bases: list[torch.Tensor]
    weights: torch.Tensor
    noise: float = 0.0
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        if not self.bases:
            raise ValueError("MoLRG needs at least one component")
        n = self.bases[0].shape[0]
        for U in self.bases:
            if U.ndim != 2 or U.shape[0] != n or U.shape[1] < 1:
                raise ValueError("bases must be n x d_k matrices with a common n and d_k >= 1")
        w = torch.as_tensor(self.weights, dtype=self.bases[0].dtype).flatten()
        if w.numel() != len(self.bases) or bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ValueError("weights must be K non-negative numbers with a positive sum")
        self.weights = w / w.sum()
        if not (self.noise >= 0 and math.isfinite(self.noise)):
            raise ValueError("noise must be a finite number >= 0")

    # ------------------------------------------------------------------ basic properties
    @property
    def n(self) -> int:
        return self.bases[0].shape[0]

    @property
    def K(self) -> int:
        return len(self.bases)

    @property
    def dims(self) -> list[int]:
        return [U.shape[1] for U in self.bases]

    @property
    def dtype(self):
        return self.bases[0].dtype

    @classmethod
    def random(cls, n: int, dims: list[int], weights=None, noise: float = 0.0, seed: int = 0,
               dtype=torch.float64) -> "MoLRG":
        """Random MoLRG: bases are consecutive column blocks of one Haar orthogonal matrix.

        ``weights`` default to uniform ``1/K``. Requires ``sum(dims) <= n``.
        """
        dims = [int(d) for d in dims]
        if len(dims) < 1 or min(dims) < 1:
            raise ValueError("dims must be a non-empty list of positive integers")
        if sum(dims) > n:
            raise ValueError(f"sum of subspace dimensions {sum(dims)} exceeds n = {n}")
        g = torch.Generator().manual_seed(int(seed))
        bases = random_orthonormal_blocks(n, dims, generator=g, dtype=dtype)
        w = torch.full((len(dims),), 1.0 / len(dims), dtype=dtype) if weights is None \
            else torch.as_tensor(weights, dtype=dtype)
        return cls(bases=bases, weights=w, noise=float(noise))

    def sample(self, N: int, generator: torch.Generator | None = None):
        """``N`` samples of eq. 15: returns ``(x (N, n), labels (N,))``."""
        N = int(N)
        labels = torch.multinomial(self.weights.double(), N, replacement=True, generator=generator) \
            if N > 0 else torch.zeros(0, dtype=torch.long)
        dmax = max(self.dims)
        a = torch.randn(N, dmax, generator=generator, dtype=torch.float64).to(self.dtype)
        x = torch.zeros(N, self.n, dtype=self.dtype)
        for k, U in enumerate(self.bases):
            m = labels == k
            if m.any():
                x[m] = a[m, :U.shape[1]] @ U.T
        if self.noise > 0:
            x = x + self.noise * torch.randn(N, self.n, generator=generator,
                                             dtype=torch.float64).to(self.dtype)
        return x, labels

    # ------------------------------------------------------------------ posterior mean
    def _coeffs(self, s_t: float, gamma_t: float):
        """Per-component posterior maps and log-weight coefficients.

        Component ``k`` (covariance ``C_k = P_k + nu^2 I``, ``P_k = U_k U_k^T``) gives
        ``x_t | k ~ N(0, a P_k + b I)`` with ``b = s^2 nu^2 + gamma^2``, ``a + b = s^2 (1 + nu^2) + gamma^2``,
        ``E[x_0 | x_t, k] = alpha P_k x + beta (I - P_k) x`` with
        ``alpha = s (1 + nu^2) / (a + b)``, ``beta = s nu^2 / b``, and
        ``log p(x_t | k) = -||x||^2/(2b) + phi ||U_k^T x||^2 - (d_k/2) log((a+b)/b) + const``,
        ``phi = (1/b - 1/(a+b)) / 2`` -- for ``nu = 0`` this is eq. 8's ``phi_t``.
        """
        s, g, nu2 = float(s_t), float(gamma_t), self.noise ** 2
        if not (g > 0 and math.isfinite(g) and math.isfinite(s) and s >= 0):
            raise ValueError("need gamma_t > 0 and finite s_t >= 0")
        b = s * s * nu2 + g * g
        ab = s * s * (1 + nu2) + g * g
        alpha = s * (1 + nu2) / ab
        beta = s * nu2 / b
        phi = 0.5 * (1.0 / b - 1.0 / ab)
        logdet = torch.tensor([0.5 * d * math.log(ab / b) for d in self.dims], dtype=self.dtype)
        return alpha, beta, phi, logdet

    def _stacked(self):
        key = "stack"
        if key not in self._cache:
            dmax = max(self.dims)
            B = torch.zeros(self.K, self.n, dmax, dtype=self.dtype)
            for k, U in enumerate(self.bases):
                B[k, :, :U.shape[1]] = U
            self._cache[key] = B
        return self._cache[key]

    def posterior_weights(self, x: torch.Tensor, s_t: float, gamma_t: float) -> torch.Tensor:
        """Posterior component probabilities ``P(k | x_t = x)`` (soft-max of eq. 8), ``(..., K)``."""
        _, _, phi, logdet = self._coeffs(s_t, gamma_t)
        Ub = self._stacked().to(x.dtype)
        proj = torch.einsum("...n,knd->...kd", x, Ub)
        logits = torch.log(self.weights.to(x.dtype)) + phi * (proj ** 2).sum(-1) - logdet.to(x.dtype)
        return torch.softmax(logits, dim=-1)

    def posterior_mean(self, x: torch.Tensor, s_t: float, gamma_t: float) -> torch.Tensor:
        """Closed-form ``E[x_0 | x_t = x]`` (Lemma 1, eq. 8) for ``x_t = s_t x_0 + gamma_t eps``.

        ``x`` is ``(..., n)``. Soft-max weights are computed with log-sum-exp (stable for
        tiny ``gamma_t``). With ``noise > 0`` each component is ``N(0, U U^T + noise^2 I)``.
        """
        alpha, beta, _, _ = self._coeffs(s_t, gamma_t)
        Ub = self._stacked().to(x.dtype)
        w = self.posterior_weights(x, s_t, gamma_t)                       # (..., K)
        proj = torch.einsum("...n,knd->...kd", x, Ub)                     # (..., K, d)
        Px = torch.einsum("...kd,knd->...kn", proj, Ub)                   # (..., K, n)
        comp = (alpha - beta) * Px + beta * x.unsqueeze(-2)
        return (w.unsqueeze(-1) * comp).sum(-2)

    def posterior_jacobian(self, x: torch.Tensor, s_t: float, gamma_t: float) -> torch.Tensor:
        """Closed-form Jacobian ``d E[x_0 | x_t] / d x_t`` at ``x`` (``(n,)`` -> ``(n, n)``;
        batched ``(..., n)`` -> ``(..., n, n)``); Wang et al. 2024, App. D.1 (proof of Lemma 2).

        With ``m_k(x) = M_k x`` (``M_k = beta I + (alpha - beta) P_k``), ``w = softmax(l)`` and
        ``grad l_k = -Sigma_k^{-1} x``: ``J = sum_k w_k M_k + sum_k w_k m_k (g_k - gbar)^T``.
        """
        alpha, beta, phi, _ = self._coeffs(s_t, gamma_t)
        Ub = self._stacked().to(x.dtype)
        n = self.n
        eye = torch.eye(n, dtype=x.dtype)
        P = torch.einsum("knd,kmd->knm", Ub, Ub)                          # (K, n, n)
        M = beta * eye + (alpha - beta) * P                               # (K, n, n)
        w = self.posterior_weights(x, s_t, gamma_t)                       # (..., K)
        mk = torch.einsum("knm,...m->...kn", M, x)                        # (..., K, n)
        # grad of logit_k = 2 phi P_k x (the -||x||^2/(2b) term is common to all k)
        gk = 2 * phi * torch.einsum("knm,...m->...kn", P, x)
        gbar = (w.unsqueeze(-1) * gk).sum(-2, keepdim=True)
        J = torch.einsum("...k,knm->...nm", w, M)
        J = J + torch.einsum("...k,...kn,...km->...nm", w, mk, gk - gbar)
        return J

    def posterior_jacobian_autograd(self, x: torch.Tensor, s_t: float, gamma_t: float) -> torch.Tensor:
        """Reference Jacobian by ``torch.func.jacrev`` of :meth:`posterior_mean` (``(n,)`` input)."""
        return torch.func.jacrev(lambda z: self.posterior_mean(z, s_t, gamma_t))(x)

    def jacobian_rank(self, x: torch.Tensor, s_t: float, gamma_t: float, eta: float = 0.99):
        """Numerical rank (Wang et al. 2024, eq. 46) of the posterior-mean Jacobian at ``x`` (batched OK)."""
        sv = torch.linalg.svdvals(self.posterior_jacobian(x, s_t, gamma_t))
        return numerical_rank(sv, eta)

    def empirical_posterior_mean(self, x: torch.Tensor, s_t: float, gamma_t: float,
                                 samples: torch.Tensor) -> torch.Tensor:
        """The empirical denoiser ``sum_i softmax_i(-||x - s x_i||^2 / (2 gamma^2)) x_i`` -- the
        posterior mean of the empirical distribution of ``samples`` (``(N, n)``), which tends to
        :meth:`posterior_mean` as ``N -> inf``."""
        d2 = torch.cdist(x.reshape(-1, self.n), s_t * samples.to(x.dtype)) ** 2
        w = torch.softmax(-d2 / (2 * gamma_t ** 2), dim=-1)
        return (w @ samples.to(x.dtype)).reshape(x.shape)
