"""MoLR-MoG data and the mixture-of-experts latent scores (Yang et al. 2026, arXiv:2601.01475, §3.1, §4, App. F).

Data (eq. 2): ``p_0 = sum_k 1/K sum_l pi_{k,l} N(A_k mu_{k,l}, A_k U_{k,l} U_{k,l}^T A_k^T)`` with orthonormal
bases ``A_k`` (D x d_k). Forward process ``x_t = s_t x_0 + gamma_t eps`` (``s_t = sqrt(1 - gamma_t^2)``, VP),
so every component of ``p_t`` is ``N(s_t A_k mu_{k,l}, s_t^2 A_k U U^T A_k^T + gamma_t^2 I)``.

Scores (all share the encoders ``A_k``, assumed known as in §3.1: "we assume the linear encoder and
decoder are perfectly learned"):

* **MoE-latent MoG** (eq. 3 with the gating of the full-space score above it): with ``y_k = A_k^T x``,
  ``C_{k,l} = s_t^2 U U^T + gamma_t^2 I`` (d_k x d_k) and ``r_k = ||x||^2 - ||y_k||^2``::

      log N_{k,l}(x) = -1/2 [(D - d_k) log gamma^2 + log det C + r_k / gamma^2 + (y_k - s mu)^T C^{-1} (y_k - s mu)] + c
      score(x) = sum_{k,l} w_{k,l}(x) [ -(x - A_k y_k) / gamma^2 - A_k C^{-1} (y_k - s mu_{k,l}) ],
      w = softmax_{k,l}(log pi_{k,l} - log K + log N_{k,l}(x)).

  For ``U`` with orthonormal columns ``A_k C^{-1}(y - s mu)`` is the paper's ``delta / gamma^2`` in latent form.
  Learnable: ``mu_{k,l}``, ``U_{k,l}`` (d_k x d_k), mixture logits.
* **MoE-latent Gaussian** (MoLRG, Wang et al. 2024, arXiv:2409.02426): the same with ``n_k = 1`` and ``mu = 0``; each expert is
  linear in ``x`` (the "linear network"), experts gated by the subspace posterior.
* **Generic latent MLP** (the MoE-latent U-Net stand-in): expert ``k`` is an MLP on ``(y_k, log gamma)`` that
  predicts the latent noise; gating by the distance to each subspace ``softmax_k(-r_k / (2 gamma^2))``.

Training: denoising score matching, ``E_{t, x_0, eps} || gamma_t s(x_t, t) + eps ||^2`` (``lambda(t) =
gamma_t^2``), Adam, ``gamma_t`` uniform in ``[gamma_min, gamma_max]``. Sampling: DDIM on a ``gamma`` grid
with Tweedie's ``x_0 = (x + gamma^2 s) / s_t``.
Digits: ``A_k`` is the (uncentred) top-``d_k`` PCA basis of class ``k``'s training images (one linear encoder
per class, K = 10, n_k = 4); the training data are the digits encoded by their class's encoder and decoded,
``A_k A_k^T x`` (the paper trains in the VAE latents; with a linear encoder this is the same, and it keeps
the 256 - d_k off-subspace directions, where every score is exact, from swamping the loss).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

Tensor = torch.Tensor


# ---------------------------------------------------------------------------------------------- data
@dataclass
class MoLRMoG:
    """Ground truth of eq. 2: ``A`` (K x D x d), ``mu`` (K x n x d), ``U`` (K x n x d x d), ``logpi`` (K x n)."""

    A: Tensor
    mu: Tensor
    U: Tensor
    logpi: Tensor

    @property
    def K(self) -> int:
        return self.A.shape[0]

    def sample(self, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """Rows ``x`` (n x D), subspace ``k`` and mode ``l`` of each."""
        K, nk, d = self.mu.shape
        k = torch.randint(0, K, (n,), generator=gen)
        probs = torch.softmax(self.logpi, 1)[k]
        l = torch.multinomial(probs, 1, generator=gen).squeeze(1)
        z = torch.randn(n, d, generator=gen, dtype=self.A.dtype)
        lat = self.mu[k, l] + torch.einsum("nij,nj->ni", self.U[k, l], z)
        return torch.einsum("nDd,nd->nD", self.A[k], lat), k, l


def random_subspaces(K: int, D: int, d: int, gen: torch.Generator, dtype=torch.float32) -> Tensor:
    """``K`` random orthonormal bases (D x d) via QR."""
    out = []
    for _ in range(K):
        Q, _ = torch.linalg.qr(torch.randn(D, d, generator=gen, dtype=torch.float64))
        out.append(Q.to(dtype))
    return torch.stack(out)


def make_molr_mog(K: int = 3, D: int = 16, d: int = 2, n_modes: int = 4, radius: float = 2.0,
                  spread: float = 0.15, seed: int = 0, dtype=torch.float32) -> MoLRMoG:
    """Synthetic MoLR-MoG: mode means on a circle/sphere of ``radius`` in each latent space (random
    rotation), latent covariances ``spread^2 I`` (``U = spread I``), equal weights."""
    g = torch.Generator().manual_seed(seed)
    A = random_subspaces(K, D, d, g, dtype)
    mu = torch.randn(K, n_modes, d, generator=g, dtype=torch.float64)
    if d == 2:
        ang = torch.arange(n_modes, dtype=torch.float64) * (2 * math.pi / n_modes)
        off = torch.rand(K, 1, generator=g, dtype=torch.float64) * 2 * math.pi
        mu = torch.stack([torch.cos(ang + off), torch.sin(ang + off)], -1)
    mu = (mu / mu.norm(dim=-1, keepdim=True) * radius).to(dtype)
    U = (spread * torch.eye(d, dtype=dtype)).expand(K, n_modes, d, d).clone()
    return MoLRMoG(A=A, mu=mu, U=U, logpi=torch.zeros(K, n_modes, dtype=dtype))


# -------------------------------------------------------------------------------------------- scores
def moe_mog_score(x: Tensor, A: Tensor, mu: Tensor, U: Tensor, logpi: Tensor, s: Tensor | float,
                  gamma: Tensor | float) -> Tensor:
    """Closed-form MoE-latent MoG score (eq. 3 with gating). ``s``, ``gamma``: scalars or per-row (n)."""
    n, D = x.shape
    K, nk, d = mu.shape
    s = torch.as_tensor(s, dtype=x.dtype).reshape(-1, 1) * torch.ones(n, 1, dtype=x.dtype)
    g2 = torch.as_tensor(gamma, dtype=x.dtype).reshape(-1, 1).pow(2) * torch.ones(n, 1, dtype=x.dtype)
    y = torch.einsum("nD,kDd->nkd", x, A)                                   # n x K x d
    r = (x.pow(2).sum(1, keepdim=True) - y.pow(2).sum(2)).clamp_min(0)     # n x K
    UUt = U @ U.transpose(-1, -2)                                           # K x nk x d x d
    eye = torch.eye(d, dtype=x.dtype)
    C = s.pow(2)[:, :, None, None, None] * UUt[None] + g2[:, :, None, None, None] * eye   # n x K x nk x d x d
    dev = y[:, :, None, :] - s[:, :, None, None] * mu[None]                       # n x K x nk x d
    L = torch.linalg.cholesky(C)
    sol = torch.cholesky_solve(dev.unsqueeze(-1), L).squeeze(-1)            # C^{-1} dev
    logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)     # n x K x nk
    quad = (dev * sol).sum(-1)
    logN = -0.5 * ((D - d) * torch.log(g2)[:, :, None] + logdet + (r / g2)[:, :, None] + quad)
    logw = logN + torch.log_softmax(logpi, 1)[None] - math.log(K)
    w = torch.softmax(logw.reshape(n, -1), 1).reshape(n, K, nk)
    perp = -(x[:, None, :] - torch.einsum("nkd,kDd->nkD", y, A)) / g2[:, :, None]   # n x K x D
    lat = -(w[..., None] * sol).sum(2)                                      # n x K x d
    wk = w.sum(2)
    return (wk[..., None] * perp).sum(1) + torch.einsum("nkd,kDd->nD", lat, A)


class MoEMoGScore(nn.Module):
    """Learnable eq. 3 experts (``n_k`` modes each; ``n_k = 1`` with ``zero_mean`` = MoE-latent Gaussian)."""

    def __init__(self, A: Tensor, n_modes: int, zero_mean: bool = False, init_mu: Tensor | None = None,
                 init_scale: float = 0.5, seed: int = 0):
        super().__init__()
        K, D, d = A.shape
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("A", A.clone())
        self.zero_mean = zero_mean
        mu0 = init_mu.clone() if init_mu is not None else torch.randn(K, n_modes, d, generator=g)
        self.mu = nn.Parameter(torch.zeros(K, n_modes, d) if zero_mean else mu0.float())
        self.mu.requires_grad_(not zero_mean)
        self.U = nn.Parameter(init_scale * torch.eye(d).expand(K, n_modes, d, d).clone()
                              + 0.01 * torch.randn(K, n_modes, d, d, generator=g))
        self.logpi = nn.Parameter(torch.zeros(K, n_modes))

    def forward(self, x: Tensor, s: Tensor, gamma: Tensor) -> Tensor:
        return moe_mog_score(x, self.A, self.mu, self.U, self.logpi, s, gamma)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def _linear(n_in: int, n_out: int, g: torch.Generator) -> nn.Linear:
    """``nn.Linear`` with PyTorch's default initialisation drawn from ``g`` (not the global generator,
    which concurrent requests share)."""
    layer = nn.utils.skip_init(nn.Linear, n_in, n_out)
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=g)
    nn.init.uniform_(layer.bias, -1 / math.sqrt(n_in), 1 / math.sqrt(n_in), generator=g)
    return layer


class LatentMLPScore(nn.Module):
    """Generic latent network: one MLP expert per subspace on ``(y_k, log gamma)`` predicting latent noise."""

    def __init__(self, A: Tensor, hidden: int = 128, seed: int = 0):
        super().__init__()
        K, D, d = A.shape
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("A", A.clone())
        self.nets = nn.ModuleList([nn.Sequential(_linear(d + 1, hidden, g), nn.SiLU(), _linear(hidden, hidden, g),
                                                 nn.SiLU(), _linear(hidden, d, g)) for _ in range(K)])

    def forward(self, x: Tensor, s: Tensor, gamma: Tensor) -> Tensor:
        g = gamma.reshape(-1, 1)
        y = torch.einsum("nD,kDd->nkd", x, self.A)
        r = (x.pow(2).sum(1, keepdim=True) - y.pow(2).sum(2)).clamp_min(0)
        w = torch.softmax(-r / (2 * g ** 2), 1)                             # n x K
        eps_lat = torch.stack([net(torch.cat([y[:, k], torch.log(g)], 1)) for k, net in enumerate(self.nets)], 1)
        perp = -(x[:, None, :] - torch.einsum("nkd,kDd->nkD", y, self.A)) / g[:, :, None] ** 2
        lat = -eps_lat / g[:, :, None]
        return (w[..., None] * (perp + torch.einsum("nkd,kDd->nkD", lat, self.A))).sum(1)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ------------------------------------------------------------------------------------ train / sample
def dsm_loss(model: Callable, x0: Tensor, gen: torch.Generator, gamma_min: float, gamma_max: float) -> Tensor:
    """``E || gamma s(s x0 + gamma eps) + eps ||^2`` (per-row squared norm, mean)."""
    n = len(x0)
    gam = gamma_min + (gamma_max - gamma_min) * torch.rand(n, generator=gen)
    s = torch.sqrt(1 - gam ** 2)
    eps = torch.randn(x0.shape, generator=gen)
    xt = s[:, None] * x0 + gam[:, None] * eps
    return (gam[:, None] * model(xt, s, gam) + eps).pow(2).sum(1).mean()


def train_score(model: nn.Module, data_fn: Callable[[int, torch.Generator], Tensor], *, steps: int, batch: int,
                lr: float, gamma_min: float, gamma_max: float, seed: int, log_every: int = 10,
                callback: Callable[[int, float], None] | None = None) -> list[float]:
    """Adam on the DSM loss with fresh data/noise each step; returns the loss every ``log_every`` steps."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    curve, acc = [], []
    for step in range(steps):
        loss = dsm_loss(model, data_fn(batch, gen), gen, gamma_min, gamma_max)
        opt.zero_grad()
        loss.backward()
        opt.step()
        acc.append(float(loss.detach()))
        if (step + 1) % log_every == 0 or step == steps - 1:
            curve.append(float(np.mean(acc)))
            acc = []
            if callback is not None:
                callback(step, curve[-1])
    return curve


@torch.no_grad()
def eval_loss(model: Callable, x0: Tensor, seed: int, gamma_min: float, gamma_max: float, reps: int = 4) -> float:
    gen = torch.Generator().manual_seed(seed)
    return float(np.mean([float(dsm_loss(model, x0, gen, gamma_min, gamma_max)) for _ in range(reps)]))


@torch.no_grad()
def ddim_sample(model: Callable, n: int, D: int, *, steps: int = 50, gamma_min: float = 0.01,
                gamma_max: float = 0.995, seed: int = 0) -> Tensor:
    """Deterministic DDIM on a geometric-in-SNR ``gamma`` grid; ``x_0 = (x + gamma^2 s)/s_t``."""
    gen = torch.Generator().manual_seed(seed)
    snr = np.geomspace((1 - gamma_max ** 2) / gamma_max ** 2, (1 - gamma_min ** 2) / gamma_min ** 2, steps)
    gams = [float(1 / math.sqrt(1 + q)) for q in snr]
    x = torch.randn(n, D, generator=gen)
    for i, g in enumerate(gams):
        s = math.sqrt(1 - g * g)
        sc = model(x, torch.full((n,), s), torch.full((n,), g))
        x0 = (x + g * g * sc) / s
        eps = -g * sc
        if i + 1 < len(gams):
            gn = gams[i + 1]
            x = math.sqrt(1 - gn * gn) * x0 + gn * eps
        else:
            x = x0
    return x


# ------------------------------------------------------------------------------------------- the lab
MODELS = ("moe_mog", "moe_gaussian", "latent_mlp")


@dataclass
class LabData:
    """What the three scores train on: the encoders ``A`` (K x D x d), a sampler of training rows, an
    evaluation set, data-dependent initial latent means and, for synthetic data, the ground truth."""

    A: Tensor
    sample: Callable[[int, torch.Generator], Tensor]
    x_eval: Tensor
    init_mu: Tensor
    truth: MoLRMoG | None = None
    info: dict = field(default_factory=dict)

    @property
    def D(self) -> int:
        return self.A.shape[1]


def init_means_from_data(X: Tensor, A: Tensor, n_modes: int, seed: int) -> Tensor:
    """Data-dependent init of the latent means: ``n_modes`` latents ``A_k^T x`` of samples whose nearest
    subspace is ``k``, chosen by farthest-point sampling (the paper does not state its initialisation)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.einsum("nD,kDd->nkd", X, A)
    k_near = (X.pow(2).sum(1, keepdim=True) - y.pow(2).sum(2)).argmin(1)
    out = []
    for k in range(A.shape[0]):
        idx = torch.nonzero(k_near == k).flatten()
        if len(idx) == 0:
            out.append(torch.randn(n_modes, A.shape[2], generator=g))
            continue
        Y = y[idx, k]
        chosen = [int(torch.randint(0, len(Y), (1,), generator=g))]
        while len(chosen) < n_modes:                                      # farthest-point (k-means++-like)
            dist = torch.cdist(Y, Y[chosen]).min(1).values
            chosen.append(int(dist.argmax()))
        out.append(Y[chosen])
    return torch.stack(out)


def synthetic_lab_data(K: int, D: int, d: int, n_modes: int, radius: float, spread: float, seed: int) -> LabData:
    """Eq. 2 data from :func:`make_molr_mog`, 2000 evaluation rows, means initialised from 50 samples per mode."""
    truth = make_molr_mog(K, D, d, n_modes, radius, spread, seed=seed)
    x_eval = truth.sample(2000, torch.Generator().manual_seed(seed + 5))[0]
    pool = truth.sample(50 * K * n_modes, torch.Generator().manual_seed(seed + 3))[0]
    return LabData(A=truth.A, sample=lambda n, g: truth.sample(n, g)[0], x_eval=x_eval,
                   init_mu=init_means_from_data(pool, truth.A, n_modes, seed), truth=truth)


def digits_lab_data(d: int, n_modes: int, seed: int) -> LabData:
    """The built-in digits, each class encoded by its top-``d`` (uncentred) PCA basis and decoded
    (``A_k A_k^T x``, K = 10); ``info["pca_energy_captured"]``: the mean fraction of a class's energy
    its basis keeps."""
    from ..data.digits import load_digits_split

    sp = load_digits_split()
    X = sp.train_images.reshape(len(sp.train_images), -1).float().clone()   # rewritten in place below
    y = sp.train_labels
    bases, init, energy = [], [], []
    g = torch.Generator().manual_seed(seed)
    for k in range(10):
        Xk = X[y == k]
        _, _, Vh = torch.linalg.svd(Xk, full_matrices=False)
        Ak = Vh[:d].T.contiguous()
        bases.append(Ak)
        idx = torch.randperm(len(Xk), generator=g)[:n_modes]
        init.append(Xk[idx] @ Ak)                                            # data-dependent init of the means
        energy.append(float((Xk @ Ak).pow(2).sum() / Xk.pow(2).sum()))
        X[y == k] = Xk @ Ak @ Ak.T      # encode with the class's linear encoder and decode (eq. 2 data)
    x_eval = X[torch.randperm(len(X), generator=torch.Generator().manual_seed(seed + 5))[:1000]]
    return LabData(A=torch.stack(bases), sample=lambda n, g: X[torch.randint(0, len(X), (n,), generator=g)],
                   x_eval=x_eval, init_mu=torch.stack(init), info={"pca_energy_captured": float(np.mean(energy))})


def lab_models(data: LabData, n_modes: int, mlp_hidden: int, seed: int) -> dict[str, nn.Module]:
    """The three scores of §4: MoE-latent MoG (eq. 3), MoE-latent Gaussian (MoLRG) and a latent MLP."""
    return {"moe_mog": MoEMoGScore(data.A, n_modes, init_mu=data.init_mu, init_scale=0.5, seed=seed),
            "moe_gaussian": MoEMoGScore(data.A, 1, zero_mean=True, init_scale=1.0, seed=seed),
            "latent_mlp": LatentMLPScore(data.A, mlp_hidden, seed=seed)}


def true_score(truth: MoLRMoG) -> Callable:
    """The exact score of eq. 2's ``p_t`` (eq. 3 with the true parameters)."""
    return lambda x, s, g: moe_mog_score(x, truth.A, truth.mu, truth.U, truth.logpi, s, g)


def sample_quality(S: Tensor, data: LabData, spread: float, d: int) -> dict:
    """Where samples land: distance to the nearest subspace and which one; with the ground truth also
    the distance to the nearest mode mean, the fraction within ``3 spread sqrt(d)`` and the modes covered."""
    A = data.A
    y = torch.einsum("nD,kDd->nkd", S, A)
    off = (S.pow(2).sum(1, keepdim=True) - y.pow(2).sum(2)).clamp_min(0).sqrt()   # distance to each subspace
    k = off.argmin(1)
    out = {"mean_dist_to_nearest_subspace": float(off.min(1).values.mean()),
           "subspace_histogram": torch.bincount(k, minlength=A.shape[0]).tolist()}
    if data.truth is not None:
        truth = data.truth
        means = torch.einsum("kDd,knd->knD", truth.A, truth.mu).reshape(-1, S.shape[1])
        dmin, idx = torch.cdist(S, means).min(1)
        cnt = torch.bincount(idx, minlength=len(means))
        out.update({"mean_dist_to_nearest_mode": float(dmin.mean()),
                    "fraction_within_3_spread_sqrt_d": float((dmin <= 3 * spread * math.sqrt(d)).float().mean()),
                    "modes_covered": int((cnt > 0).sum()), "modes_total": int(len(means))})
    return out
