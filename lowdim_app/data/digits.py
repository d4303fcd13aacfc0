"""Built-in data: scikit-learn's 8x8 digits as 1x16x16 images in [-1, 1].

The split is fixed and seeded (``SPLIT_SEED``), so every model card, calibration and
test refers to the same training and test images.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

SPLIT_SEED = 0
TEST_FRACTION = 0.2
IMAGE_SIZE = 16


@dataclass(frozen=True)
class DigitsSplit:
    """Images are float32 tensors ``N x 1 x 16 x 16`` in [-1, 1]; labels int64 ``N``.

    ``train_index`` / ``test_index`` index into scikit-learn's ``load_digits()`` order.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    train_index: np.ndarray
    test_index: np.ndarray


def upsample_digits(raw: np.ndarray, size: int = IMAGE_SIZE) -> torch.Tensor:
    """``N x 64`` values in [0, 16] -> ``N x 1 x size x size`` in [-1, 1] (bilinear)."""
    x = torch.as_tensor(raw, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x.clamp(0, 1) * 2 - 1).contiguous()


@lru_cache(maxsize=1)
def _split() -> DigitsSplit:
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(SPLIT_SEED)
    order = rng.permutation(len(digits.target))
    n_test = int(round(TEST_FRACTION * len(order)))
    test_index, train_index = np.sort(order[:n_test]), np.sort(order[n_test:])
    images = upsample_digits(digits.data)
    labels = torch.as_tensor(digits.target, dtype=torch.int64)
    return DigitsSplit(
        train_images=images[train_index],
        train_labels=labels[train_index],
        test_images=images[test_index],
        test_labels=labels[test_index],
        train_index=train_index,
        test_index=test_index,
    )


def load_digits_split() -> DigitsSplit:
    """The fixed train/test split (1438 train, 359 test): a fresh copy on every call (about 2 MB), so
    no caller can change the data another request sees."""
    s = _split()
    return DigitsSplit(train_images=s.train_images.clone(), train_labels=s.train_labels.clone(),
                       test_images=s.test_images.clone(), test_labels=s.test_labels.clone(),
                       train_index=s.train_index.copy(), test_index=s.test_index.copy())


def subset_indices(n: int, seed: int, n_total: int | None = None) -> np.ndarray:
    """``n`` distinct training-set indices chosen with ``seed`` (sorted), used for ``--subset``."""
    n_total = len(load_digits_split().train_labels) if n_total is None else n_total
    if not 0 < n <= n_total:
        raise ValueError(f"subset size must be in 1..{n_total}, got {n}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_total, size=n, replace=False))
