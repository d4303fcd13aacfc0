"""Learning a Gaussian mixture with the DDPM objective (Shah et al. 2023, arXiv:2307.01178).

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
``s(x) = sum_k softmax_k(mu_{k,t}^T x - ||mu_{k,t}||^2 / 2) mu_{k,t} - x`` (the soft-max form of the
mixture score, eq. 6; K = 2 symmetric gives the tanh form).

The lab's stages (:func:`large_noise_run`, :func:`small_noise_run`, :func:`k_large_noise_run`,
:func:`k_small_noise_run`) take a shared generator, so a run draws the same numbers stage by stage.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

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
    ~ ||mu||^4/2``): the exact cubic term is ``-2 ||mu_t||^2 mu_t``; the Taylor step behind the stated lemma uses
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


# ------------------------------------------------------------------------------------------ the lab
Step = Callable[[int], None] | None     # called with each iteration index (progress, cancellation)
GD_LINES = ("gd_empirical", "gd_population")


def true_means(K: int, d: int, mu_norm: float, g: torch.Generator) -> Tensor:
    """``K x d`` means of norm ``mu_norm``: ``[mu*, -mu*]`` for K = 2 (eq. 1), random directions otherwise."""
    if K == 2:
        u = torch.randn(d, generator=g, dtype=torch.float64)
        mu = u / u.norm() * mu_norm
        return torch.stack([mu, -mu])
    M = torch.randn(K, d, generator=g, dtype=torch.float64)
    return M / M.norm(dim=1, keepdim=True) * mu_norm


def match_dist(est: Tensor, true: Tensor) -> float:
    """Mean distance between estimated and true means under the best one-to-one matching."""
    from scipy.optimize import linear_sum_assignment

    C = torch.cdist(est.double(), true.double()).numpy()
    r, c = linear_sum_assignment(C)
    return float(C[r, c].mean())


def random_start(d: int, norm: float, g: torch.Generator) -> Tensor:
    u = torch.randn(d, generator=g, dtype=torch.float64)
    return u / u.norm() * norm


def _track(curves: dict, points: dict, target: Tensor) -> None:
    for k, v in points.items():
        curves[k]["angle"].append(angle_deg(v, target))
        curves[k]["dist"].append(sign_dist(v, target))


def large_noise_run(means: Tensor, *, t: float, eta: float, iters: int, init_norm: float, n_batch: int,
                    g: torch.Generator, step: Step = None) -> tuple[dict, dict, Tensor]:
    """Large noise: GD on eq. 5 (empirical and population) vs power iteration with ``F`` (Lemma 8),
    same start (norm ``init_norm ||mu_t*||``) and step ``eta``; the angle contracts (Lemma 9).

    Returns the numbers, the curves (angle and distance per iteration) and the final population iterate."""
    mu_star, d = means[0], means.shape[1]
    a, _ = ou_coeffs(t)
    s_t = a * mu_star
    init = random_start(d, init_norm * float(s_t.norm()), g)
    emp, pop, pw = init.clone(), init.clone(), init.clone()
    curves = {k: {"angle": [angle_deg(init, s_t)], "dist": [sign_dist(init, s_t)]}
              for k in (*GD_LINES, "power_iteration")}
    rel_err, bound_ok, grad_cos, rel_err2 = [], [], [], []
    for it in range(iters):
        if step is not None:
            step(it)
        x0 = sample_mog(n_batch, means, g)
        z = torch.randn(n_batch, d, generator=g, dtype=torch.float64)
        ge, _ = ddpm_grad(emp, x0, z, t)
        emp = emp - eta * ge
        ng = population_neg_grad(pop, s_t)
        F = power_direction(pop, s_t)
        rel_err.append(float((ng - F).norm() / F.norm().clamp_min(1e-300)))
        F2 = power_direction(pop, s_t, cubic=2.0)
        rel_err2.append(float((ng - F2).norm() / F2.norm().clamp_min(1e-300)))
        grad_cos.append(float(torch.dot(ng, F) / (ng.norm() * F.norm()).clamp_min(1e-300)))
        bound_ok.append(float((ng - F).norm()) <= lemma8_bound(pop, s_t))
        pop = pop + eta * ng
        pw = pw + eta * power_direction(pw, s_t)
        _track(curves, {"gd_empirical": emp, "gd_population": pop, "power_iteration": pw}, s_t)
    ang = curves["gd_population"]["angle"]
    numbers = {
        "t": t, "norm_mu_t_star": float(s_t.norm()), "eta": eta,
        "angle_start_deg": ang[0],
        "angle_end_deg": {k: c["angle"][-1] for k, c in curves.items()},
        "angle_monotone_population": all(b <= a + 1e-9 for a, b in zip(ang, ang[1:])),
        "grad_vs_power_rel_err_max": max(rel_err), "grad_vs_power_rel_err_first": rel_err[0],
        "grad_vs_power_cubic2_rel_err_first": rel_err2[0],
        "grad_vs_power_cos_min": min(grad_cos), "lemma8_bound_holds_all_steps": all(bound_ok),
        "final_norm_ratio_population": float(pop.norm() / s_t.norm()),
    }
    return numbers, curves, pop


def small_noise_run(means: Tensor, start: Tensor, *, t: float, eta: float, iters: int, n_batch: int,
                    g: torch.Generator, step: Step = None) -> tuple[dict, dict]:
    """Small noise from ``start``: GD on eq. 5 (empirical and population) vs gradient EM
    ``(1 - eta) mu + eta M(mu)`` and EM (Lemma C.7/C.8); ``G / dist`` measures what separates them."""
    mu_star, d = means[0], means.shape[1]
    a, _ = ou_coeffs(t)
    s_t = a * mu_star
    emp, pop, gem, em = start.clone(), start.clone(), start.clone(), start.clone()
    curves = {k: {"angle": [angle_deg(start, s_t)], "dist": [sign_dist(start, s_t)]}
              for k in (*GD_LINES, "gradient_em", "em")}
    g_rel = []
    for it in range(iters):
        if step is not None:
            step(it)
        x0 = sample_mog(n_batch, means, g)
        z = torch.randn(n_batch, d, generator=g, dtype=torch.float64)
        ge, _ = ddpm_grad(emp, x0, z, t)
        emp = emp - eta * ge
        ng = population_neg_grad(pop, s_t)
        Mv = em_update(pop, s_t)
        g_rel.append(float((ng - (Mv - pop)).norm()) / max(sign_dist(pop, s_t), 1e-12))
        pop = pop + eta * ng
        gem = (1 - eta) * gem + eta * em_update(gem, s_t)
        em = em_update(em, s_t)
        _track(curves, {"gd_empirical": emp, "gd_population": pop, "gradient_em": gem, "em": em}, s_t)
    numbers = {"dist_start": curves["gd_population"]["dist"][0],
               "dist_end": {k: c["dist"][-1] for k, c in curves.items()},
               "G_over_dist_first_step": g_rel[0] if g_rel else None}
    return numbers, curves


def em_fixed_point_residuals(mu_star: Tensor) -> dict:
    """``||M(v) - v||`` at the EM fixed points ``{mu*, -mu*, 0}`` (Fact 5)."""
    zero = torch.zeros(mu_star.numel(), dtype=torch.float64)
    return {"mu*": float((em_update(mu_star, mu_star) - mu_star).norm()),
            "-mu*": float((em_update(-mu_star, mu_star) + mu_star).norm()),
            "0": float(em_update(zero, mu_star).norm())}


def k_large_noise_run(means: Tensor, *, t: float, eta: float, iters: int, init_norm: float, mu_norm: float,
                      n_batch: int, g: torch.Generator, step: Step = None) -> tuple[Tensor, list[float]]:
    """K components, large noise: empirical GD with the soft-max student from a small random start.
    Returns the estimate at time ``t`` and the matched distance (at time 0) per iteration."""
    K, d = means.shape
    a, _ = ou_coeffs(t)
    est = torch.randn(K, d, generator=g, dtype=torch.float64) * init_norm * a * mu_norm / math.sqrt(d)
    dist = []
    for it in range(iters):
        if step is not None:
            step(it)
        x0 = sample_mog(n_batch, means, g)
        z = torch.randn(n_batch, d, generator=g, dtype=torch.float64)
        ge, _ = ddpm_grad(est, x0, z, t, softmax=True)
        est = est - eta * ge
        dist.append(match_dist(est / a, means))
    return est, dist


def k_small_noise_run(means: Tensor, est: Tensor, *, t: float, eta: float, iters: int, em_iters: int,
                      mu_norm: float, n_batch: int, g: torch.Generator,
                      step: Step = None) -> tuple[list[float], list[float]]:
    """K components, small noise: GD continued from ``est`` (at time ``t``), then ``em_iters`` EM steps on
    fresh samples from a random start. Returns both matched-distance curves (at time 0)."""
    K, d = means.shape
    a, _ = ou_coeffs(t)
    gd = []
    for it in range(iters):
        if step is not None:
            step(it)
        x0 = sample_mog(n_batch, means, g)
        z = torch.randn(n_batch, d, generator=g, dtype=torch.float64)
        ge, _ = ddpm_grad(est, x0, z, t, softmax=True)
        est = est - eta * ge
        gd.append(match_dist(est / a, means))
    em = torch.randn(K, d, generator=g, dtype=torch.float64) * mu_norm / math.sqrt(d)
    em_dist = []
    for it in range(em_iters):
        if step is not None:
            step(iters + it)
        x = sample_mog(n_batch, means, g)
        w = torch.softmax(x @ em.T - 0.5 * em.pow(2).sum(1), dim=1)
        em = (w.T @ x) / w.sum(0)[:, None].clamp_min(1e-12)
        em_dist.append(match_dist(em, means))
    return gd, em_dist
