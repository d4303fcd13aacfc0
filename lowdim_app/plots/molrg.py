"""Figures of the MoLRG lab (seed 000 Fig. 3b/7a, Fig. 4/8, Fig. 5a)."""
from __future__ import annotations

import itertools

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def phase_heatmap(result, title: str | None = None):
    """Success rate heat map (rows d, columns N per component) with the Thm. 2/4 boundary N_k = d.
    ``result`` is a :class:`~lowdim_app.synthetic.phase.PhaseResult`; pending cells are grey."""
    grid = result.grid()
    d, N = result.d_values, result.N_values
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#d0d0d0")
    im = ax.imshow(np.ma.masked_invalid(grid), origin="lower", cmap=cmap, vmin=0, vmax=1, aspect="auto",
                   extent=(N[0] - 0.5, N[-1] + 0.5, d[0] - 0.5, d[-1] + 0.5))
    lo, hi = min(min(d), min(N)) - 0.5, max(max(d), max(N)) + 0.5
    ax.plot([lo, hi], [lo, hi], "r--", lw=2, label="$N_k = d$ (Thm. 2/4)")
    ax.set_xlim(N[0] - 0.5, N[-1] + 0.5)
    ax.set_ylim(d[0] - 0.5, d[-1] + 0.5)
    ax.set_xlabel("samples per component $N_k$")
    ax.set_ylabel("subspace dimension $d$")
    st = result.settings
    ax.set_title(title or f"{st.get('method')}  K={st.get('K')}  n={st.get('n')}  "
                 f"({result.cells_done}/{result.cells_total} cells)")
    ax.legend(loc="upper left", fontsize=8)
    fig.colorbar(im, ax=ax, label="success rate")
    fig.tight_layout()
    return fig


def rank_vs_snr_figure(out: dict):
    """Numerical rank / n of the denoiser Jacobian vs SNR (log x) with Lemma 2's band shaded."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    snr = np.asarray(out["snr"])
    lo, hi = out["bounds"]
    ax.axhspan(lo, hi, color="tab:blue", alpha=0.12, label="Lemma 2: $\\min d_k \\leq$ rank $\\leq \\sum d_k$")
    for (name, vals), mk in zip(out["models"].items(), itertools.cycle("osd^v<>")):
        ax.plot(snr, vals, marker=mk, ms=4, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("SNR $1/\\sigma_t$")
    ax.set_ylabel("rank$(\\nabla x_\\theta)$ / n")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax.set_title(f"n={out['settings']['n']}, d_k={out['settings']['dims']}")
    fig.tight_layout()
    return fig


def gl_figure(result):
    """GL score (eq. 21) vs N_k / d_k, one curve per d_k (Fig. 5a)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    by_d: dict[int, list] = {}
    for r in result.rows:
        by_d.setdefault(r["d"], []).append((r["ratio"], r["gl"]))
    for d, pts in sorted(by_d.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"$d_k = {d}$")
    ax.axhline(1.0, color="grey", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("$N_k / d_k$")
    ax.set_ylabel("GL score (eq. 21)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save(fig, path) -> None:
    fig.savefig(path, dpi=110)
    plt.close(fig)
