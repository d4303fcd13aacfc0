"""Figures of three theory labs: the ReLU DAE (Zhang et al. 2025, arXiv:2512.20963), DDPM on a
Gaussian mixture (Shah et al. 2023, arXiv:2307.01178) and MoLR-MoG experts (Yang et al. 2026,
arXiv:2601.01475). Each takes the lab's result (``features.<lab>``) and returns a Figure."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from .common import locked, save_figure


def _img(ax, v, shape, mean=None):
    v = v.detach().float()
    if mean is not None:
        v = v + mean
    side = shape[-1]
    ax.imshow(v.reshape(-1, side).numpy(), cmap="gray")
    ax.set_xticks([])
    ax.set_yticks([])


# ------------------------------------------------------------------------------------------ ReLU DAE
@locked
def relu_dae_figure(res):
    """Columns of W1 (memorize), eq. 9 match, one representation per regime, std histograms,
    one-step denoising and DDIM samples."""
    regimes = [r for r in ("memorize", "generalize", "hybrid") if r in res.models]
    numbers = res.values
    fig = Figure(figsize=(15, 10), dpi=90)
    gs = fig.add_gridspec(4, 6, hspace=0.55, wspace=0.35, left=0.04, right=0.99, top=0.93, bottom=0.04)
    mem = res.data.get("memorize")
    shape = mem.image_shape if mem is not None and mem.image_shape else None
    # row 0: W1 columns of the memorizing model (images) or their cosine to samples
    if "memorize" in res.models:
        dae = res.models["memorize"]
        W = dae.W1
        order = torch.argsort(W.norm(dim=0), descending=True)[:6]
        for j, c in enumerate(order.tolist()):
            ax = fig.add_subplot(gs[0, j])
            if shape:
                _img(ax, W[:, c], shape)
            else:
                ax.bar(range(min(32, W.shape[0])), W[:32, c].numpy())
            ax.set_title(f"W1 col {c} |w|={float(W[:, c].norm()):.2f}", fontsize=11)
    # row 1: eq. 9 match + representation bars
    ax = fig.add_subplot(gs[1, 0:2])
    eq9 = numbers.get("memorize", {}).get("eq9")
    if eq9:
        i = np.arange(len(eq9["best_cos"]))
        ax.bar(i - 0.2, eq9["effective_norm"], 0.4, label="learned ||[W1^T x/|x|]_+||")
        ax.bar(i + 0.2, eq9["eq9_norm"], 0.4, label="eq. 9: r_i ||x_i||")
        ax.plot(i, eq9["best_cos"], "k.-", label="cos(best column, x_i)")
        ax.set_xlabel("training sample")
        ax.set_title("memorization vs eq. 9", fontsize=12)
        ax.legend(fontsize=10)
    for j, r in enumerate(regimes[:2]):
        ax = fig.add_subplot(gs[1, 2 + 2 * j:4 + 2 * j])
        h = res.arrays[r]["h_example"].numpy()
        ax.bar(range(len(h)), h)
        ax.set_title(f"{r}: representation of one training sample (std {h.std():.2f})", fontsize=12)
    # row 2: std histograms
    for j, r in enumerate(regimes):
        ax = fig.add_subplot(gs[2, 2 * j:2 * j + 2])
        a = res.arrays[r]
        bins = np.linspace(0, float(max(a["std_train"].max(), a["std_test"].max())) * 1.05 + 1e-9, 30)
        ax.hist(a["std_train"].numpy(), bins, alpha=0.6, density=True, label="train")
        ax.hist(a["std_test"].numpy(), bins, alpha=0.6, density=True, label="test")
        if "std_dup" in a:
            ax.hist(a["std_dup"].numpy(), bins, alpha=0.6, density=True, label="duplicated")
        ax.set_title(f"{r}: representation std", fontsize=12)
        ax.legend(fontsize=10)
    # row 3: denoising / samples
    for j, r in enumerate(regimes):
        a = res.arrays[r]
        data = res.data[r]
        ax = fig.add_subplot(gs[3, 2 * j:2 * j + 2])
        if data.image_shape:
            tiles = [a["denoise_train"]["noisy"][0], a["denoise_train"]["out"][0],
                     a["denoise_test"]["noisy"][0], a["denoise_test"]["out"][0]]
            if "samples" in a:
                tiles += [a["samples"][k] for k in range(min(4, len(a["samples"])))]
            side = data.image_shape[-1]
            row = np.concatenate([(t + data.mean).reshape(side, side).clamp(-1.5, 1.5).numpy() for t in tiles], 1)
            ax.imshow(row, cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{r}: train noisy/denoised, test noisy/denoised" + (", DDIM samples" if "samples" in a else ""),
                         fontsize=11)
        else:
            n = numbers[r]
            ax.bar(["train", "test", "noisy"], [n["denoise_mse_train"], n["denoise_mse_test"], n["noisy_input_mse"]])
            ax.set_title(f"{r}: one-step denoising MSE", fontsize=12)
    fig.suptitle("Two-layer ReLU DAE: memorization vs generalization (Zhang et al. 2025, §3)", fontsize=14)
    return fig


# ------------------------------------------------------------------------------------------ MoG DDPM
@locked
def mog_ddpm_figure(res):
    """Angle / distance to the true mean per iteration: GD vs power iteration (large noise), vs
    (gradient) EM (small noise) and the two-stage run; K > 2: matched distance of GD and EM."""
    if "K" in res.curves:
        fig = Figure(figsize=(6, 4), dpi=100)
        ax = fig.subplots()
        for k, c in res.curves["K"].items():
            ax.plot(c["dist"], label=k)
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel("mean matched ||mu_k - mu_k*||")
        ax.legend()
        ax.set_title(f"K = {res.settings.K} components (soft-max student)", fontsize=12)
        fig.tight_layout(rect=(0, 0, 0.95, 0.92))
        return fig
    panels = [("large", "angle", "large noise: angle to mu_t* (deg)"),
              ("small", "dist", "small noise: distance to mu_t*"),
              ("two_stage", "dist", "two-stage: small noise from the large-noise estimate")]
    panels = [p for p in panels if p[0] in res.curves]
    fig = Figure(figsize=(5 * max(1, len(panels)), 3.8), dpi=100)
    axes = fig.subplots(1, max(1, len(panels)))
    axes = np.atleast_1d(axes)
    for ax, (stage, key, title) in zip(axes, panels):
        for name, c in res.curves[stage].items():
            ls = "--" if name in ("power_iteration", "gradient_em", "em") else "-"
            ax.plot(c[key], ls, label=name)
        if key == "dist":
            ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_title(title, fontsize=12)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=10)
    fig.suptitle("DDPM objective on 1/2 N(mu*, I) + 1/2 N(-mu*, I) (Shah et al. 2023)", fontsize=13, x=0.45)
    fig.tight_layout(rect=(0, 0, 0.97, 0.9))   # headroom: the app's image toolbar sits over the top right
    return fig


# ------------------------------------------------------------------------------------------ MoLR-MoG
@locked
def molr_mog_figure(res):
    """DSM loss curves of the three scores (Yang et al. 2026, Fig. 3 analogue) and their samples."""
    names = list(res.samples)
    fig = Figure(figsize=(4 * (len(names) + 1), 4), dpi=90)
    ax = fig.add_subplot(1, len(names) + 1, 1)
    for k, c in res.curves.items():
        ax.plot(np.arange(1, len(c) + 1) * 10, c, label=f"{k} ({res.values['param_counts'][k]} params)")
    if "oracle_loss" in res.values:
        ax.axhline(res.values["oracle_loss"], color="k", ls=":", label="true score")
    ax.set_xlabel("step")
    ax.set_ylabel("DSM loss")
    ax.set_title("loss curves (Fig. 3 analogue)", fontsize=12)
    ax.legend(fontsize=10)
    A = res.data.A
    for j, name in enumerate(names):
        ax = fig.add_subplot(1, len(names) + 1, j + 2)
        S = res.samples[name]
        if res.settings.data == "digits":
            side = 16
            n = min(20, len(S))
            grid = np.concatenate([np.concatenate([S[r * 5 + c].reshape(side, side).clamp(-1, 1).numpy()
                                                   for c in range(5)], 1) for r in range(n // 5)], 0)
            ax.imshow(grid, cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            truth = res.data.truth
            k0 = 0
            y = S @ A[k0]
            off = (S.pow(2).sum(1) - y.pow(2).sum(1)).clamp_min(0).sqrt()
            mask = off < 0.5
            ax.scatter(y[mask, 0].numpy(), y[mask, 1].numpy() if y.shape[1] > 1 else np.zeros(int(mask.sum())),
                       s=5, alpha=0.6, label="samples on subspace 1")
            if truth is not None:
                m = truth.mu[k0]
                ax.scatter(m[:, 0].numpy(), m[:, 1].numpy() if m.shape[1] > 1 else np.zeros(len(m)),
                           marker="x", color="r", s=60, label="true modes")
            ax.legend(fontsize=10)
            ax.set_aspect("equal")
        ax.set_title(f"{name} samples", fontsize=12)
    fig.tight_layout(rect=(0, 0, 0.97, 0.88))   # headroom: the app's image toolbar sits over the top right
    return fig


def save(fig, path, dpi: int | None = None) -> Path:
    """Write ``fig`` as PNG at its own dpi and close it; the UI and the CLI both use this, so the
    tab's figure and ``--png`` are the same image. (The figures lay themselves out: a tight bounding
    box would draw every figure twice, and the live labs draw one per stage.)"""
    return save_figure(fig, path, dpi=dpi, tight=False)
