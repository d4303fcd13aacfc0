"""The feature layer: one module per user action (see :mod:`.base`).

``FEATURES`` lists them in the order the CLI shows them; each module defines ``FEATURE``.
"""
from __future__ import annotations

import importlib

from .base import Cancelled, Cost, Feature, Progress, Result
from .settings import Settings

FEATURE_MODULES = [
    "sample", "train", "card",
    "edit", "rank", "directions",
    "score", "calibrate", "calibrate_builtin", "audit", "benchmark_memorization",
    "steer",
    "phase", "molrg_rank", "gl_score",
    "relu_dae", "mog_ddpm", "molr_mog",
]


def all_features() -> list[Feature]:
    return [importlib.import_module(f"{__name__}.{m}").FEATURE for m in FEATURE_MODULES]


def get(name: str) -> Feature:
    for f in all_features():
        if f.name == name:
            return f
    raise KeyError(name)


__all__ = ["Cancelled", "Cost", "Feature", "Progress", "Result", "Settings", "all_features", "get"]
