"""MoLRG (Wang et al. 2024, Def. 1, Lemma 1, Lemma 2, eq. 46): closed forms against Monte Carlo / autograd."""
import math

import pytest
import torch

from lowdim_app.synthetic.molrg import MoLRG, edm_sigmas, lemma2_bounds, vp_schedule
from lowdim_app.metrics import numerical_rank

pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny tensor ops



def test_sample_lies_in_subspaces_and_weights():
    m = MoLRG.random(12, [2, 3], weights=[0.25, 0.75], seed=1)
    g = torch.Generator().manual_seed(0)
    X, lab = m.sample(4000, generator=g)
    assert X.shape == (4000, 12) and lab.shape == (4000,)
    for k, U in enumerate(m.bases):
        Xk = X[lab == k]
        assert torch.allclose(Xk - Xk @ U @ U.T, torch.zeros_like(Xk), atol=1e-12)
    assert abs(float((lab == 1).double().mean()) - 0.75) < 0.03
    B = torch.cat(m.bases, 1)
    assert torch.allclose(B.T @ B, torch.eye(5, dtype=B.dtype), atol=1e-12)
    # same seed -> same data
    X2, _ = m.sample(4000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(X, X2)


def test_posterior_mean_equals_eq8_for_equal_dims():
    m = MoLRG.random(10, [3, 3], weights=[0.3, 0.7], seed=2)
    x = torch.randn(7, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    s, g = vp_schedule(0.4)
    phi = s * s / (2 * g * g * (s * s + g * g))
    logits = torch.stack([math.log(p) + phi * ((x @ U) ** 2).sum(-1) for p, U in zip(m.weights.tolist(), m.bases)], -1)
    w = torch.softmax(logits, -1)
    ref = s / (s * s + g * g) * sum(w[:, k:k + 1] * (x @ U @ U.T) for k, U in enumerate(m.bases))
    assert torch.allclose(m.posterior_mean(x, s, g), ref, atol=1e-12)


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_posterior_mean_matches_monte_carlo(noise):
    """Self-normalised importance-sampling estimate of E[x0 | x_t = x] from 4e5 prior draws."""
    m = MoLRG.random(6, [2, 1], weights=[0.4, 0.6], noise=noise, seed=4)
    g = torch.Generator().manual_seed(5)
    X0, _ = m.sample(400_000, generator=g)
    s, gam = 0.8, 0.6
    x0, _ = m.sample(3, generator=g)
    xt = s * x0 + gam * torch.randn(3, 6, dtype=torch.float64, generator=g)
    mc = m.empirical_posterior_mean(xt, s, gam, X0)
    exact = m.posterior_mean(xt, s, gam)
    assert (mc - exact).norm(dim=-1).max() < 0.03 * max(1.0, float(exact.norm(dim=-1).max()))


def test_empirical_denoiser_converges_to_posterior_mean():
    m = MoLRG.random(8, [2, 2], seed=6)
    g = torch.Generator().manual_seed(7)
    x0, _ = m.sample(16, generator=g)
    s, gam = vp_schedule(0.5)
    xt = s * x0 + gam * torch.randn(16, 8, dtype=torch.float64, generator=g)
    exact = m.posterior_mean(xt, s, gam)
    errs = []
    for N in (30, 3000, 300_000):
        S, _ = m.sample(N, generator=g)
        errs.append(float((m.empirical_posterior_mean(xt, s, gam, S) - exact).norm(dim=-1).mean()))
    assert errs[0] > errs[1] > errs[2] and errs[2] < 0.05


def test_jacobian_matches_autograd():
    m = MoLRG.random(9, [2, 3, 1], weights=[0.2, 0.5, 0.3], noise=0.1, seed=8)
    x = torch.randn(9, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    for t in (0.05, 0.3, 0.8):
        s, g = vp_schedule(t)
        assert torch.allclose(m.posterior_jacobian(x, s, g), m.posterior_jacobian_autograd(x, s, g), atol=1e-10)
    # batched form
    xb = torch.randn(4, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    Jb = m.posterior_jacobian(xb, 0.9, 0.4)
    assert torch.allclose(Jb[2], m.posterior_jacobian_autograd(xb[2], 0.9, 0.4), atol=1e-10)


def test_numerical_rank_eq46():
    assert numerical_rank(torch.tensor([1.0, 1.0, 1.0, 0.0])) == 3
    assert numerical_rank(torch.tensor([10.0, 1.0, 0.01])) == 1   # 100/101 = 0.990 > 0.99^2
    assert numerical_rank(torch.tensor([0.01, 1.0, 0.5])) == 2   # 1/1.25 < 0.9801 < 1.25/1.2501
    assert numerical_rank(torch.tensor([0.0, 0.0])) == 0
    r = numerical_rank(torch.tensor([[1.0, 0, 0], [1.0, 1.0, 0]]))
    assert r.tolist() == [1, 2]


def test_jacobian_rank_within_lemma2_bounds_at_every_t():
    dims = [3, 5]
    m = MoLRG.random(24, dims, seed=11)
    lo, hi = lemma2_bounds(dims)
    g = torch.Generator().manual_seed(12)
    x0, _ = m.sample(64, generator=g)
    eps = torch.randn(64, 24, dtype=torch.float64, generator=g)
    seen = set()
    for t in torch.linspace(0.01, 1.0, 25).tolist():            # VP schedule
        s, gam = vp_schedule(t)
        r = m.jacobian_rank(s * x0 + gam * eps, s, gam)
        assert int(r.min()) >= lo and int(r.max()) <= hi, (t, r)
        seen.update(r.tolist())
    for sig in edm_sigmas(18).tolist():                          # s_t = 1 (EDM)
        r = m.jacobian_rank(x0 + sig * eps, 1.0, sig)
        assert int(r.min()) >= lo and int(r.max()) <= hi, (sig, r)
    # both ends are reached: single component near t = 0, union of subspaces at high noise
    assert hi in seen and (lo in seen or 5 in seen)
