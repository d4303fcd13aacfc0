"""Learning a Gaussian mixture with the DDPM objective (seed 001: Shah, Chen & Klivans 2023, as presented).

Data (eq. 1): ``q = 1/2 N(mu*, I) + 1/2 N(-mu*, I)`` in ``R^d``; OU forward process
``X_t = e^{-t} X_0 + sqrt(1 - e^{-2t}) Z_t``. The score of ``q_t`` is (Lemma 4)
``tanh(mu_t*^T x) mu_t* - x`` with ``mu_t* = e^{-t} mu*``, and the student is the same "one-layer tanh
network" ``s_mu(x) = tanh(mu_t^T x) mu_t - x``, ``mu_t = e^{-t} mu``. DDPM objective (eq. 5)::

    L_t(mu_t) = E || s_mu(X_t) + Z_t / sqrt(1 - e^{-2t}) ||^2 .

Gradient descent on ``L_t`` (in the variable ``mu_t``, as in the paper) is compared with

* large noise (Lemma 8 / C.3): ``-grad L_t ~ F = 2 mu_t* mu_t*^T mu_t - 3 ||mu_t||^2 mu_t`` with
  ``||-grad L_t - F|| <= 250 sqrt(d) ||mu_t||^5 + 10 ||mu_t||^3 ||mu_t*||^2``, i.e. GD ~ power iteration
  with the matrix ``(1 - 3 eta ||mu_t||^2) I + 2 eta mu_t* mu_t*^T`` whose top eigenvector is ``mu_t*``;
  the angle contracts (Lemma 9 / C.5).
  (The cubic coefficient is 2, not 3, see :func:`power_direction`; the lab reports both.)
* small noise (Lemma C.7/C.8): ``-grad L_t = M(mu_t) - mu_t + G(mu_t, mu_t*)`` where
  ``M(mu) = E_{x ~ N(mu*, I)} [tanh(mu^T x) x]`` is the population EM update (Fact 5, eq. 2), fixed
  points ``{-mu*, 0, mu*}``, and ``G`` is small; so a GD step is a gradient-EM step
  ``(1 - eta) mu + eta M(mu)``.

Population expectations are computed exactly (to quadrature precision): after Stein's lemma (Lemma F.1)
every expectation is ``E_{x ~ N(mu*, I)}[g(mu^T x) x]`` or ``E[g(mu^T x)]`` and only depends on the 2-D
plane spanned by ``mu*`` and ``mu``, where a tensor Gauss-Hermite rule is used. The empirical GD uses
fresh Monte-Carlo samples and autograd of eq. 5.

K components (option): means ``mu_k*`` with identity covariances and equal weights; score and student
``s(x) = sum_k softmax_k(mu_{k,t}^T x - ||mu_{k,t}||^2 / 2) mu_{k,t} - x`` (the soft-max form of the score of
eq. 6 in the slides; K = 2 symmetric gives the tanh form).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Iterator

import numpy as np
import torch

from ..errors import UserError, check_range

Tensor = torch.Tensor


# ------------------------------------------------------------------------------------------ basics
def ou_coeffs(t: float) -> tuple[float, float]:
    """``alpha_t = e^{-t}``, ``beta_t = sqrt(1 - e^{-2t})``."""
    return math.exp(-t), math.sqrt(-math.expm1(-2 * t))


def sample_mog(n: int, means: Tensor, gen: torch.Generator) -> Tensor:
    """``n`` samples of ``1/K sum_k N(mu_k, I)`` (``means``: K x d). For K = 2 pass ``[mu*, -mu*]``."""
    K, d = means.shape
    k = torch.randint(0, K, (n,), generator=gen)
    return means[k] + torch.randn(n, d, generator=gen, dtype=means.dtype)


def score_mog(x: Tensor, means_t: Tensor) -> Tensor:
    """Score of ``1/K sum_k N(m_k, I)`` at rows ``x``: ``sum_k softmax_k(m_k^T x - ||m_k||^2/2) m_k - x``."""
    logits = x @ means_t.T - 0.5 * means_t.pow(2).sum(1)
    return torch.softmax(logits, dim=1) @ means_t - x


def student_score(x: Tensor, mu_t: Tensor) -> Tensor:
    """``s(x) = tanh(mu_t^T x) mu_t - x`` (Lemma 4 form); ``mu_t`` a d-vector."""
    return torch.tanh(x @ mu_t)[:, None] * mu_t[None, :] - x


def ddpm_loss(mu_t: Tensor, x0: Tensor, z: Tensor, t: float, softmax: bool = False) -> Tensor:
    """Empirical eq. 5 on samples ``x0`` with noise ``z``. ``mu_t``: d (tanh student) or K x d (soft-max)."""
    a, b = ou_coeffs(t)
    xt = a * x0 + b * z
    s = score_mog(xt, mu_t) if softmax else student_score(xt, mu_t)
    return (s + z / b).pow(2).sum(1).mean()


def ddpm_grad(mu_t: Tensor, x0: Tensor, z: Tensor, t: float, softmax: bool = False) -> tuple[Tensor, float]:
    """Autograd gradient of ``L_t / 2`` w.r.t. ``mu_t`` (and ``L_t``).

    The half matches the paper's convention: Lemma C.2 writes ``-grad L_t = -E[J^T (s + Z/beta)]``
    without the factor 2, and every step size ``eta`` of the lemmas refers to that gradient.
    """
    m = mu_t.detach().clone().requires_grad_(True)
    loss = ddpm_loss(m, x0, z, t, softmax)
    (g,) = torch.autograd.grad(loss, m)
    return 0.5 * g.detach(), float(loss.detach())


def angle_deg(u: Tensor, v: Tensor) -> float:
    """Angle between the lines spanned by ``u`` and ``v`` (sign-invariant, as the mixture is symmetric)."""
    c = abs(float(torch.dot(u, v) / (u.norm() * v.norm()).clamp_min(1e-300)))
    return math.degrees(math.acos(min(1.0, c)))


def sign_dist(u: Tensor, v: Tensor) -> float:
    """``min(||u - v||, ||u + v||)``."""
    return min(float((u - v).norm()), float((u + v).norm()))


# ------------------------------------------------------------------------ population (quadrature)
class _Plane:
    """Tensor Gauss-Hermite rule for ``x ~ N(mu*, I)`` restricted to span(mu*, mu) (float64)."""

    def __init__(self, mu: Tensor, mu_star: Tensor, nodes: int = 96):
        mu, mu_star = mu.double(), mu_star.double()
        e1 = mu_star / mu_star.norm()
        r = mu - torch.dot(mu, e1) * e1
        if r.norm() < 1e-12 * max(1.0, float(mu.norm())):
            r = torch.zeros_like(e1)
            j = int(torch.argmin(e1.abs()))
            r[j] = 1.0
            r = r - torch.dot(r, e1) * e1
        e2 = r / r.norm()
        z, w = np.polynomial.hermite_e.hermegauss(nodes)        # weight exp(-z^2/2)
        w = w / w.sum()
        Z1, Z2 = np.meshgrid(z, z, indexing="ij")
        self.W = torch.tensor(np.outer(w, w).ravel())
        c1 = float(mu_star.norm()) + torch.tensor(Z1.ravel())    # coordinates of x in (e1, e2)
        c2 = torch.tensor(Z2.ravel())
        self.c1, self.c2, self.e1, self.e2 = c1, c2, e1, e2
        self.a = float(torch.dot(mu, e1)) * c1 + float(torch.dot(mu, e2)) * c2   # mu^T x

    def vec(self, g: Tensor) -> Tensor:
        """``E[g(mu^T x) x]`` for a per-node weight ``g``."""
        return (self.W * g * self.c1).sum() * self.e1 + (self.W * g * self.c2).sum() * self.e2

    def scal(self, g: Tensor) -> float:
        return float((self.W * g).sum())


def _tanh_derivs(a: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    th = torch.tanh(a)
    d1 = 1 - th ** 2
    d2 = -2 * th * d1
    return th, d1, d2


def population_neg_grad(mu_t: Tensor, mu_t_star: Tensor, nodes: int = 96) -> Tensor:
    """Exact ``-grad L_t(mu_t)`` in the paper's convention (gradient of ``L_t / 2``; Lemma C.2 after Stein,
    App. F.1)::

        E_{x~N(mu_t*, I)}[(tanh(a) - 1/2 tanh''(a) ||mu_t||^2 + tanh'(a) a) x] - mu_t - E[tanh'(a)] mu_t,  a = mu_t^T x
    """
    P = _Plane(mu_t, mu_t_star, nodes)
    th, d1, d2 = _tanh_derivs(P.a)
    m2 = float(mu_t.double().pow(2).sum())
    return P.vec(th - 0.5 * d2 * m2 + d1 * P.a) - mu_t.double() - P.scal(d1) * mu_t.double()


def em_update(mu: Tensor, mu_star: Tensor, nodes: int = 96) -> Tensor:
    """Population EM for the symmetric 2-mixture (Fact 5 / eq. 2): ``M(mu) = E_{x~N(mu*,I)}[tanh(mu^T x) x]``."""
    P = _Plane(mu, mu_star, nodes)
    return P.vec(torch.tanh(P.a))


def power_direction(mu_t: Tensor, mu_t_star: Tensor, cubic: float = 3.0) -> Tensor:
    """Lemma 8: ``F = 2 mu_t* mu_t*^T mu_t - 3 ||mu_t||^2 mu_t`` (``cubic`` = the 3).

    Finding (checked numerically, and by hand at ``mu_t* = 0`` where ``L_t/2 = ||mu||^2 E tanh^2(mu^T z)/2
    ~ ||mu||^4/2``): the exact cubic term is ``-2 ||mu_t||^2 mu_t``; the slides' Taylor step uses
    ``tanh a ~ a - (2/3) a^3`` instead of ``a - a^3/3``, which produces the 3. With ``cubic=2`` the relative
    error vanishes like ``||mu_t||^2``; with 3 it stays ~30% and Lemma C.3's bound fails once
    ``||mu_t*||`` is below ~0.1. Both matrices have top eigenvector ``mu_t*``, so the angle contraction
    (Lemma 9) is unaffected.
    """
    mu_t, s = mu_t.double(), mu_t_star.double()
    return 2 * s * torch.dot(s, mu_t) - cubic * mu_t.pow(2).sum() * mu_t


def lemma8_bound(mu_t: Tensor, mu_t_star: Tensor) -> float:
    """Lemma C.3: ``250 sqrt(d) ||mu_t||^5 + 10 ||mu_t||^3 ||mu_t*||^2``."""
    d = mu_t.numel()
    m, s = float(mu_t.norm()), float(mu_t_star.norm())
    return 250 * math.sqrt(d) * m ** 5 + 10 * m ** 3 * s ** 2


def g_remainder(mu_t: Tensor, mu_t_star: Tensor, nodes: int = 96) -> Tensor:
    """``G = -grad L_t - (M(mu_t) - mu_t)`` (Lemma C.7): what separates a GD step from a gradient-EM step."""
    return population_neg_grad(mu_t, mu_t_star, nodes) - (em_update(mu_t, mu_t_star, nodes) - mu_t.double())


# ------------------------------------------------------------------------------------------ the lab
@dataclass
class MogDDPMConfig:
    """Settings of the DDPM-on-MoG lab (seed 001). Defaults run in a few seconds."""

    d: int = 8
    mu_norm: float = 4.0          # ||mu*|| (well separated)
    t_large: float = 2.5          # large noise: ||mu_t*|| = e^{-t} ||mu*||
    t_small: float = 0.05         # small noise
    eta_large: float = 1.0
    eta_small: float = 0.5
    iters_large: int = 40
    iters_small: int = 30
    init_norm: float = 0.5        # ||mu_t|| at the start of the large-noise run, relative to ||mu_t*||
    n_batch: int = 8192           # fresh samples per empirical GD step
    K: int = 2                    # K > 2: soft-max student, empirical GD + sample EM only
    seed: int = 0

    def validate(self) -> None:
        check_range("d", self.d, 1, 256)
        check_range("mu_norm", self.mu_norm, 0.1, 20.0)
        check_range("t_large", self.t_large, 0.01, 10.0)
        check_range("t_small", self.t_small, 0.001, 10.0)
        check_range("eta_large", self.eta_large, 1e-4, 10.0)
        check_range("eta_small", self.eta_small, 1e-4, 2.0)
        check_range("iters_large", self.iters_large, 1, 2000)
        check_range("iters_small", self.iters_small, 1, 2000)
        check_range("init_norm", self.init_norm, 0.01, 10.0)
        check_range("n_batch", self.n_batch, 16, 200_000)
        check_range("K", self.K, 2, 10)
        check_range("seed", self.seed, 0, 2 ** 31 - 1)
        if self.t_small >= self.t_large:
            raise UserError("t_small must be smaller than t_large")


@dataclass
class MogDDPMResult:
    config: dict
    numbers: dict = field(default_factory=dict)
    curves: dict = field(default_factory=dict)   # name -> {"angle": [...], "dist": [...]} per iteration
    stage: str = ""
    done: bool = False
    state: dict = field(default_factory=dict)    # tensors between stages (not JSON)


def _true_means(cfg: MogDDPMConfig, g: torch.Generator) -> Tensor:
    if cfg.K == 2:
        u = torch.randn(cfg.d, generator=g, dtype=torch.float64)
        mu = u / u.norm() * cfg.mu_norm
        return torch.stack([mu, -mu])
    M = torch.randn(cfg.K, cfg.d, generator=g, dtype=torch.float64)
    return M / M.norm(dim=1, keepdim=True) * cfg.mu_norm


def _match_dist(est: Tensor, true: Tensor) -> float:
    from scipy.optimize import linear_sum_assignment

    C = torch.cdist(est.double(), true.double()).numpy()
    r, c = linear_sum_assignment(C)
    return float(C[r, c].mean())


def _run_two(cfg: MogDDPMConfig, res: MogDDPMResult, g: torch.Generator, means: Tensor) -> Iterator[MogDDPMResult]:
    mu_star = means[0]
    d = cfg.d
    # ---- stage 1: large noise, GD (empirical and population) vs power iteration, same init and eta
    aL, _ = ou_coeffs(cfg.t_large)
    s_L = aL * mu_star
    u = torch.randn(d, generator=g, dtype=torch.float64)
    init = u / u.norm() * cfg.init_norm * float(s_L.norm())
    emp, pop, pw = init.clone(), init.clone(), init.clone()
    curves = {k: {"angle": [angle_deg(init, s_L)], "dist": [sign_dist(init, s_L)]} for k in ("gd_empirical", "gd_population", "power_iteration")}
    rel_err, bound_ok, grad_cos, rel_err2 = [], [], [], []
    for it in range(cfg.iters_large):
        x0 = sample_mog(cfg.n_batch, means, g)
        z = torch.randn(cfg.n_batch, d, generator=g, dtype=torch.float64)
        ge, _ = ddpm_grad(emp, x0, z, cfg.t_large)
        emp = emp - cfg.eta_large * ge
        ng = population_neg_grad(pop, s_L)
        F = power_direction(pop, s_L)
        rel_err.append(float((ng - F).norm() / F.norm().clamp_min(1e-300)))
        F2 = power_direction(pop, s_L, cubic=2.0)
        rel_err2.append(float((ng - F2).norm() / F2.norm().clamp_min(1e-300)))
        grad_cos.append(float(torch.dot(ng, F) / (ng.norm() * F.norm()).clamp_min(1e-300)))
        bound_ok.append(float((ng - F).norm()) <= lemma8_bound(pop, s_L))
        pop = pop + cfg.eta_large * ng
        pw = pw + cfg.eta_large * power_direction(pw, s_L)
        for k, v in (("gd_empirical", emp), ("gd_population", pop), ("power_iteration", pw)):
            curves[k]["angle"].append(angle_deg(v, s_L))
            curves[k]["dist"].append(sign_dist(v, s_L))
    res.curves["large"] = curves
    res.numbers["large_noise"] = {
        "t": cfg.t_large, "norm_mu_t_star": float(s_L.norm()), "eta": cfg.eta_large,
        "angle_start_deg": curves["gd_population"]["angle"][0],
        "angle_end_deg": {k: c["angle"][-1] for k, c in curves.items()},
        "angle_monotone_population": all(b <= a + 1e-9 for a, b in zip(curves["gd_population"]["angle"], curves["gd_population"]["angle"][1:])),
        "grad_vs_power_rel_err_max": max(rel_err), "grad_vs_power_rel_err_first": rel_err[0],
        "grad_vs_power_cubic2_rel_err_first": rel_err2[0],
        "grad_vs_power_cos_min": min(grad_cos), "lemma8_bound_holds_all_steps": all(bound_ok),
        "final_norm_ratio_population": float(pop.norm() / s_L.norm()),
    }
    res.state["large_population_iterate"] = pop
    res.stage = "large"
    yield res
    # ---- stage 2: small noise from a random init, GD vs gradient EM (same eta) and EM
    aS, _ = ou_coeffs(cfg.t_small)
    s_S = aS * mu_star
    u = torch.randn(d, generator=g, dtype=torch.float64)
    init = u / u.norm() * float(s_S.norm()) * 0.5

    def small_stage(start: Tensor, tag: str) -> dict:
        emp, pop, gem, em = start.clone(), start.clone(), start.clone(), start.clone()
        cur = {k: {"angle": [angle_deg(start, s_S)], "dist": [sign_dist(start, s_S)]}
               for k in ("gd_empirical", "gd_population", "gradient_em", "em")}
        g_rel = []
        for it in range(cfg.iters_small):
            x0 = sample_mog(cfg.n_batch, means, g)
            z = torch.randn(cfg.n_batch, d, generator=g, dtype=torch.float64)
            ge, _ = ddpm_grad(emp, x0, z, cfg.t_small)
            emp = emp - cfg.eta_small * ge
            ng = population_neg_grad(pop, s_S)
            Mv = em_update(pop, s_S)
            g_rel.append(float((ng - (Mv - pop)).norm()) / max(sign_dist(pop, s_S), 1e-12))
            pop = pop + cfg.eta_small * ng
            gem = (1 - cfg.eta_small) * gem + cfg.eta_small * em_update(gem, s_S)
            em = em_update(em, s_S)
            for k, v in (("gd_empirical", emp), ("gd_population", pop), ("gradient_em", gem), ("em", em)):
                cur[k]["angle"].append(angle_deg(v, s_S))
                cur[k]["dist"].append(sign_dist(v, s_S))
        res.curves[tag] = cur
        return {"dist_start": cur["gd_population"]["dist"][0],
                "dist_end": {k: c["dist"][-1] for k, c in cur.items()},
                "G_over_dist_first_step": g_rel[0] if g_rel else None, "end": pop}

    out = small_stage(init, "small")
    out.pop("end")
    res.numbers["small_noise"] = {"t": cfg.t_small, "norm_mu_t_star": float(s_S.norm()), "eta": cfg.eta_small, **out}
    res.stage = "small"
    yield res
    # ---- two-stage: the large-noise estimate (rescaled to time t_small) warm-starts the small-noise GD
    # the population large-noise iterate, mapped to time 0 and then to t_small
    mu0 = res.state["large_population_iterate"] / aL
    warm = mu0 * aS
    out2 = small_stage(warm, "two_stage")
    out2.pop("end")
    res.numbers["two_stage"] = {"warm_start_angle_deg": angle_deg(warm, s_S), **out2,
                                "final_dist_time0": out2["dist_end"]["gd_population"] / aS}
    res.numbers["em_fixed_points_residual"] = {
        "mu*": float((em_update(mu_star, mu_star) - mu_star).norm()),
        "-mu*": float((em_update(-mu_star, mu_star) + mu_star).norm()),
        "0": float(em_update(torch.zeros(d, dtype=torch.float64), mu_star).norm())}
    res.stage = "two_stage"
    yield res


def _run_k(cfg: MogDDPMConfig, res: MogDDPMResult, g: torch.Generator, means: Tensor) -> Iterator[MogDDPMResult]:
    """K components: empirical GD with the soft-max student at large then small noise (two-stage), vs EM
    on samples from a random start."""
    K, d = means.shape
    out = {}
    cur: dict = {"gd_two_stage": {"dist": []}, "em_samples": {"dist": []}}
    aL, _ = ou_coeffs(cfg.t_large)
    aS, _ = ou_coeffs(cfg.t_small)
    est = torch.randn(K, d, generator=g, dtype=torch.float64) * cfg.init_norm * aL * cfg.mu_norm / math.sqrt(d)
    for it in range(cfg.iters_large):
        x0 = sample_mog(cfg.n_batch, means, g)
        z = torch.randn(cfg.n_batch, d, generator=g, dtype=torch.float64)
        ge, _ = ddpm_grad(est, x0, z, cfg.t_large, softmax=True)
        est = est - cfg.eta_large * ge
        cur["gd_two_stage"]["dist"].append(_match_dist(est / aL, means))
    est = est / aL * aS
    out["dist_after_large"] = cur["gd_two_stage"]["dist"][-1]
    res.curves["K"] = cur
    res.stage = "large"
    yield res
    for it in range(cfg.iters_small):
        x0 = sample_mog(cfg.n_batch, means, g)
        z = torch.randn(cfg.n_batch, d, generator=g, dtype=torch.float64)
        ge, _ = ddpm_grad(est, x0, z, cfg.t_small, softmax=True)
        est = est - cfg.eta_small * ge
        cur["gd_two_stage"]["dist"].append(_match_dist(est / aS, means))
    em = torch.randn(K, d, generator=g, dtype=torch.float64) * cfg.mu_norm / math.sqrt(d)
    for it in range(cfg.iters_large + cfg.iters_small):
        x = sample_mog(cfg.n_batch, means, g)
        w = torch.softmax(x @ em.T - 0.5 * em.pow(2).sum(1), dim=1)
        em = (w.T @ x) / w.sum(0)[:, None].clamp_min(1e-12)
        cur["em_samples"]["dist"].append(_match_dist(em, means))
    out.update({"dist_end_gd_two_stage": cur["gd_two_stage"]["dist"][-1],
                "dist_end_em_random_init": cur["em_samples"]["dist"][-1], "K": K})
    res.numbers["K_components"] = out
    res.stage = "small"
    yield res


def iter_mog_ddpm(cfg: MogDDPMConfig) -> Iterator[MogDDPMResult]:
    """Run the lab stage by stage (large noise, small noise, two-stage), yielding the growing result."""
    cfg.validate()
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(cfg.seed)
    means = _true_means(cfg, g)
    res = MogDDPMResult(config=asdict(cfg))
    res.numbers["mu_star"] = means[0].tolist()
    if cfg.K == 2:
        yield from _run_two(cfg, res, g, means)
    else:
        yield from _run_k(cfg, res, g, means)
    res.numbers["wall_s"] = round(time.perf_counter() - t0, 3)
    res.done, res.stage = True, "done"
    yield res


def run_mog_ddpm(cfg: MogDDPMConfig | None = None) -> MogDDPMResult:
    res = None
    for res in iter_mog_ddpm(cfg or MogDDPMConfig()):
        pass
    return res
