"""FLIPD: the local intrinsic dimension (LID) of an image under a diffusion model, from one score
and one trace of its Jacobian (Kamkari et al. 2024, "A Geometric View of Data Complexity: Efficient
Local Intrinsic Dimension Estimation with Diffusion Models", NeurIPS 2024, arXiv:2406.03537, eq. 11),
used as a memorization detector by Ross et al. 2024 ("A Geometric Framework for Understanding
Memorization in Generative Models", ICLR 2025, arXiv:2411.00113): a memorized image sits on a
near-zero-dimensional piece of the learned manifold, so a *lower* LID means memorized.

For a variance-preserving model ``x_t = a_t x_0 + s_t eps`` (``a_t = sqrt(abar_t)``,
``s_t = sqrt(1 - abar_t)``) with score ``s(x, t) = -eps_theta(x, t) / s_t``::

    FLIPD(x_0, t) = D + s_t^2 [ tr grad_x s(a_t x_0, t) + ||s(a_t x_0, t)||^2 ]
                  = D - s_t tr(d eps_theta / d x)(a_t x_0) + ||eps_theta(a_t x_0, t)||^2,

evaluated at the *un-noised* scaled point ``a_t x_0`` (``D`` = the dimension of ``x``). The trace is
Hutchinson's estimate ``v^T (J v)`` with Rademacher probes ``v``; probe ``k`` under seed ``s`` is the
same for every image (a value depends on the image, the model, the settings and the seed only), and
``J v`` is the central difference of :mod:`lowdim_app.methods.jacobian` (its ``CENTRAL_STEP``), two
float32 forwards per probe. Text models use the empty prompt (the estimate is prompt-free). For a
Gaussian supported on a ``d``-dimensional subspace the estimate tends to ``d`` as ``t -> 0``
(tests/test_detectors.py checks it against the closed form).
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..errors import UserError, check_range
from .jacobian import CENTRAL_STEP

__all__ = ["central_jvp", "flipd_draws", "rademacher"]


def rademacher(shape: tuple[int, ...], seed: int, draw: int) -> torch.Tensor:
    """``+-1`` probe ``draw`` under ``seed`` (``1 x shape``), drawn on the CPU."""
    from .memorization import draw_seed

    g = torch.Generator().manual_seed(draw_seed(seed, draw))
    return (torch.randint(0, 2, (1, *shape), generator=g) * 2 - 1).float()


def central_jvp(f, x: torch.Tensor, v: torch.Tensor, step: float = CENTRAL_STEP) -> torch.Tensor:
    """``J_f(x_i) v_i`` for every row ``i`` at once: ``(f(x + h v) - f(x - h v)) / 2h`` in one batched call,
    ``h_i = step * max(rms(x_i), 1) / rms(v_i)`` (the relative step of ``JacobianOperator``'s central mode)."""
    b = x.shape[0]
    dims = (1,) * (x.ndim - 1)
    scale = x.flatten(1).pow(2).mean(1).sqrt().clamp(min=1.0)
    rms = v.flatten(1).pow(2).mean(1).sqrt()
    h = torch.where(rms > 0, step * scale / rms.clamp(min=1e-30), torch.ones_like(rms)).view(b, *dims)
    out = f(torch.cat([x + h * v, x - h * v]))
    return (out[:b] - out[b:]) / (2 * h)


def _float32(model):
    return model.float32_unet() if model.dtype != torch.float32 else contextlib.nullcontext()


@torch.no_grad()
def flipd_draws(model, images: torch.Tensor, t: int = 50, n_probes: int = 1, seed: int = 0,
                batch_size: int = 32) -> np.ndarray:
    """FLIPD per image and Hutchinson probe (``N x K``) for pixel images in [-1, 1] at timestep ``t``."""
    from .memorization import _encode

    model.check_timestep(t)
    check_range("Hutchinson probes", n_probes, 1, 64)
    if t == 0:
        raise UserError("FLIPD needs t > 0 (the score at t = 0 is not defined)")
    x0 = _encode(model, images, batch_size).float()
    a = float(model.abar(t)) ** 0.5
    s = (1.0 - float(model.abar(t))) ** 0.5
    cond = model.default_conditioning()
    dim = float(np.prod(model.sample_shape))
    probes = [rademacher(model.sample_shape, seed, k).to(x0.device) for k in range(n_probes)]
    out = np.zeros((len(x0), n_probes))
    with _float32(model):
        def eps(xb):
            return model.eps(xb, t, cond, dtype=torch.float32).float()

        for i in range(0, len(x0), batch_size):
            x = a * x0[i:i + batch_size]
            e = eps(x)
            norm2 = e.flatten(1).pow(2).sum(1)
            for k, v in enumerate(probes):
                vb = v.expand_as(x)
                trace = (vb * central_jvp(eps, x, vb)).flatten(1).sum(1)
                out[i:i + len(x), k] = (dim - s * trace + norm2).double().cpu().numpy()
    return out
