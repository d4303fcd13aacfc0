"""Figures of the MoLRG labs (Wang et al. 2024, arXiv:2409.02426: Fig. 3b/7a, Fig. 4/8, Fig. 5a).

Every function returns a standalone :class:`matplotlib.figure.Figure` (no pyplot state, so
concurrent requests never share a figure and nothing needs closing).
"""
from __future__ import annotations

import itertools

import matplotlib
import matplotlib.ticker
import numpy as np
from matplotlib.figure import Figure
from .common import locked


@locked
def phase_heatmap(grid, d_values, N_values, title: str = ""):
    """Success rate heat map (rows ``d_values``, columns ``N_values`` per component) with the
    Thm. 2/4 boundary ``N_k = d`` (Fig. 4/8). ``grid`` holds NaN for pending cells (grey)."""
    d, N = list(d_values), list(N_values)
    fig = Figure(figsize=(6.4, 4.6))
    ax = fig.subplots()
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#d0d0d0")
    im = ax.imshow(np.ma.masked_invalid(np.asarray(grid, float)), origin="lower", cmap=cmap, vmin=0, vmax=1,
                   aspect="auto", extent=(N[0] - 0.5, N[-1] + 0.5, d[0] - 0.5, d[-1] + 0.5))
    lo, hi = min(min(d), min(N)) - 0.5, max(max(d), max(N)) + 0.5
    ax.plot([lo, hi], [lo, hi], "r--", lw=2, label="$N_k = d$ (Thm. 2/4)")
    ax.set_xlim(N[0] - 0.5, N[-1] + 0.5)
    ax.set_ylim(d[0] - 0.5, d[-1] + 0.5)
    ax.set_xlabel("samples per component $N_k$")
    ax.set_ylabel("subspace dimension $d$")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=9, frameon=False)   # under the map
    fig.colorbar(im, ax=ax, label="success rate")
    fig.tight_layout()
    return fig


@locked
def rank_vs_snr_figure(snr, models: dict, bounds, title: str = ""):
    """Numerical rank / n of the denoiser Jacobian vs SNR (log x) with Lemma 2's band shaded
    (Fig. 3b / 7a). ``models``: curve name -> values at ``snr``; ``bounds``: ``(lo, hi)`` as ratios."""
    fig = Figure(figsize=(7.6, 4.0))
    ax = fig.subplots()
    snr = np.asarray(snr)
    lo, hi = bounds
    ax.axhspan(lo, hi, color="tab:blue", alpha=0.12, label="Lemma 2: $\\min d_k \\leq$ rank $\\leq \\sum d_k$")
    for i, ((name, vals), mk) in enumerate(zip(models.items(), itertools.cycle("osd^v<>"))):
        if i == 0:   # the reference curve: wide and pale underneath, so curves lying on it stay visible
            ax.plot(snr, vals, lw=7, alpha=0.35, color="tab:gray", solid_capstyle="round", label=name, zorder=2)
        else:
            ax.plot(snr, vals, marker=mk, ms=4, lw=1.5, label=name, zorder=3)
    ax.set_xscale("log")
    ax.set_xlabel("SNR $1/\\sigma_t$")
    ax.set_ylabel("rank$(\\nabla x_\\theta)$ / n")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)   # beside the data
    ax.set_title(title)
    fig.tight_layout()
    return fig


@locked
def gl_figure(rows: list[dict]):
    """GL score (eq. 21) vs ``N_k / d_k``, one curve per ``d_k`` (Fig. 5a); ``rows`` carry
    ``d``, ``ratio`` and ``gl``."""
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    by_d: dict[int, list] = {}
    for r in rows:
        by_d.setdefault(r["d"], []).append((r["ratio"], r["gl"]))
    for d, pts in sorted(by_d.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"$d_k = {d}$")
    ax.axhline(1.0, color="grey", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("$N_k / d_k$")
    ax.set_ylabel("GL score (eq. 21)")
    if by_d:
        ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)   # beside the data
    fig.tight_layout()
    return fig
