"""The memorization detectors against closed forms and exact derivatives: FLIPD on Gaussians supported on
a subspace (Kamkari et al. 2024: the estimate is the dimension) and on a point mass (0: memorized); the
sharpness of Jeon et al. 2025 against forward-mode AD; Wen et al.'s norm on the guided trajectory; the
detector registry and the strict TPR at a fixed FPR."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from lowdim_app.errors import UserError

D_SIDE = 8          # 1 x 8 x 8 images: D = 64
pytestmark = pytest.mark.usefixtures("one_thread")


class GaussianEps(torch.nn.Module):
    """The exact noise predictor of x_0 ~ N(mu, U U^T) (``U``: D x d orthonormal columns, d may be 0: a point
    mass at ``mu``) under the DDPM schedule: eps(x_t) = s_t Sigma_t^{-1} (x_t - a_t mu)."""

    def __init__(self, U: torch.Tensor, mu: torch.Tensor, abar: torch.Tensor):
        super().__init__()
        self.config = types.SimpleNamespace(in_channels=1, sample_size=D_SIDE, out_channels=1)
        self.register_buffer("U", U.double())
        self.register_buffer("mu", mu.double().flatten())
        self.register_buffer("abar", abar.double())
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x, t, **_):
        a2 = self.abar[t.long().cpu()].to(x.device).view(-1, 1)
        s2 = 1 - a2
        flat = x.double().flatten(1) - a2.sqrt() * self.mu
        # Sigma^-1 = (I - U U^T) / s2 + U U^T / (a2 + s2) = I / s2 - U U^T (1 / s2 - 1)
        proj = (flat @ self.U) @ self.U.T
        out = s2.sqrt() * (flat / s2 - proj * (1 / s2 - 1))
        return types.SimpleNamespace(sample=out.to(x.dtype).view_as(x))


def gaussian_model(d: int, seed: int = 0):
    from diffusers import DDPMScheduler

    from lowdim_app.diffusion.model import DiffusionModel

    g = torch.Generator().manual_seed(seed)
    D = D_SIDE * D_SIDE
    U = torch.linalg.qr(torch.randn(D, max(d, 1), generator=g, dtype=torch.float64))[0][:, :d]
    mu = 0.3 * torch.randn(D, generator=g, dtype=torch.float64)
    sched = DDPMScheduler(num_train_timesteps=1000)
    unet = GaussianEps(U, mu, sched.alphas_cumprod)
    return DiffusionModel.from_unet(unet, sched, model_id=f"gauss-{d}"), U, mu


def closed_form_flipd(U, mu, x0, abar_t):
    """D - s^2 tr(Sigma^-1) + s^2 ||Sigma^-1 a (x0 - mu)||^2 (exact trace)."""
    D, d = U.shape[0], U.shape[1]
    s2 = 1 - abar_t
    r = (x0.double().flatten(1) - mu) * abar_t ** 0.5
    proj = (r @ U) @ U.T
    sinv_r = r / s2 - proj * (1 / s2 - 1)
    trace = d + (D - d) / s2
    return (D - s2 * trace + s2 * (sinv_r ** 2).sum(1)).numpy()


@pytest.mark.parametrize("d", [0, 3, 10])
def test_flipd_matches_the_closed_form_and_tends_to_the_dimension(d):
    from lowdim_app.methods.flipd import flipd_draws

    model, U, mu = gaussian_model(d)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(5, d, generator=g, dtype=torch.float64)
    x0 = (mu + z @ U.T).float().view(5, 1, D_SIDE, D_SIDE)
    for t in (5, 50):
        est = flipd_draws(model, x0, t=t, n_probes=48, seed=0).mean(1)
        exact = closed_form_flipd(U, mu, x0, float(model.abar(t)))
        # Hutchinson with 48 Rademacher probes on a trace of ~ D / s^2: a few units of slack at most
        assert np.allclose(est, exact, atol=2.5), (t, est, exact)
    assert np.allclose(closed_form_flipd(U, mu, x0, float(model.abar(1))), d, atol=0.5)   # -> d as t -> 0
    if d == 0:   # a point mass (a memorized image): the trace term is exact for every probe, LID = 0
        assert np.allclose(flipd_draws(model, x0, t=50, n_probes=1), 0.0, atol=1e-2)


def test_flipd_draws_do_not_depend_on_the_batch(digits_gen):
    from lowdim_app.data.digits import load_digits_split
    from lowdim_app.methods.flipd import flipd_draws

    x = load_digits_split().test_images[:5]
    full = flipd_draws(digits_gen, x, t=50, n_probes=2, seed=3, batch_size=5)
    one = np.concatenate([flipd_draws(digits_gen, x[i:i + 1], t=50, n_probes=2, seed=3) for i in range(5)])
    assert np.allclose(full, one, rtol=1e-4, atol=1e-3)   # D - s tr(J) cancels: float32 rounding of a trace ~ D / s
    assert not np.allclose(full, flipd_draws(digits_gen, x, t=50, n_probes=2, seed=4))
    with pytest.raises(UserError, match="t > 0"):
        flipd_draws(digits_gen, x, t=0)


def test_sharpness_is_the_exact_hessian_score_product_and_zero_for_the_empty_prompt(tiny_sd):
    """Jeon et al. 2025: ||(H_p - H_empty) ds|| / with ds = s_p - s_empty, s = -eps / sigma -- the central
    difference against torch.func.jvp through the U-Net; the empty prompt has no score difference."""
    from lowdim_app.methods.memorization_baselines import guided_trajectory_detectors

    noise = torch.cat([tiny_sd.randn(1, 11), tiny_sd.randn(1, 12)])
    got = guided_trajectory_detectors(tiny_sd, "a red bird", noise, steps=10, first_steps=1)
    t = tiny_sd.timesteps(999, 10)[0]
    sigma = (1 - float(tiny_sd.abar(t))) ** 0.5
    c = tiny_sd.encode_prompt("a red bird")

    def g(x):
        return tiny_sd.eps(x, t, c) - tiny_sd.eps(x, t, tiny_sd.encode_prompt(""))

    with tiny_sd.forward_ad_safe():
        diff = g(noise)
        _, jv = torch.func.jvp(g, (noise,), (-diff / sigma,))
    exact = (jv / sigma).flatten(1).norm(dim=1).numpy()
    assert np.allclose(got["sharpness"], exact, rtol=2e-3), (got["sharpness"], exact)
    assert np.allclose(got["text_noise_norm"], diff.flatten(1).norm(dim=1).numpy(), rtol=1e-4)
    empty = guided_trajectory_detectors(tiny_sd, "", noise, steps=10, first_steps=2)
    assert np.allclose(empty["sharpness"], 0, atol=1e-6) and np.allclose(empty["text_noise_norm"], 0, atol=1e-6)


def test_wen_norm_over_two_steps_follows_the_guided_trajectory(tiny_sd):
    from lowdim_app.methods.memorization_baselines import guided_trajectory_detectors

    noise = tiny_sd.randn(1, 5)
    c = tiny_sd.encode_prompt("a cat", guidance_scale=7.5)
    ts = tiny_sd.timesteps(999, 10)
    x, norms = noise, []
    with torch.no_grad():
        for i, t in enumerate(ts[:2]):
            eu, ec = tiny_sd.eps(x, t, tiny_sd.encode_prompt("")), tiny_sd.eps(x, t, tiny_sd.encode_prompt("a cat"))
            norms.append(float((ec - eu).norm()))
            eps, x0 = tiny_sd.predict(x, t, c)            # the guided step of generation
            x = tiny_sd._ddim_move(eps, x0, ts[i + 1])
    got = guided_trajectory_detectors(tiny_sd, "a cat", noise, steps=10, guidance=7.5, first_steps=2,
                                      which=("text_noise_norm",))["text_noise_norm"]
    assert got[0] == pytest.approx(np.mean(norms), rel=1e-4)


def test_registry_applicability_and_strict_tpr(tiny_sd, digits_gen):
    from lowdim_app.methods import detectors as D

    assert set(D.applicable(tiny_sd)) == set(D.DETECTORS)
    assert set(D.applicable(digits_gen)) == set(D.IMAGE_DETECTORS)
    with pytest.raises(UserError, match="needs the prompt of a text-to-image model"):
        D.applicable(digits_gen, ("sharpness",))
    with pytest.raises(UserError, match="unknown detector"):
        D.applicable(digits_gen, ("nope",))
    with pytest.raises(UserError, match="needs the prompt"):
        D.score_images(tiny_sd, ["text_noise_norm"], torch.zeros(1, 3, 128, 128), D.DetectorOptions())
    from lowdim_app.features.audit import AuditSettings
    from lowdim_app.features.calibrate import CalibrateSettings
    from lowdim_app.features.score import ScoreSettings

    for cls, raw in ((ScoreSettings, dict(images=("x.png",))), (CalibrateSettings, dict(generalized=("x",))),
                     (AuditSettings, dict(source="x", out="o"))):     # the commands that score images say why not
        with pytest.raises(UserError, match="sharpness .* needs the prompt: it reads the first steps of a generation"):
            cls.from_raw(metric="sharpness", **raw)
    # strict TPR at FPR: the best threshold whose FPR is at most the target, no interpolation
    pos, neg = [5, 4, 3, 0.5], [2, 1, 0, -1, -2, -3, -4, -5, -6, 0.6] * 10
    assert D.tpr_at_fpr_strict(pos, neg, 0.01) == 0.75
    q = D.detection_quality(pos, neg, -1)          # the fixed direction is used, nothing fitted
    assert q["auroc"] < 0.5 and q["tpr_at_1pct_fpr"] == 0.0
