"""Memorization figures: scores against a calibration's reference distributions, and its ROC
(Zhang et al. 2025, arXiv:2512.20963, §4.1, Table 1). Plain numbers in, matplotlib Figures out."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .common import locked, new_figure

MAX_MARKED = 50   # score lines drawn over the histogram


@locked
def scores_histogram(scores: Sequence[float], *, memorized: Sequence[float] = (), generalized: Sequence[float] = (),
                     threshold: float | None = None, fpr: float | None = None, metric: str = "std"):
    """Histogram of the reference scores (generalized / memorized), the threshold, and one line per scored image."""
    fig, ax = new_figure(6, 3.8)
    if threshold is not None:
        bins = np.histogram_bin_edges(np.r_[list(memorized), list(generalized), list(scores)], bins=30)
        if len(generalized):
            ax.hist(generalized, bins=bins, alpha=0.5, label="reference: generalized", color="C0")
        if len(memorized):
            ax.hist(memorized, bins=bins, alpha=0.5, label="reference: memorized", color="C3")
        ax.axvline(threshold, color="k", ls="--", label="threshold" + ("" if fpr is None else f" (FPR {fpr:.3f})"))
    for i, s in enumerate(list(scores)[:MAX_MARKED]):
        ax.axvline(s, color="C2", lw=1.5, alpha=0.8, label="your images" if i == 0 else None)
    ax.set_xlabel("denoising error (lower = memorized)" if metric == "denoising_error"
                  else f"spikiness ({metric}) of the pooled representation")
    ax.set_ylabel("count")
    ax.set_title("your images against the model's references", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)   # under the bars
    fig.tight_layout()
    return fig


@locked
def roc_figure(fpr: Sequence[float], tpr: Sequence[float], auroc: float | None, tpr_at_1pct_fpr: float | None):
    """ROC curve with the chance diagonal and the 1% false-positive-rate line (Table 1's TPR)."""
    fig, ax = new_figure(4.5, 4)
    ax.plot(fpr, tpr, label="AUROC n/a" if auroc is None else f"AUROC {auroc:.3f}")
    ax.plot([0, 1], [0, 1], ":", color="gray")
    ax.axvline(0.01, color="C3", ls="--", lw=1,
               label="TPR@1%FPR n/a" if tpr_at_1pct_fpr is None else f"TPR@1%FPR {tpr_at_1pct_fpr:.3f}")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.legend(fontsize=8)
    return fig


@locked
def audit_histogram(scores: Sequence[float], *, memorized: Sequence[float] = (), generalized: Sequence[float] = (),
                    threshold: float | None = None, fpr: float | None = None, metric: str = "std"):
    """A whole audit's scores as a density histogram over the calibration's reference densities and threshold."""
    fig, ax = new_figure(6.4, 3.4)
    scores = np.asarray([s for s in scores if np.isfinite(s)], dtype=float)
    bins = np.histogram_bin_edges(np.r_[list(memorized), list(generalized), scores], bins=40)
    if len(generalized):
        ax.hist(generalized, bins=bins, density=True, alpha=0.45, label="reference: generalized", color="C0")
    if len(memorized):
        ax.hist(memorized, bins=bins, density=True, alpha=0.45, label="reference: memorized", color="C3")
    if len(scores):
        ax.hist(scores, bins=bins, density=True, histtype="step", lw=2, color="C2",
                label=f"audited images (n = {len(scores)})")
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", label="threshold" + ("" if fpr is None else f" (FPR {fpr:.3f})"))
    ax.set_xlabel("denoising error (lower = memorized)" if metric == "denoising_error"
                  else f"spikiness ({metric}) of the pooled representation")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return fig
