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
    one-step denoising and DDIM samples. Laid out for the app's width (about 900 px): short titles,
    legends beside or under the data, never over it."""
    regimes = [r for r in ("memorize", "generalize", "hybrid") if r in res.models]
    numbers = res.values
    fig = Figure(figsize=(10, 9.5), dpi=90)
    gs = fig.add_gridspec(4, 6, hspace=0.95, wspace=0.45, left=0.06, right=0.98, top=0.88, bottom=0.03,
                          height_ratios=(0.6, 1, 1, 0.95))
    mem = res.data.get("memorize")
    shape = mem.image_shape if mem is not None and mem.image_shape else None
    # row 0: W1 columns of the memorizing model (images) or their first entries
    if "memorize" in res.models:
        W = res.models["memorize"].W1
        order = torch.argsort(W.norm(dim=0), descending=True)[:6]
        for j, c in enumerate(order.tolist()):
            ax = fig.add_subplot(gs[0, j])
            if shape:
                _img(ax, W[:, c], shape)
            else:
                ax.bar(range(min(32, W.shape[0])), W[:32, c].numpy())
                ax.tick_params(labelsize=7)
            ax.set_title(f"column {c}\n|w| = {float(W[:, c].norm()):.2f}", fontsize=9)
        fig.text(0.5, 0.93, "memorize: the largest columns of W1 (copies of training samples, eq. 9)",
                 ha="center", fontsize=10)
    # row 1: eq. 9 match, then one representation per regime
    ax = fig.add_subplot(gs[1, 0:2])
    eq9 = numbers.get("memorize", {}).get("eq9")
    if eq9:
        i = np.arange(len(eq9["best_cos"]))
        ax.bar(i - 0.2, eq9["effective_norm"], 0.4, label="learned")
        ax.bar(i + 0.2, eq9["eq9_norm"], 0.4, label="eq. 9: r_i ||x_i||")
        ax.plot(i, eq9["best_cos"], "k.-", label="cos(column, x_i)")
        ax.set_xlabel("training sample", fontsize=9)
        ax.set_title("memorize vs eq. 9", fontsize=10)
        ax.tick_params(labelsize=8)
        box = gs[1, :].get_position(fig)   # the row's legend in the gap under it, off the data
        fig.legend(*ax.get_legend_handles_labels(), loc="upper left", ncol=3, fontsize=8, frameon=False,
                   bbox_to_anchor=(box.x0 - 0.02, box.y0 - 0.035))
    for j, r in enumerate(regimes[:2]):
        ax = fig.add_subplot(gs[1, 2 + 2 * j:4 + 2 * j])
        h = res.arrays[r]["h_example"].numpy()
        ax.bar(range(len(h)), h)
        ax.set_title(f"{r}: one representation\n(std {h.std():.2f})", fontsize=10)
        ax.set_xlabel("hidden unit", fontsize=9)
        ax.tick_params(labelsize=8)
    # row 2: std histograms (one legend for the row, under it)
    handles = {}
    for j, r in enumerate(regimes):
        ax = fig.add_subplot(gs[2, 2 * j:2 * j + 2])
        a = res.arrays[r]
        bins = np.linspace(0, float(max(a["std_train"].max(), a["std_test"].max())) * 1.05 + 1e-9, 30)
        for key, label in (("std_train", "train"), ("std_test", "test"), ("std_dup", "duplicated")):
            if key in a:
                *_, patches = ax.hist(a[key].numpy(), bins, alpha=0.6, density=True, label=label)
                handles.setdefault(label, patches[0])
        ax.set_title(f"{r}: representation std", fontsize=10)
        ax.tick_params(labelsize=8)
    if handles:
        box = gs[2, :].get_position(fig)
        fig.legend(list(handles.values()), list(handles), loc="upper center", ncol=len(handles), fontsize=9,
                   frameon=False, bbox_to_anchor=(0.5, box.y0 - 0.03))
    # row 3: denoising / samples
    for j, r in enumerate(regimes):
        a = res.arrays[r]
        data = res.data[r]
        ax = fig.add_subplot(gs[3, 2 * j:2 * j + 2])
        if data.image_shape:
            tiles = [a["denoise_train"]["noisy"][0], a["denoise_train"]["out"][0],
                     a["denoise_test"]["noisy"][0], a["denoise_test"]["out"][0]]
            side = data.image_shape[-1]
            sampled = "samples" in a and len(a["samples"]) >= 2
            pix = [(t + data.mean).reshape(side, side).clamp(-1.5, 1.5).numpy() for t in tiles]
            extra = [(a["samples"][k] + data.mean).reshape(side, side).clamp(-1.5, 1.5).numpy()
                     for k in range(2)] if sampled else [None, None]
            rows = [np.concatenate([p for p in (pix[0], pix[1], extra[0]) if p is not None], 1),
                    np.concatenate([p for p in (pix[2], pix[3], extra[1]) if p is not None], 1)]
            ax.imshow(np.concatenate(rows, 0), cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{r}:\nnoisy | denoised" + (" | DDIM" if sampled else ""), fontsize=10)
            ax.set_ylabel("test    train", fontsize=8)
        else:
            n = numbers[r]
            ax.bar(["train", "test", "noisy"], [n["denoise_mse_train"], n["denoise_mse_test"], n["noisy_input_mse"]])
            ax.set_title(f"{r}: one-step denoising MSE", fontsize=10)
            ax.tick_params(labelsize=8)
    fig.suptitle("Two-layer ReLU DAE: memorization vs generalization (Zhang et al. 2025, §3)", fontsize=12, y=0.985)
    return fig


# ------------------------------------------------------------------------------------------ MoG DDPM
@locked
def mog_ddpm_figure(res):
    """Angle / distance to the true mean per iteration: GD vs power iteration (large noise), vs
    (gradient) EM (small noise) and the two-stage run; K > 2: matched distance of GD and EM."""
    if "K" in res.curves:
        fig = Figure(figsize=(7.5, 4), dpi=90)
        ax = fig.subplots()
        for k, c in res.curves["K"].items():
            ax.plot(c["dist"], label=k)
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel("mean matched ||mu_k - mu_k*||")
        ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)   # beside the data
        ax.set_title(f"K = {res.settings.K} components (soft-max student)", fontsize=12)
        fig.tight_layout(rect=(0, 0, 0.95, 0.92))
        return fig
    panels = [("large", "angle", "large noise: angle to mu_t* (deg)"),
              ("small", "dist", "small noise: distance to mu_t*"),
              ("two_stage", "dist", "two-stage: small noise from the large-noise estimate")]
    panels = [p for p in panels if p[0] in res.curves]
    fig = Figure(figsize=(3.4 * max(1, len(panels)), 4.4), dpi=90)
    axes = fig.subplots(1, max(1, len(panels)))
    axes = np.atleast_1d(axes)
    for ax, (stage, key, title) in zip(axes, panels):
        for name, c in res.curves[stage].items():
            ls = "--" if name in ("power_iteration", "gradient_em", "em") else "-"
            ax.plot(c[key], ls, label=name)
        if key == "dist":
            ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_title(title.replace(": ", ":\n", 1), fontsize=10)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.24), frameon=False)   # under the axis label
    fig.suptitle("DDPM objective on 1/2 N(mu*, I) + 1/2 N(-mu*, I) (Shah et al. 2023)", fontsize=11, x=0.45)
    fig.tight_layout(rect=(0, 0, 0.97, 0.93))   # headroom: the app's image toolbar sits over the top right
    return fig


# ------------------------------------------------------------------------------------------ MoLR-MoG
@locked
def molr_mog_figure(res):
    """DSM loss curves of the three scores (Yang et al. 2026, Fig. 3 analogue) and their samples, two
    panels to a row (readable at the app's width); legends under the panels, off the data."""
    names = list(res.samples)
    panels = len(names) + 1
    rows = (panels + 1) // 2
    fig = Figure(figsize=(9, 4.2 * rows), dpi=90)
    ax = fig.add_subplot(rows, 2, 1)
    for k, c in res.curves.items():
        ax.plot(np.arange(1, len(c) + 1) * 10, c, label=f"{k} ({res.values['param_counts'][k]} params)")
    if "oracle_loss" in res.values:
        ax.axhline(res.values["oracle_loss"], color="k", ls=":", label="true score")
    ax.set_xlabel("step")
    ax.set_ylabel("DSM loss")
    ax.set_title("loss curves (Fig. 3 analogue)", fontsize=11)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)
    A = res.data.A
    sample_handles = None
    for j, name in enumerate(names):
        ax = fig.add_subplot(rows, 2, j + 2)
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
            ax.set_aspect("equal", adjustable="datalim")
            sample_handles = ax.get_legend_handles_labels()
        ax.set_title(f"{name} samples", fontsize=11)
    if sample_handles:
        fig.legend(*sample_handles, loc="lower center", ncol=2, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.05 if sample_handles else 0, 1, 0.96), h_pad=2.5)
    return fig


def save(fig, path, dpi: int | None = None) -> Path:
    """Write ``fig`` as PNG at its own dpi and close it; the UI and the CLI both use this, so the
    tab's figure and ``--png`` are the same image. (The figures lay themselves out: a tight bounding
    box would draw every figure twice, and the live labs draw one per stage.)"""
    return save_figure(fig, path, dpi=dpi, tight=False)
