"""Nearest training images: the offline stand-in for the paper's SSCD copy detection.

Distance: RMS pixel distance in [-1, 1] units, ``||x - y||_2 / sqrt(n)``. On the built-in
digits split, held-out test digits lie at RMS >= 0.084 from their nearest training digit
(1st percentile 0.098, median 0.18), so we call a sample a **near-copy** (memorized) when
its nearest training image is closer than ``COPY_THRESHOLD = 0.07`` and **novel**
(generalized) when it is farther than ``NOVEL_THRESHOLD = 0.10``; in between is ambiguous.
(Zhang et al. 2025, App. B.2, uses SSCD similarity > 0.9 / < 0.5 the same way.)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

COPY_THRESHOLD = 0.07
NOVEL_THRESHOLD = 0.10


@dataclass
class Neighbours:
    distance: torch.Tensor  # N x k RMS distances, ascending
    index: torch.Tensor     # N x k indices into the reference set

    @property
    def nearest(self) -> torch.Tensor:
        return self.distance[:, 0]

    def labels(self) -> np.ndarray:
        """'memorized' / 'generalized' / 'ambiguous' per query by the thresholds above."""
        d = self.nearest.numpy()
        return np.where(d < COPY_THRESHOLD, "memorized", np.where(d > NOVEL_THRESHOLD, "generalized", "ambiguous"))


def nearest(queries: torch.Tensor, reference: torch.Tensor, k: int = 1, chunk: int = 1024) -> Neighbours:
    """k nearest reference images of each query (both ``N x ...`` in [-1, 1], same shape)."""
    q = queries.reshape(len(queries), -1).float()
    r = reference.reshape(len(reference), -1).float()
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"query size {q.shape[1]} != reference size {r.shape[1]}")
    k = min(k, len(r))
    ds, ix = [], []
    for i in range(0, len(q), chunk):
        d = torch.cdist(q[i:i + chunk], r) / q.shape[1] ** 0.5
        v, j = d.topk(k, dim=1, largest=False)
        ds.append(v)
        ix.append(j)
    return Neighbours(torch.cat(ds), torch.cat(ix))
