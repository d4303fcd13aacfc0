"""Baseline memorization detectors, for comparison with representation spikiness (Zhang et al. 2025,
arXiv:2512.20963, §4.1, Table 1).

* :func:`denoising_error` -- the per-image denoising loss ``||eps_hat(x_t, t) - eps||^2 / n`` at
  ``x_t = AddForwardNoise(x_0, t)``, averaged over noise draws (the loss-threshold
  membership-inference attack of Carlini et al. 2023 / Matsumoto et al. 2023): a memorized image
  is denoised better, so a *lower* error means memorized.
* :func:`text_guidance_norm` -- Wen et al. 2024 (arXiv:2407.21720), "Detecting, explaining, and
  mitigating memorization in diffusion models": for a prompt ``p``, the magnitude of the text-conditional
  noise prediction ``||eps(x_t, e_p) - eps(x_t, e_empty)||_2`` averaged over the first ``first``
  DDIM steps of generation from ``x_T``; a memorized prompt gives a *larger* norm. Text models only.

Both return one number per item; :func:`~lowdim_app.methods.memorization.calibrate` fits the sign.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError, check_range

__all__ = ["denoising_error", "text_guidance_norm"]


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


@torch.no_grad()
def text_guidance_norm(model, prompts: list[str], seed: int = 0, steps: int = 50, first: int = 1) -> np.ndarray:
    """Wen et al. 2024 detection metric per prompt: mean over the first ``first`` DDIM steps (no
    guidance applied to the trajectory) of ``||eps(x_t, e_p) - eps(x_t, e_empty)||_2``."""
    if not model.is_text:
        raise UserError("the conditional-minus-unconditional norm needs a text-conditioned model")
    if not prompts:
        raise UserError("give at least one prompt")
    check_range("steps", steps, 1, 1000)
    check_range("first steps", first, 1, steps)
    from ..diffusion.model import Conditioning

    out = []
    ts = model.timesteps(model.num_train_timesteps - 1, steps)
    for j, p in enumerate(prompts):
        c = model.encode_prompt(p)
        both = Conditioning(torch.cat([c.cond, c.uncond]))   # one batch: [prompt; empty prompt]
        x = model.randn(1, seed + j)
        acc = 0.0
        for i, t in enumerate(ts[:first]):
            eps, x0 = model.predict(torch.cat([x, x]), t, both)
            acc += float((eps[0] - eps[1]).float().norm())
            # the detector runs during generation: follow the conditional (guidance 1) trajectory
            x = model._ddim_move(eps[:1], x0[:1], ts[i + 1] if i + 1 < len(ts) else None)
        out.append(acc / first)
    return np.asarray(out)
