"""Shared numerical measures, in one neutral place (no model, no UI code).

* :func:`numerical_rank` -- Wang et al. 2024 (arXiv:2409.02426), App. D.1 eq. 46;
* :func:`principal_cosines`, :func:`subspace_cosine` -- principal angles between subspaces;
* :func:`spikiness` -- statistics of a representation vector (Zhang et al. 2025, §3.1 / Alg. 1:
  the standard deviation, and the alternatives the paper compares);
* :func:`auroc`, :func:`tpr_at_fpr`, :func:`roc` -- detection quality through scikit-learn;
* :func:`first_crossing` -- where a sampled curve first reaches a level (interpolated);
* :func:`nearest` -- nearest reference images by RMS pixel distance (the offline stand-in for copy
  detection).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import UserError

SPIKINESS_METRICS = ("std", "l4_l2", "entropy", "max_min")
_TINY = 1e-30


# ----------------------------------------------------------------------------- rank
def numerical_rank(singular_values, eta: float = 0.99):
    """Smallest ``r`` with ``sum_{i<=r} s_i^2 / sum_i s_i^2 > eta^2`` (eq. 46, ``eta = 0.99``).

    ``singular_values``: ``(..., n)`` in any order (signs ignored). Returns an ``int`` for a 1-D
    input and a ``torch.long`` tensor of shape ``(...)`` for a batched one; an all-zero spectrum
    has rank 0.
    """
    if not 0.0 < eta <= 1.0:
        raise UserError(f"eta must be in (0, 1], got {eta}")
    s = torch.as_tensor(singular_values)
    if not torch.is_floating_point(s):
        s = s.double()
    s2 = torch.sort(s.abs() ** 2, dim=-1, descending=True).values
    total = s2.sum(-1, keepdim=True)
    frac = torch.cumsum(s2, -1) / torch.where(total > 0, total, torch.ones_like(total))
    # tiny slack so an exactly flat spectrum with eta = 1 still reaches n
    below = (frac <= eta ** 2 * (1 - 1e-12)).sum(-1) + 1
    r = torch.where(total[..., 0] > 0, below.clamp(max=s.shape[-1]), torch.zeros_like(below))
    return int(r) if r.ndim == 0 else r


# ----------------------------------------------------------------------------- subspaces
def principal_cosines(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Cosines of the principal angles between the row spaces of ``A`` and ``B`` (``(k, ...)``
    tensors, rows need not be orthonormal); descending, length ``min(k_A, k_B)``."""
    a = A.reshape(A.shape[0], -1).double().T
    b = B.reshape(B.shape[0], -1).double().T.to(a.device)
    qa, _ = torch.linalg.qr(a)
    qb, _ = torch.linalg.qr(b)
    return torch.linalg.svdvals(qa.T @ qb).clamp(max=1.0)


def subspace_cosine(A: torch.Tensor, B: torch.Tensor) -> float:
    """Smallest principal-angle cosine between the two row spaces (1 = the same subspace)."""
    return float(principal_cosines(A, B).min())


# ----------------------------------------------------------------------------- spikiness
def first_crossing(x, values, level: float) -> float | None:
    """The ``x`` where ``values`` (sampled at increasing or decreasing ``x``) first reach ``level`` from below,
    linearly interpolated between the samples; ``None`` if never."""
    a, y = np.asarray(x, dtype=float), np.asarray(values, dtype=float)
    idx = np.nonzero(y >= level)[0]
    if not len(idx):
        return None
    i = idx[0]
    if i == 0:
        return float(a[0])
    return float(a[i - 1] + (level - y[i - 1]) / (y[i] - y[i - 1]) * (a[i] - a[i - 1]))


def spikiness(h: torch.Tensor, metric: str = "std") -> torch.Tensor:
    """Per-row spikiness of ``N x C`` representations (higher = spikier, except ``entropy``).

    * ``std``: standard deviation over channels (the paper's score);
    * ``l4_l2``: ``||h||_4 / ||h||_2`` (1 for one-hot, ``C^{-1/4}`` for flat);
    * ``entropy``: Shannon entropy of ``|h| / sum |h|`` (low = spiky);
    * ``max_min``: ``max(h) - min(h)``.
    """
    h = torch.as_tensor(h).double()
    if metric == "std":
        return h.std(dim=1, correction=0)
    if metric == "l4_l2":
        return h.norm(p=4, dim=1) / h.norm(p=2, dim=1).clamp(min=_TINY)
    if metric == "entropy":
        p = h.abs() / h.abs().sum(1, keepdim=True).clamp(min=_TINY)
        return -(p * torch.log(p.clamp(min=_TINY))).sum(1)
    if metric == "max_min":
        return h.amax(1) - h.amin(1)
    raise UserError(f"unknown metric {metric!r}; choose one of {', '.join(SPIKINESS_METRICS)}")


# ----------------------------------------------------------------------------- detection
def _labelled(pos, neg) -> tuple[np.ndarray, np.ndarray]:
    pos = np.asarray(torch.as_tensor(pos).double().flatten().cpu(), dtype=float)
    neg = np.asarray(torch.as_tensor(neg).double().flatten().cpu(), dtype=float)
    return np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg]


def auroc(pos, neg) -> float:
    """Area under the ROC curve for "``pos`` scores higher than ``neg``" (NaN if a side is empty)."""
    from sklearn.metrics import roc_auc_score

    y, s = _labelled(pos, neg)
    if y.min() == y.max():
        return float("nan")
    return float(roc_auc_score(y, s))


def roc(pos, neg) -> tuple[np.ndarray, np.ndarray]:
    """``(fpr, tpr)`` of the ROC curve for "higher score = positive"."""
    from sklearn.metrics import roc_curve

    y, s = _labelled(pos, neg)
    fpr, tpr, _ = roc_curve(y, s)
    return fpr, tpr


def tpr_at_fpr(pos, neg, fpr: float = 0.01) -> float:
    """True-positive rate at a false-positive rate (the ROC curve interpolated at ``fpr``)."""
    f, t = roc(pos, neg)
    return float(np.interp(fpr, f, t))


# ----------------------------------------------------------------------------- neighbours
@dataclass
class Neighbours:
    distance: torch.Tensor  # N x k RMS distances, ascending
    index: torch.Tensor     # N x k indices into the reference set

    @property
    def nearest(self) -> torch.Tensor:
        return self.distance[:, 0]


def nearest(queries: torch.Tensor, reference: torch.Tensor, k: int = 1, chunk: int = 1024) -> Neighbours:
    """``k`` nearest reference rows of each query by RMS distance ``||x - y||_2 / sqrt(n)``
    (both ``N x ...``, same trailing size)."""
    q = queries.reshape(len(queries), -1).float()
    r = reference.reshape(len(reference), -1).float()
    if q.shape[1] != r.shape[1]:
        raise UserError(f"query size {q.shape[1]} != reference size {r.shape[1]}")
    k = min(k, len(r))
    ds, ix = [], []
    for i in range(0, len(q), chunk):
        d = torch.cdist(q[i:i + chunk], r) / q.shape[1] ** 0.5
        v, j = d.topk(k, dim=1, largest=False)
        ds.append(v)
        ix.append(j)
    return Neighbours(torch.cat(ds), torch.cat(ix))
