"""Network denoisers on MoLRG data: the generalization (GL) score and the rank-vs-SNR experiment.

Wang et al. 2024 (arXiv:2409.02426): §4.1 (Fig. 5a, eq. 21), App. D.2 / E.2 (Fig. 3b, Fig. 7a).

* :func:`gl_score` -- eq. 21: ``GL = D(x_gen) / D(x_MoLRG)`` with
  ``D(x) = sum_i min_{j != i} ||x_i - x_j||`` (``~0``: generated samples collapse onto the
  training data, memorisation; ``~1``: they spread like fresh MoLRG samples, generalisation).
* :class:`BatchedMLP` -- a small MLP denoiser with EDM preconditioning (Karras et al. 2022),
  standing in for the paper's DDPM++ U-Net (a CPU-sized network; Fig. 5a's claim is about the
  ratio ``N_k / d_k``, not the architecture). ``E`` independent networks are held as stacked
  weights and trained *together* as one tensor program (each on its own training set), so a
  whole GL curve is one batched training run.
* :func:`train_denoisers` -- Algorithm 1 with Adam (App. E.2: lr 1e-3, batch 64) and the EDM
  loss: ``sigma ~ logNormal(-1.2, 1.2)``, weight ``(sigma^2 + sd^2) / (sigma sd)^2``.
* :func:`edm_sample` -- the 18-step Heun sampler of EDM (``s_t = 1``, ``gamma_t = sigma``), for
  the networks and for the closed-form posterior mean.
* :func:`gl_curve` -- Fig. 5a for one ``d_k``: ``K`` components in ``R^n``, ``N_k = ratio * d_k``
  training samples per component, one network per ratio (trained at once).
* :func:`iter_rank_vs_snr` -- Fig. 3b / 7a: numerical rank (eq. 46) / n of the Jacobian of (i)
  the closed-form posterior mean (Lemma 1), (ii) the low-rank DAE (eq. 9) with bases trained by
  SGD (Algorithm 1, :func:`~lowdim_app.synthetic.dae.train_dae`), (iii) a trained MLP, averaged
  along EDM Heun sampling trajectories of the closed-form denoiser, with Lemma 2's bounds
  ``min_k d_k / n <= rank / n <= sum_k d_k / n``.

The experiments take the labs' declared settings (:mod:`lowdim_app.features.gl_score`,
:mod:`lowdim_app.features.molrg_rank`, or any object with the same attributes).
"""
from __future__ import annotations

import math
from typing import Callable, Iterator

import numpy as np
import torch

from .dae import default_dae_config, train_dae
from ..metrics import numerical_rank
from .molrg import MoLRG, edm_sigmas, lemma2_bounds

__all__ = ["gl_distance", "gl_score", "BatchedMLP", "train_denoisers", "edm_sample", "gl_curve",
           "iter_rank_vs_snr", "rank_curves", "DAE_CURVE", "POSTERIOR_CURVE", "mlp_curve_name"]


# ----------------------------------------------------------------------------- eq. 21
def gl_distance(x: torch.Tensor) -> torch.Tensor:
    """``D(x) = sum_i min_{j != i} ||x_i - x_j||`` for ``x (..., N, n)`` -> ``(...)``."""
    d = torch.cdist(x, x)
    d = d + torch.diag_embed(torch.full(d.shape[:-1], float("inf"), dtype=d.dtype))
    return d.amin(-1).sum(-1)


def gl_score(x_gen: torch.Tensor, x_ref: torch.Tensor) -> torch.Tensor:
    """Eq. 21: ``D(x_gen) / D(x_ref)`` (batched over leading dimensions; same ``N`` in both)."""
    return gl_distance(x_gen) / gl_distance(x_ref)


# ----------------------------------------------------------------------------- batched MLP
PARAMETERIZATIONS = ("edm", "sample")


class BatchedMLP(torch.nn.Module):
    """``E`` independent MLP denoisers ``D_e(x; sigma)``.

    ``D(x; sigma) = c_skip x + c_out F([c_in x, emb(log sigma / 4)])`` with ``c_in = 1 / sqrt(sigma^2 + sd^2)``
    and, for ``param="edm"`` (EDM preconditioning), ``c_skip = sd^2 / (sigma^2 + sd^2)``,
    ``c_out = sigma sd / sqrt(sigma^2 + sd^2)``; for ``param="sample"`` (the network predicts the clean
    sample), ``c_skip = 0``, ``c_out = sd``. ``F`` is ``depth`` SiLU layers of ``width``.
    Input ``x (E, M, n)``, ``sigma (E, M)``.

    The parameterization decides whether the Jacobian can be low-rank at high SNR: with EDM's skip,
    ``J = c_skip I + ...`` is the identity plus the network's correction, and ``F`` would need a slope of
    order ``sd / sigma`` to cancel it off the data's subspaces (at sigma = 0.002 the MLP's rank / n was 0.98);
    predicting the sample has no skip, and the rank stays inside Lemma 2's bounds at every SNR of Fig. 3b
    (``bench/molrg_parameterization.py``).
    """

    def __init__(self, E: int, n: int, width: int = 128, depth: int = 3, sigma_data: float = 0.5,
                 n_freq: int = 8, generator: torch.Generator | None = None, param: str = "edm"):
        super().__init__()
        if param not in PARAMETERIZATIONS:
            raise ValueError(f"param must be one of {PARAMETERIZATIONS}, got {param!r}")
        self.E, self.n, self.sigma_data, self.n_freq, self.param = E, n, float(sigma_data), n_freq, param
        sizes = [n + 2 * n_freq] + [width] * depth + [n]
        self.weights = torch.nn.ParameterList()
        self.biases = torch.nn.ParameterList()
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            w = torch.randn(E, a, b, generator=generator) / math.sqrt(a)
            if i == len(sizes) - 2:
                w = w * 0.1
            self.weights.append(torch.nn.Parameter(w))
            self.biases.append(torch.nn.Parameter(torch.zeros(E, 1, b)))
        self.register_buffer("freqs", torch.arange(1, n_freq + 1, dtype=torch.float32) * math.pi / 2)

    def coefficients(self, sig: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(c_in, c_skip, c_out)`` at noise levels ``sig``."""
        sd = self.sigma_data
        c_in = 1 / torch.sqrt(sig ** 2 + sd ** 2)
        if self.param == "sample":
            return c_in, torch.zeros_like(sig), torch.full_like(sig, sd)
        return c_in, sd ** 2 / (sig ** 2 + sd ** 2), sig * sd / torch.sqrt(sig ** 2 + sd ** 2)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sig = sigma.unsqueeze(-1)
        c_in, c_skip, c_out = self.coefficients(sig)
        ang = (torch.log(sig) / 4) * self.freqs
        h = torch.cat([c_in * x, torch.sin(ang), torch.cos(ang)], -1)
        L = len(self.weights)
        for i in range(L):
            h = torch.baddbmm(self.biases[i], h, self.weights[i])
            if i < L - 1:
                h = torch.nn.functional.silu(h)
        return c_skip * x + c_out * h

    def member(self, e: int) -> Callable[[torch.Tensor, float], torch.Tensor]:
        """Denoiser of member ``e`` for a single input ``x (n,)`` (for Jacobians)."""
        def f(x, sigma):
            s = torch.full((1, 1), float(sigma), dtype=x.dtype)
            xs = x.reshape(1, 1, -1).expand(self.E, 1, -1)
            return self.forward(xs, s.expand(self.E, 1))[e, 0]
        return f


def train_denoisers(X: torch.Tensor, n_valid: torch.Tensor, steps: int = 2000, lr: float = 1e-3,
                    batch: int = 64, width: int = 128, depth: int = 3, seed: int = 0,
                    callback: Callable[[int, torch.Tensor], None] | None = None,
                    callback_every: int = 200, should_stop: Callable[[], bool] | None = None,
                    P_mean: float = -1.2, P_std: float = 1.2, ema: float = 0.999,
                    cosine: bool = True, param: str = "edm") -> BatchedMLP:
    """Train ``E`` MLP denoisers at once; member ``e`` sees the first ``n_valid[e]`` rows of
    ``X[e]`` (``X (E, N, n)``). Adam on the DAE loss (Algorithm 1 / App. E.2) weighted by
    ``1 / c_out^2`` (EDM's weight for ``param="edm"``; the plain loss on the sample for ``"sample"``),
    with a cosine learning-rate decay and an exponential moving average of the weights (the
    returned network; ``ema = 0`` returns the raw weights) as in EDM's training recipe."""
    g = torch.Generator().manual_seed(int(seed))
    E, N, n = X.shape
    Xf = X.to(torch.float32)
    nv = n_valid.to(torch.long).clamp(min=1)
    sd = float(torch.sqrt((Xf ** 2).sum(-1).sum(-1) / (nv * n)).mean()) or 0.5
    net = BatchedMLP(E, n, width, depth, sigma_data=sd, generator=g, param=param)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, int(steps)), eta_min=lr * 0.02)
             if cosine else None)
    avg = [p.detach().clone() for p in net.parameters()] if ema > 0 else None
    bidx = torch.arange(E).unsqueeze(-1)
    for it in range(int(steps)):
        i = (torch.rand(E, batch, generator=g) * nv.unsqueeze(-1)).long()
        x0 = Xf[bidx, i]
        sigma = torch.exp(P_mean + P_std * torch.randn(E, batch, generator=g))
        eps = torch.randn(E, batch, n, generator=g)
        out = net(x0 + sigma.unsqueeze(-1) * eps, sigma)
        wgt = 1 / net.coefficients(sigma)[2] ** 2     # EDM: (sigma^2 + sd^2) / (sigma sd)^2
        loss_e = (wgt * ((out - x0) ** 2).mean(-1)).mean(-1)
        opt.zero_grad(set_to_none=True)
        loss_e.sum().backward()
        opt.step()
        if sched is not None:
            sched.step()
        if avg is not None:
            beta = min(float(ema), (1 + it) / (10 + it))
            with torch.no_grad():
                for a, p in zip(avg, net.parameters()):
                    a.lerp_(p.detach(), 1 - beta)
        if callback is not None and (it + 1) % callback_every == 0:
            callback(it + 1, loss_e.detach())
        if should_stop is not None and (it + 1) % 20 == 0 and should_stop():   # Cancel within ~20 steps
            break
    if avg is not None:
        with torch.no_grad():
            for a, p in zip(avg, net.parameters()):
                p.copy_(a)
    return net.eval()


@torch.no_grad()
def edm_sample(denoise: Callable[[torch.Tensor, float], torch.Tensor], shape, sigmas: torch.Tensor,
               generator: torch.Generator | None = None, dtype=torch.float32,
               record: bool = False):
    """EDM Heun sampler (s_t = 1): ``x_{i+1} = x_i + (sigma_{i+1} - sigma_i) (d_i + d'_i) / 2``
    with ``d = (x - D(x; sigma)) / sigma``; last step to 0 is Euler. ``denoise(x, sigma)`` maps
    ``shape`` tensors. Returns the samples, and with ``record=True`` also the list of the
    ``(x_i, sigma_i)`` visited."""
    sig = [float(s) for s in sigmas] + [0.0]
    x = torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype) * sig[0]
    visited = []
    for a, b in zip(sig[:-1], sig[1:]):
        if record:
            visited.append((x.clone(), a))
        d = (x - denoise(x, a)) / a
        xn = x + (b - a) * d
        if b > 0:
            d2 = (xn - denoise(xn, b)) / b
            xn = x + (b - a) * 0.5 * (d + d2)
        x = xn
    return (x, visited) if record else x


# ----------------------------------------------------------------------------- Fig. 5a
def gl_curve(st, d: int, should_stop: Callable[[], bool] | None = None,
             on_step: Callable[[int], None] | None = None) -> list[dict] | None:
    """Fig. 5a for one ``d_k = d``: train one network per ratio on ``N_k = round(ratio d)`` samples
    per component (batched), sample ``st.n_eval`` points with the EDM Heun sampler, and score them
    against ``st.n_eval`` fresh MoLRG samples (eq. 21). Returns one row per ratio
    (``d, N_k, ratio, gl, train_loss``), or ``None`` when ``should_stop()`` ended the training.

    Uses ``st.n, K, ratios, steps, lr, batch, width, depth, p_mean, p_std, n_eval,
    sample_steps, seed``; the data of ``d`` depend on ``(seed, d)`` only. ``on_step(it)`` every
    ``steps // 20`` Adam steps (progress)."""
    if st.K * d > st.n:
        raise ValueError(f"K * d = {st.K * d} exceeds n = {st.n}")
    seed = int(np.random.SeedSequence([st.seed, d, 5]).generate_state(1)[0])
    m = MoLRG.random(st.n, [d] * st.K, seed=seed)
    g = torch.Generator().manual_seed(seed)
    Nks = [max(1, int(round(r * d))) for r in st.ratios]
    E, Nmax = len(Nks), st.K * max(Nks)
    X = torch.zeros(E, Nmax, st.n)
    for e, Nk in enumerate(Nks):   # N_k samples per component (balanced)
        a = torch.randn(st.K, Nk, d, generator=g, dtype=torch.float64)
        xs = torch.cat([a[k] @ m.bases[k].T for k in range(st.K)], 0)
        X[e, :xs.shape[0]] = xs.float()
    nv = torch.tensor([st.K * Nk for Nk in Nks])
    losses = {}
    net = train_denoisers(X, nv, st.steps, st.lr, st.batch, st.width, st.depth, seed=seed,
                          callback=lambda it, loss: (losses.__setitem__("last", loss),
                                                     on_step(it) if on_step is not None else None),
                          callback_every=max(1, st.steps // 20), should_stop=should_stop,
                          P_mean=st.p_mean, P_std=st.p_std)
    if should_stop is not None and should_stop():
        return None
    ones = torch.ones(E, st.n_eval)
    xg = edm_sample(lambda x, s: net(x, ones * s), (E, st.n_eval, st.n), edm_sigmas(st.sample_steps),
                    generator=g)
    xr, _ = m.sample(st.n_eval, generator=g)
    gl = gl_score(xg.double(), xr.unsqueeze(0).expand(E, -1, -1))
    tl = losses.get("last", torch.full((E,), float("nan")))
    return [{"d": d, "N_k": Nk, "ratio": Nk / d, "gl": float(gl[e]), "train_loss": float(tl[e])}
            for e, Nk in enumerate(Nks)]


# ----------------------------------------------------------------------------- Fig. 3b / 7a
POSTERIOR_CURVE = "posterior mean (Lemma 1)"
DAE_CURVE = "low-rank DAE (eq. 9, SGD)"


def mlp_curve_name(width: int, steps: int, batch: int, param: str = "edm") -> str:
    """The MLP curve's label: its width, parameterization and training budget in kimg (steps x batch / 1000,
    Fig. 7a)."""
    what = "predicts x0" if param == "sample" else "EDM preconditioning"
    return f"MLP denoiser ({what}, width {width}, {steps * batch / 1000:g} kimg)"


def rank_curves(st) -> list[str]:
    """The curves :func:`iter_rank_vs_snr` computes for ``st``, in order: the closed form, the
    low-rank DAE (equal ``d_k`` and ``dae_iters > 0``), the MLP (``mlp_steps > 0``)."""
    names = [POSTERIOR_CURVE]
    if len(set(st.dims)) == 1 and st.dae_iters > 0:
        names.append(DAE_CURVE)
    if st.mlp_steps > 0:
        names.append(mlp_curve_name(st.mlp_width, st.mlp_steps, st.mlp_batch, getattr(st, "mlp_param", "edm")))
    return names


def _traj_rank(jac: Callable[[torch.Tensor, float], torch.Tensor], visited, eta) -> list[float]:
    out = []
    for x, s in visited:
        J = jac(x, s)
        out.append(float(numerical_rank(torch.linalg.svdvals(J), eta).double().mean()))
    return out


def iter_rank_vs_snr(st, should_stop: Callable[[], bool] | None = None) -> Iterator[dict]:
    """Mean numerical rank / n of the denoiser Jacobian along EDM Heun trajectories of the
    closed-form posterior mean (``st.trajectories`` starts), at each of the ``st.steps`` noise
    levels, for the closed form, the trained low-rank DAE (eq. 9, bases by Algorithm 1; equal
    ``d_k`` and ``st.dae_iters > 0`` only) and, when ``st.mlp_steps > 0``, a trained MLP.

    Yields a snapshot after each model: ``sigma``, ``snr``, ``bounds`` (Lemma 2 as ratios) and
    ``models`` (curve name -> rank / n per noise level). Ends early when ``should_stop()``."""
    m = MoLRG.random(st.n, list(st.dims), seed=st.seed)
    g = torch.Generator().manual_seed(st.seed + 1)
    X, _ = m.sample(st.N, generator=g)
    sigmas = edm_sigmas(st.steps)
    post = lambda x, s: m.posterior_mean(x, 1.0, s)  # noqa: E731  (s_t = 1, gamma_t = sigma)
    _, visited = edm_sample(post, (st.trajectories, st.n), sigmas, generator=g, dtype=torch.float64,
                            record=True)
    out = {"sigma": sigmas.tolist(), "snr": (1 / sigmas).tolist(),
           "bounds": [b / st.n for b in lemma2_bounds(list(st.dims))], "models": {}}

    def snapshot():
        return {**out, "models": dict(out["models"])}

    def stopped():
        return should_stop is not None and should_stop()

    out["models"][POSTERIOR_CURVE] = [
        r / st.n for r in _traj_rank(lambda x, s: m.posterior_jacobian(x, 1.0, s), visited, st.eta)]
    yield snapshot()
    K = len(st.dims)
    if DAE_CURVE in rank_curves(st):
        if stopped():
            return
        # Algorithm 1 on the N samples, then the DAE's Jacobian in closed form (eq. 9 = Lemma 1's form)
        cfg = default_dae_config(K, "hardmax" if K > 1 else "softmax")
        cfg.iters = int(st.dae_iters)
        Ut = torch.stack(m.bases).unsqueeze(0)
        U = train_dae(X.unsqueeze(0), K, st.dims[0], cfg, U_true=Ut, generator=g, N_k=max(1, st.N // K))[0]
        md = MoLRG([U[k] for k in range(K)], m.weights)
        out["models"][DAE_CURVE] = [
            r / st.n for r in _traj_rank(lambda x, s: md.posterior_jacobian(x, 1.0, s), visited, st.eta)]
        yield snapshot()
    if st.mlp_steps > 0:
        if stopped():
            return
        net = train_denoisers(X.float().unsqueeze(0), torch.tensor([st.N]), steps=st.mlp_steps, lr=st.mlp_lr,
                              batch=st.mlp_batch, width=st.mlp_width, depth=st.mlp_depth, seed=st.seed,
                              should_stop=should_stop, P_mean=st.p_mean, P_std=st.p_std,
                              param=getattr(st, "mlp_param", "edm"))
        if stopped():
            return
        f = net.member(0)
        for p in net.parameters():
            p.requires_grad_(False)

        def jac(x, s):
            return torch.stack([torch.func.jacrev(lambda z: f(z, s))(xi.float()) for xi in x]).double()

        out["models"][mlp_curve_name(st.mlp_width, st.mlp_steps, st.mlp_batch, getattr(st, "mlp_param", "edm"))] = [
            r / st.n for r in _traj_rank(jac, visited, st.eta)]
        yield snapshot()
