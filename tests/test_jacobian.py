"""Jacobian singular vectors of x0_hat (Wang et al. 2024, arXiv:2409.02426, §4.2, App. D.1 eq. 46, App. E.4;
masked directions: Chen et al. 2024, LOCO Edit).

Every top-k result from JVP/VJP products is checked against ``torch.linalg.svd`` of an exact
Jacobian built independently (the matrix itself, the closed-form MoLRG Jacobian, jacrev).
"""
from __future__ import annotations

import pytest
import torch
from test_edit_metrics import geometric_rank

from lowdim_app.errors import UserError
from lowdim_app.methods import jacobian as jac
from lowdim_app.metrics import numerical_rank, subspace_cosine
from lowdim_app.synthetic.molrg import MoLRG


def _factors(n: int, decay: float, seed: int):
    """``A = U diag(s) V^T`` with independent random orthogonal ``U``, ``V`` (A is not symmetric)
    and ``s_i = decay^i``."""
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    s = decay ** torch.arange(n, dtype=torch.float64)
    return U, s, V


def _linear(n: int = 300, decay: float = 0.85, seed: int = 0):
    U, s, V = _factors(n, decay, seed)
    A = ((U * s) @ V.T).float()
    return A, (lambda X: X.reshape(X.shape[0], -1) @ A.T)


def _check_against(res, A: torch.Tensor, k: int, cos_min: float, sv_rtol: float):
    U, s, Vh = torch.linalg.svd(A.double())
    cos_v = subspace_cosine(res.V, Vh[:k])
    cos_u = subspace_cosine(res.U, U[:, :k].T)
    rel = ((res.singular_values.double() - s[:k]).abs() / s[:k]).max().item()
    assert cos_v >= cos_min, (cos_v, res.summary())
    assert cos_u >= cos_min, (cos_u, res.summary())
    assert rel <= sv_rtol, (rel, res.singular_values, s[:k])
    return cos_v, rel


@pytest.mark.parametrize("k", [1, 5, 10])
def test_krylov_topk_matches_svd_on_decaying_linear_map(k):
    A, f = _linear()
    res = jac.top_k_svd(f, torch.zeros(A.shape[1]), k=k, seed=1, tol=0.05)
    assert res.converged and res.error_estimate <= 0.05
    _check_against(res, A, k, cos_min=0.9987, sv_rtol=1e-3)
    # and far fewer passes than the LOCO-style power baseline on the same map
    base = jac.subspace_iteration(f, torch.zeros(A.shape[1]), k=k, seed=1)
    assert res.passes < base.passes
    assert res.passes == res.jvp_directions + res.vjp_directions > 0      # forward-mode JVPs: one evaluation each


def test_warm_start_saves_passes():
    A, f = _linear()
    x = torch.zeros(A.shape[1])
    cold = jac.top_k_svd(f, x, k=5, seed=0, tol=0.05)
    warm = jac.top_k_svd(f, x, k=5, seed=3, V0=cold.V, tol=0.05)
    assert warm.passes < cold.passes
    _check_against(warm, A, 5, cos_min=0.9987, sv_rtol=1e-3)


def test_exact_path_spectrum_and_numerical_rank():
    A, f = _linear(n=120, decay=0.7)
    res = jac.exact_svd(f, torch.zeros(120), k=4)
    s = 0.7 ** torch.arange(120, dtype=torch.float64)
    assert torch.allclose(res.spectrum.double(), s, rtol=1e-4, atol=1e-6)
    assert res.passes == 120 and res.vjp_directions == 120
    # eq. 46 on s_i = 0.7^i in closed form: r = 6 (thresholding at eta instead of eta^2 would give 7)
    assert res.numerical_rank() == geometric_rank(0.7, 120, 0.99) == 6
    assert jac.jacobian_svd(f, torch.zeros(120), k=4, method="exact").method == "exact"
    # the caller that shows the spectrum gets the exact path wherever its n VJPs fit
    assert jac.jacobian_svd(f, torch.zeros(120), k=4, spectrum=True).method == "exact"


@pytest.mark.parametrize("mode", ["rev", "fwd"])
def test_exact_svd_of_a_non_symmetric_map(mode):
    """U and V are the left and right singular vectors of A (not of A^T): checked against the
    construction A = U diag(s) V^T with U != V, up to sign, and J v_i = s_i u_i, J^T u_i = s_i v_i."""
    n, k = 40, 6
    U, s, V = _factors(n, 0.8, seed=3)
    A = (U * s) @ V.T
    assert (A - A.T).abs().max() > 0.1
    f = lambda X: X.reshape(X.shape[0], -1).double() @ A.T
    res = jac.exact_svd(f, torch.zeros(n, dtype=torch.float64), k=k, mode=mode)
    assert torch.allclose(res.singular_values, s[:k], rtol=1e-10)
    assert torch.allclose(res.spectrum, s, rtol=1e-9)
    cos_u = (res.U * U[:, :k].T).sum(1).abs()
    cos_v = (res.V * V[:, :k].T).sum(1).abs()
    assert torch.allclose(cos_u, torch.ones(k, dtype=torch.float64), atol=1e-9), cos_u
    assert torch.allclose(cos_v, torch.ones(k, dtype=torch.float64), atol=1e-9), cos_v
    assert torch.allclose(res.V @ A.T, res.singular_values[:, None] * res.U, atol=1e-10)   # J v_i = s_i u_i
    assert torch.allclose(res.U @ A, res.singular_values[:, None] * res.V, atol=1e-10)     # J^T u_i = s_i v_i


def test_molrg_posterior_mean_topk_matches_closed_form_jacobian():
    """Lemma 1 posterior mean; its closed-form Jacobian (App. D.1) is the reference."""
    mix = MoLRG.random(96, [4, 3, 3], seed=2)
    g = torch.Generator().manual_seed(5)
    x0 = mix.bases[0] @ torch.randn(4, generator=g, dtype=torch.float64)
    s_t, gamma_t = 0.8, 0.6
    x = s_t * x0 + gamma_t * torch.randn(96, generator=g, dtype=torch.float64)
    Jc = mix.posterior_jacobian(x, s_t, gamma_t)
    f = lambda X: mix.posterior_mean(X.double(), s_t, gamma_t).float()
    k = 4
    res = jac.top_k_svd(f, x.float(), k=k, seed=0)
    assert res.converged
    cos, rel = _check_against(res, Jc, k, cos_min=0.999, sv_rtol=2e-3)
    ex = jac.exact_svd(f, x.float(), k=k)
    assert torch.allclose(ex.spectrum.double(), torch.linalg.svdvals(Jc), atol=1e-4)
    assert ex.numerical_rank() == numerical_rank(torch.linalg.svdvals(Jc))
    # Lemma 2: the posterior mean's Jacobian has rank at most the total subspace dimension (4 + 3 + 3)
    assert ex.numerical_rank() <= 10


# ------------------------------------------------------------------- the real U-Net
@pytest.fixture(scope="module")
def digits_point(digits_gen):
    from lowdim_app.data.digits import load_digits_split

    m = digits_gen
    t = m.timestep_from_fraction(0.7)
    x0 = load_digits_split().test_images[:1].to(m.device)
    x_t = m.add_noise(x0, t, m.randn(1, seed=0))[0]
    with m.forward_ad_safe():
        Jr = torch.func.jacrev(lambda z: m.x0_hat(z[None], t, dtype=torch.float32)[0])(x_t)
    return m, x_t, t, Jr.reshape(m.n, m.n)


def test_digits_topk_matches_jacrev(digits_point):
    m, x_t, t, Jr = digits_point
    res = jac.top_singular(m, x_t, t, k=5, method="krylov", seed=0, tol=0.02)
    assert res.converged and res.V.shape == (5, *m.sample_shape)
    cos, rel = _check_against(res, Jr, 5, cos_min=0.995, sv_rtol=1e-3)
    # far fewer passes than the exact path (n = 256 VJPs); the power baseline is in bench/jacobian.py
    assert res.passes < m.n // 2, res.summary()


def test_digits_jvp_vjp_consistent(digits_point):
    m, x_t, t, Jr = digits_point
    op = jac.x0_hat_operator(m, x_t, t)
    g = torch.Generator().manual_seed(0)
    V = torch.randn(3, *m.sample_shape, generator=g)
    U = torch.randn(3, *m.sample_shape, generator=g)
    with m.forward_ad_safe():
        JV = op.jvp(V)
        JtU = op.vjp(U)
    assert op.counter.jvp_directions == 3 and op.counter.vjp_directions == 3
    assert torch.allclose(JV.reshape(3, -1), V.reshape(3, -1) @ Jr.T, atol=1e-4, rtol=1e-3)
    # <J v, u> = <v, J^T u>
    lhs = (JV * U).reshape(3, -1).sum(1)
    rhs = (V * JtU).reshape(3, -1).sum(1)
    assert torch.allclose(lhs, rhs, rtol=1e-4, atol=1e-4)
    # JVP vs central finite differences (float32, h = 1e-2 on unit-scale x_t)
    h = 1e-2
    with torch.no_grad():
        fd = (m.x0_hat(x_t[None] + h * V, t, dtype=torch.float32)
              - m.x0_hat(x_t[None] - h * V, t, dtype=torch.float32)) / (2 * h)
    rel = ((fd - JV).norm() / JV.norm()).item()
    assert rel < 1e-2, rel


def test_digits_masked_direction_stays_inside_mask(digits_point):
    """LOCO-style: the projected direction moves x0_hat mostly inside the mask."""
    m, x_t, t, Jr = digits_point
    mask = torch.zeros(m.sample_shape)
    mask[:, 2:9, 3:13] = 1.0  # upper part of the digit
    md = jac.masked_directions_of_x0_hat(m, x_t, t, mask, k=3, null_rank=8, method="exact")
    d = md.directions.reshape(3, -1).double()
    assert torch.allclose(d.norm(dim=1), torch.ones(3, dtype=torch.float64), atol=1e-5)
    Jd = (d @ Jr.double().T).reshape(3, *m.sample_shape)
    frac = jac.mask_energy_fraction(Jd, mask)
    assert torch.allclose(frac, md.inside_fraction.double(), atol=1e-3)
    g = torch.Generator().manual_seed(0)
    r = torch.randn(64, m.n, generator=g, dtype=torch.float64)
    frac_rand = jac.mask_energy_fraction((r @ Jr.double().T).reshape(64, *m.sample_shape), mask)
    ratio = frac / (1 - frac)
    ratio_rand = frac_rand / (1 - frac_rand)
    # measured: inside/outside energy ratio >= ~10 for the directions vs median ~0.7 for random
    assert float(ratio.min()) >= 4.0, ratio
    assert float(ratio.min()) >= 4 * float(ratio_rand.median()), (ratio, ratio_rand.median())
    # the null-space projection helps over the plain masked singular vectors
    assert float(md.inside_fraction.mean()) >= float(md.inside_fraction_unprojected.mean()) - 1e-6


def test_bad_inputs(digits_gen):
    m = digits_gen
    with pytest.raises(UserError):
        jac.x0_hat_operator(m, torch.zeros(3, 16, 16), 500)
    A, f = _linear(n=50)
    with pytest.raises(UserError):
        jac.top_k_svd(f, torch.zeros(50), k=0)
    with pytest.raises(UserError):
        jac.masked_directions(f, torch.zeros(50), torch.zeros(50), k=2)  # empty mask


def test_tiny_sd_latent_path(tiny_sd):
    """Text-conditioned latent U-Net (cross-attention): JVP/VJP through attention, Krylov
    top-k and the masked variant run end to end. The tiny U-Net has random weights, so its
    spectrum is flat (measured: s_1..s_12 = 5.87..5.51, numerical rank 965 of 1024) and the
    top-k is ill-conditioned; we run on a small pass budget and check what must hold anyway."""
    m = tiny_sd
    cond = m.encode_prompt("a cat")
    t = m.timestep_from_fraction(0.7)
    x_t = m.randn(1, seed=1)[0]
    res = jac.top_singular(m, x_t, t, k=2, cond=cond, method="krylov", seed=0, max_passes=24)
    assert res.V.shape == (2, *m.sample_shape) and res.passes <= 24 and res.jvp_mode == "central"
    assert res.passes == 2 * res.jvp_directions + res.vjp_directions       # a central difference is two evaluations
    assert torch.isfinite(res.singular_values).all() and float(res.singular_values[0]) > 0
    op = jac.x0_hat_operator(m, x_t, t, cond)
    g = torch.Generator().manual_seed(0)
    v = torch.randn(1, *m.sample_shape, generator=g)
    u = torch.randn(1, *m.sample_shape, generator=g)
    with m.forward_ad_safe():
        Jv = op.jvp(v)
        Jtu = op.vjp(u)
        Jtu1 = op.vjp(res.U[:1])
    assert torch.allclose((Jv * u).sum(), (v * Jtu).sum(), rtol=1e-3, atol=1e-3)
    # the side that holds by construction: J^T u_1 = s_1 v_1 (one-sided pairs)
    s1 = float(res.singular_values[0])
    assert res.pairs == "one-sided"
    assert torch.allclose(Jtu1[0], s1 * res.V[0], atol=1e-3 * s1)
    mask = torch.zeros(m.sample_shape)
    mask[:, :8] = 1
    md = jac.masked_directions_of_x0_hat(m, x_t, t, mask, cond=cond, k=1, null_rank=2, method="krylov", seed=0,
                                         max_passes=40)
    assert md.directions.shape == (1, *m.sample_shape)
    assert torch.isfinite(md.inside_fraction).all() and float(md.inside_fraction[0]) > 0.5


# ------------------------------------------------------------------- accounting and the stop rule
def test_a_central_difference_jvp_counts_two_network_evaluations():
    """Passes are network evaluations: a central-difference JVP direction is f(x + hv) and f(x - hv)."""
    calls = []
    A, f0 = _linear(n=40)

    def f(X):
        calls.append(X.shape[0])
        return f0(X)

    x = torch.zeros(40)
    for mode, per in (("central", 2), ("forward", 1)):
        calls.clear()
        op = jac.JacobianOperator(f, x, jvp_mode=mode)
        op.jvp(torch.randn(3, 40))
        op.vjp(torch.randn(2, 40))
        assert op.counter.jvp_evaluations == sum(calls[:1]) == per * 3          # rows the network saw
        assert op.counter.passes == per * 3 + 2 and op.counter.calls == 2
        res = jac.top_k_svd(op, k=3, block=2, max_passes=60, tol=0.0)
        assert res.passes == per * res.jvp_directions + res.vjp_directions <= 60
        assert res.summary()["passes"] == res.passes and res.stopped_at_budget


@pytest.fixture(scope="module")
def inverted_points(digits_gen):
    """Held-out digits DDIM-inverted to 0.5T and 0.7T (what the editor searches at), with the exact top-10."""
    from lowdim_app.data.digits import load_digits_split
    from lowdim_app.methods.editing import invert

    m = digits_gen
    img = load_digits_split().test_images[37:38]
    out = []
    with m.float32_unet():
        for fr in (0.5, 0.7):
            t = m.timestep_from_fraction(fr)
            x_t = invert(m, img, t, 50).x_t[0]
            ex = jac.exact_svd(jac.x0_hat_operator(m, x_t, t, jvp_mode="forward"), k=10)
            out.append((fr, t, x_t, ex.V.reshape(10, -1).double()))
    return m, out


@pytest.mark.parametrize("mode", ["central", "forward"])
def test_stop_rule_stops_near_the_requested_accuracy(inverted_points, mode):
    """On DDIM-inverted digits, k = 1, 3, 5, 10, either JVP kind: the search stops converged at cosine >= 0.99,
    within 1.5x the network evaluations at which its iterate first reached principal cosine 0.99, or one
    certifying iteration after it when that was the first iterate (the central difference used to stall the
    residual test above the tolerance until the budget ran out)."""
    m, points = inverted_points
    with m.float32_unet():
        for fr, t, x_t, ref in points:
            op = jac.x0_hat_operator(m, x_t, t, jvp_mode=mode)
            for k in (1, 3, 5, 10):
                seen = []
                res = jac.jacobian_svd(op, k=k, method="krylov", max_passes=600,
                                       callback=lambda d: seen.append((d["passes"], subspace_cosine(d["V"].T, ref[:k]))))
                first = next(p for p, c in seen if c >= 0.99)
                cos = subspace_cosine(res.V, ref[:k])
                assert res.converged and res.error_estimate <= jac.DEFAULT_TOL, (fr, k, res.status)
                assert cos >= 0.99, (fr, k, cos, res.status)
                per_iteration = res.block * (op.jvp_evaluations + 1)
                assert res.passes <= max(1.5 * first, first + per_iteration), (fr, k, res.passes, first)
