"""One-class calibration: a memorization threshold from images known *not* to be training data, with
the false-positive rate it promises and that promise's uncertainty for the reference size.

Reference scores ``r_1..r_n`` (turned so that larger = more memorized-looking) of images exchangeable
with the non-members a user will score. The threshold is the ``k``-th smallest, ``k = ceil((n + 1)(1 -
alpha))`` (split conformal; Vovk, Gammerman & Shafer 2005; Angelopoulos & Bates 2021, "A Gentle
Introduction to Conformal Prediction", arXiv:2107.07511, §1, §3.2): a new non-member scores above it
with probability ``(n + 1 - k) / (n + 1) <= alpha`` on average over reference sets. For one fixed
reference set the false-positive rate is itself random: for continuous scores it is distributed as
``Beta(n + 1 - k, k)`` (the coverage of an order statistic; Vovk 2012, "Conditional validity of
inductive conformal predictors", arXiv:1209.2673; Angelopoulos & Bates 2021, §3.2), so the promise
is stated as that mean, a central interval and a one-sided upper bound at the chosen confidence.
With ``n < 1 / alpha - 1`` references no threshold keeps a rate ``alpha`` and the fit refuses.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import UserError, check_range

__all__ = ["FprPromise", "fit_one_class", "min_reference_size"]


@dataclass(frozen=True)
class FprPromise:
    target_fpr: float       # alpha asked for
    n_reference: int        # n
    rank: int               # k: the threshold is the k-th smallest reference score (memorized direction)
    expected_fpr: float     # (n + 1 - k) / (n + 1), <= alpha
    confidence: float       # of the interval and the bound
    fpr_low: float          # central interval of Beta(n + 1 - k, k) at ``confidence``
    fpr_high: float
    fpr_upper: float        # one-sided: the FPR is below this with probability ``confidence``

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        c = round(100 * self.confidence)
        return (f"promised false-positive rate {100 * self.expected_fpr:.2g}% on average (target {100 * self.target_fpr:.3g}%); "
                f"for these {self.n_reference} reference images it lies in [{100 * self.fpr_low:.2g}%, "
                f"{100 * self.fpr_high:.2g}%] with {c}% probability and is below {100 * self.fpr_upper:.2g}% with {c}% "
                "probability (conformal, Beta-distributed coverage)")


def min_reference_size(target_fpr: float) -> int:
    """Fewest references for which some threshold keeps a false-positive rate ``target_fpr``."""
    return max(1, math.ceil(1.0 / target_fpr - 1.0 - 1e-9))


def promise(n: int, target_fpr: float, confidence: float = 0.95) -> FprPromise:
    """The FPR promise of the conformal threshold for ``n`` references (no scores needed)."""
    from scipy.stats import beta

    check_range("target false-positive rate", target_fpr, 1e-6, 0.5)
    check_range("confidence", confidence, 0.5, 0.9999)
    k = math.ceil((n + 1) * (1 - target_fpr) - 1e-9)
    if n < 1 or k > n:
        raise UserError(f"a one-class threshold at a false-positive rate of {100 * target_fpr:g}% needs at least "
                        f"{min_reference_size(target_fpr)} reference images, got {n} (give more, or raise the target "
                        f"to at least {100 / (n + 1):.2g}%)")
    a, b = n + 1 - k, k
    tail = (1 - confidence) / 2
    return FprPromise(float(target_fpr), int(n), int(k), a / (n + 1), float(confidence),
                      float(beta.ppf(tail, a, b)), float(beta.ppf(1 - tail, a, b)), float(beta.ppf(confidence, a, b)))


def fit_one_class(reference_scores, direction: int, target_fpr: float = 0.01,
                  confidence: float = 0.95) -> tuple[float, FprPromise]:
    """``(threshold, promise)``: memorized when ``direction * (score - threshold) > 0``."""
    r = np.asarray(reference_scores, dtype=float)
    if not np.isfinite(r).all():
        raise UserError("a reference score is not a finite number")
    if direction not in (1, -1):
        raise UserError("direction must be +1 (higher = memorized) or -1 (lower = memorized)")
    p = promise(len(r), target_fpr, confidence)
    z = np.sort(direction * r)
    return float(direction * z[p.rank - 1]), p
