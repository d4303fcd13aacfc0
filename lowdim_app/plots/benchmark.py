"""The memorization benchmark's ROC curves: one curve per detector, false-positive rate on a log axis
(the 1 % and 3 % operating points of Wen et al. 2024 / Jeon et al. 2025 marked)."""
from __future__ import annotations

import numpy as np

from .common import locked, new_figure

FPR_FLOOR = 1e-3    # a zero false-positive rate is drawn here on the log axis


@locked
def benchmark_roc(curves: dict, title: str = ""):
    """``curves``: ``{label: (fpr, tpr)}`` in the detectors' memorized direction."""
    fig, ax = new_figure(6.4, 4.6)
    for i, (label, (fpr, tpr)) in enumerate(curves.items()):
        ax.plot(np.maximum(np.asarray(fpr, float), FPR_FLOOR), tpr, label=label, color=f"C{i % 10}",
                ls="-" if i < 10 else "--")
    for x in (0.01, 0.03):
        ax.axvline(x, color="gray", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlim(FPR_FLOOR, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"false-positive rate (log; 0 drawn at {FPR_FLOOR:g}; dotted: 1%, 3%)")
    ax.set_ylabel("true-positive rate")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return fig
