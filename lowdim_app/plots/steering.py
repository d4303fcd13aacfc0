"""The concept-strength curve of representation steering (Zhang et al. 2025, arXiv:2512.20963, §4.2,
Fig. 8): concept strength of the steered samples against the steering strength ``a``, one line per source."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .common import locked, new_figure


@locked
def strength_curve_figure(strengths: Sequence[float], curves: Mapping[str, Sequence[float]], ylabel: str,
                          probability: bool = True, reference: Mapping[str, Mapping] | None = None):
    """One ``o-`` line per ``curves[label]`` over ``strengths``; a probability axis is fixed to [0, 1].

    ``reference``: label (``memorized`` / ``generalized``) -> ``{"strengths", "p_median", "p_q25", "p_q75",
    "n", "model"}``, the contrast measured over many samples, drawn behind as a median line with its quartile band in
    the colour of the matching contrast curve."""
    fig, ax = new_figure(5.5, 3.6)
    colors = {}
    for i, (label, ys) in enumerate(curves.items()):
        colors[label.split(" ")[0]] = f"C{i}"
        ax.plot(np.asarray(strengths, dtype=float), np.asarray(ys, dtype=float), "o-", color=f"C{i}", label=label)
    top = float(np.max(strengths)) if len(strengths) else 0.0
    for label, ref in (reference or {}).items():
        a = np.asarray(ref["strengths"], dtype=float)
        keep = a <= top + 1e-9 if top > a[0] else np.ones(len(a), bool)    # over the run's strengths only
        color = colors.get(label, "0.5")
        ax.fill_between(a[keep], np.asarray(ref["p_q25"])[keep], np.asarray(ref["p_q75"])[keep], color=color,
                        alpha=0.15, lw=0)
        who = f"{label}, {ref['model']}" if ref.get("model") else label
        ax.plot(a[keep], np.asarray(ref["p_median"])[keep], color=color, lw=1.2, ls="--",
                label=f"{who}: median, quartiles of {ref.get('n', '?')}")
    ax.set_xlabel("steering strength a")
    ax.set_ylabel(ylabel)
    if probability:
        ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2 if reference else min(3, len(curves)),
              frameon=False)   # under the axis, off the data
    fig.tight_layout()
    return fig
