"""A simple, disclosed digit classifier: multinomial logistic regression (scikit-learn) on the
256 pixels of the built-in 16x16 training digits. Used to measure sample quality (share of
confident predictions), concept strength for steering, and edit effects.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from .digits import load_digits_split

CONFIDENT = 0.9
IMAGE_SHAPE = (1, 16, 16)     # the built-in digit models' images: what the classifier reads


def applies_to(image_shape) -> bool:
    """Whether images of ``image_shape`` (C x H x W) are the built-in digits' size, which the classifier reads."""
    return tuple(int(d) for d in image_shape) == IMAGE_SHAPE


@lru_cache(maxsize=1)
def digit_classifier():
    from sklearn.linear_model import LogisticRegression

    split = load_digits_split()
    clf = LogisticRegression(C=1.0, max_iter=3000, random_state=0)
    clf.fit(split.train_images.flatten(1).numpy(), split.train_labels.numpy())
    return clf


def predict_proba(images: torch.Tensor) -> np.ndarray:
    """``N x 1 x 16 x 16`` in [-1, 1] -> ``N x 10`` class probabilities."""
    return digit_classifier().predict_proba(images.detach().cpu().flatten(1).float().numpy())
