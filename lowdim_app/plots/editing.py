"""Figures for Jacobian editing: singular-value spectrum with the numerical rank (Wang et al. 2024,
eq. 46), change vs edit strength beside the random control (Fig. 6), rank vs SNR (Fig. 3a)."""
from __future__ import annotations

import numpy as np
import torch

from .common import locked, new_figure


def direction_images(T: torch.Tensor) -> torch.Tensor:
    """Directions (k x C x H x W) scaled to [-1, 1] per direction for display; latents show channels 0-2."""
    T = T[:, :3] if T.shape[1] > 3 else T
    return T / T.flatten(1).abs().amax(1).clamp(min=1e-12).view(-1, 1, 1, 1)


@locked
def spectrum_figure(singular_values, numerical_rank: int | None = None, eta: float = 0.99, title: str = ""):
    s = np.asarray(singular_values, dtype=float)
    fig, ax = new_figure()
    ax.semilogy(np.arange(1, len(s) + 1), np.maximum(s, 1e-12), "o-", ms=3, lw=1)
    if numerical_rank is not None:
        ax.axvline(numerical_rank, color="C3", ls="--", label=f"numerical rank r = {numerical_rank} (eta = {eta})")
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("index i")
    ax.set_ylabel("singular value of J_t")
    ax.set_title(title or "Spectrum of d x0_hat / d x_t", fontsize=10)
    return fig


@locked
def effect_figure(alphas, along, control, label: str = "singular direction"):
    """RMS pixel change from the alpha = 0 reconstruction along a direction and along the random
    unit direction of the control (Wang et al. 2024, Fig. 6)."""
    fig, ax = new_figure(5.5, 3.0)
    ax.plot(alphas, along, "o-", label=label)
    ax.plot(alphas, control, "s--", label="random unit direction (control)")
    ax.set_xlabel("alpha")
    ax.set_ylabel("RMS pixel change vs alpha = 0")
    ax.legend(fontsize=8)
    return fig


@locked
def rank_snr_figure(points, title: str = ""):
    fig, ax = new_figure()
    snr = [p.snr for p in points]
    frac = [p.rank_fraction for p in points]
    ax.semilogx(snr, frac, "o-", label="numerical rank / n")
    lb = [p.snr for p in points if p.rank_is_lower_bound]
    if lb:
        ax.semilogx(lb, [p.rank_fraction for p in points if p.rank_is_lower_bound], "v", color="C3",
                    label="lower bound (top-k exhausted)")
    ax.set_xlabel("SNR = 1 / sigma_t")
    ax.set_ylabel("rank(J_t) / n")
    ax.set_ylim(0, max(1.0, max(frac) * 1.05))
    ax.legend(fontsize=8)
    ax.set_title(title or "Low-rank Jacobian along a sampling trajectory (Wang et al. 2024, Fig. 3a)", fontsize=10)
    return fig
