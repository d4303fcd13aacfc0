"""Baseline memorization detectors, for comparison with representation spikiness (Zhang et al. 2025,
arXiv:2512.20963, §4.1, Table 1).

* :func:`denoising_error` -- the per-image denoising loss ``||eps_hat(x_t, t) - eps||^2 / n`` at
  ``x_t = AddForwardNoise(x_0, t)``, averaged over noise draws (the loss-threshold
  membership-inference attack of Carlini et al. 2023 / Matsumoto et al. 2023): a memorized image
  is denoised better, so a *lower* error means memorized.
* :func:`guided_trajectory_detectors` -- the two prompt detectors, read off the first DDIM steps of
  classifier-free-guided generation from ``x_T`` (the trajectory that makes the image):

  - ``text_noise_norm`` (Wen et al. 2024, arXiv:2407.21720, §3.1): the magnitude of the
    text-conditional noise prediction ``||eps(x_t, e_p) - eps(x_t, e_empty)||_2``, averaged over the
    first steps; a memorized prompt gives a *larger* norm;
  - ``sharpness`` (Jeon et al. 2025, arXiv:2412.04140, §4): with the score ``s = -eps / sigma_t`` and
    the score difference ``ds = s_p - s_empty``, the norm of the Hessian-score product
    ``||(H_p - H_empty) ds||`` (``H = grad_x s``, the Hessian of the log density), averaged over the
    first steps; memorized prompts land on *sharp* peaks, so larger = memorized. The Hessian-vector
    product is the central difference of :func:`lowdim_app.methods.flipd.central_jvp` (two float32
    guided evaluations).

  Both need the prompt: they score a (prompt, seed) generation, not an uploaded image.

Each returns one number per item; :func:`~lowdim_app.methods.memorization.calibrate` fits the sign.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..errors import UserError, check_range

__all__ = ["PROMPT_DETECTORS", "denoising_error", "guided_trajectory_detectors", "text_guidance_norm"]

PROMPT_DETECTORS = ("text_noise_norm", "sharpness")


@torch.no_grad()
def denoising_error(model, images: torch.Tensor, t: int = 50, n_noise: int = 1, seed: int = 0,
                    batch_size: int = 64) -> np.ndarray:
    """Mean squared noise-prediction error per image (unconditional / empty prompt), ``N`` values."""
    model.check_timestep(t)
    check_range("noise draws", n_noise, 1, 64)
    x0 = torch.cat([model.encode(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
    cond = model.default_conditioning()
    err = torch.zeros(len(x0), dtype=torch.float64)
    for k in range(n_noise):
        noise = model.randn(len(x0), seed + k)
        for i in range(0, len(x0), batch_size):
            nb = noise[i:i + batch_size]
            eps = model.eps(model.add_noise(x0[i:i + batch_size], t, nb), t, cond)
            err[i:i + len(nb)] += ((eps.float() - nb.float()) ** 2).flatten(1).mean(1).double().cpu()
    return (err / n_noise).numpy()


def _pair(model, x: torch.Tensor, t: int, uncond: torch.Tensor, cond: torch.Tensor, dtype=None):
    """``(eps, x0_hat)`` of the batch ``x`` under the empty prompt and under the prompt, as two halves
    ``[empty; prompt]`` of one U-Net call (no guidance mixing)."""
    from ..diffusion.model import Conditioning

    n = x.shape[0]
    ehs = torch.cat([uncond.expand(n, -1, -1), cond.expand(n, -1, -1)])
    eps, x0 = model.predict(torch.cat([x, x]), t, Conditioning(ehs), dtype=dtype)
    return eps.chunk(2), x0.chunk(2)


@torch.no_grad()
def guided_trajectory_detectors(model, prompt: str, noise: torch.Tensor, *, steps: int = 50, guidance: float = 7.5,
                                first_steps: int = 1, which=PROMPT_DETECTORS) -> dict[str, np.ndarray]:
    """``{detector: per-image value}`` for the generations of ``prompt`` from ``noise`` (``n x sample_shape``,
    the ``x_T`` of each image), averaged over the first ``first_steps`` steps of the ``steps``-step guided
    DDIM trajectory (guidance ``guidance``, the generation's own)."""
    from .flipd import central_jvp

    if not model.is_text:
        raise UserError(f"{', '.join(which)} need a text-conditioned model and a prompt; {model.model_id} has none")
    unknown = [w for w in which if w not in PROMPT_DETECTORS]
    if unknown:
        raise UserError(f"unknown prompt detector {unknown[0]!r}; one of {', '.join(PROMPT_DETECTORS)}")
    check_range("steps", steps, 1, 1000)
    check_range("first steps", first_steps, 1, steps)
    c = model.encode_prompt(prompt)
    ts = model.timesteps(model.num_train_timesteps - 1, steps)
    x = noise.to(model.device, model.dtype)
    acc = {w: torch.zeros(len(x), dtype=torch.float64) for w in which}
    sharp = "sharpness" in which
    fp32 = model.float32_unet() if sharp and model.dtype != torch.float32 else contextlib.nullcontext()
    with fp32:
        for i, t in enumerate(ts[:first_steps]):
            dtype = torch.float32 if sharp else None
            xin = x.float() if sharp else x
            (eu, ec), (x0u, x0c) = _pair(model, xin, t, c.uncond, c.cond, dtype)
            diff = (ec - eu).float()
            if "text_noise_norm" in which:
                acc["text_noise_norm"] += diff.flatten(1).norm(dim=1).double().cpu()
            if sharp:
                sigma = (1.0 - float(model.abar(t))) ** 0.5

                def g(xb):
                    (u, p), _ = _pair(model, xb, t, c.uncond, c.cond, torch.float32)
                    return (p - u).float()

                ds = -diff / sigma                                  # s_p - s_empty
                hds = -central_jvp(g, xin.float(), ds) / sigma      # (H_p - H_empty) ds
                acc["sharpness"] += hds.flatten(1).norm(dim=1).double().cpu()
            x0 = x0u + guidance * (x0c - x0u)
            e = eu + guidance * (ec - eu)
            x = model._ddim_move(e.to(model.dtype), x0.to(model.dtype), ts[i + 1] if i + 1 < len(ts) else None)
    return {w: (v / first_steps).numpy() for w, v in acc.items()}


@torch.no_grad()
def text_guidance_norm(model, prompts: list[str], seed: int = 0, steps: int = 50, first: int = 1,
                       guidance: float = 1.0) -> np.ndarray:
    """Wen et al. 2024 detection metric per prompt (``x_T`` of prompt ``j`` drawn with seed ``seed + j``):
    mean over the first ``first`` DDIM steps of ``||eps(x_t, e_p) - eps(x_t, e_empty)||_2`` along the
    trajectory guided with ``guidance``."""
    if not model.is_text:
        raise UserError("the conditional-minus-unconditional norm needs a text-conditioned model")
    if not prompts:
        raise UserError("give at least one prompt")
    return np.asarray([guided_trajectory_detectors(model, p, model.randn(1, seed + j), steps=steps, guidance=guidance,
                                                   first_steps=first, which=("text_noise_norm",))["text_noise_norm"][0]
                       for j, p in enumerate(prompts)])
