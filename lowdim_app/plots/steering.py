"""The concept-strength curve of representation steering (Zhang et al. 2025, arXiv:2512.20963, §4.2,
Fig. 8): concept strength of the steered samples against the steering strength ``a``, one line per source."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .common import locked, new_figure


@locked
def strength_curve_figure(strengths: Sequence[float], curves: Mapping[str, Sequence[float]], ylabel: str,
                          probability: bool = True):
    """One ``o-`` line per ``curves[label]`` over ``strengths``; a probability axis is fixed to [0, 1]."""
    fig, ax = new_figure(5.5, 3.6)
    for label, ys in curves.items():
        ax.plot(np.asarray(strengths, dtype=float), np.asarray(ys, dtype=float), "o-", label=label)
    ax.set_xlabel("steering strength a")
    ax.set_ylabel(ylabel)
    if probability:
        ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=min(3, len(curves)),
              frameon=False)   # under the axis, off the data
    fig.tight_layout()
    return fig
