"""Settings read from the environment (one place; no other module reads os.environ for these).

| variable | meaning | default |
|---|---|---|
| ``LOWDIM_DEVICE`` | ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` | ``auto`` (CUDA if present) |
| ``LOWDIM_EXTRA_MODELS`` | comma-separated hub ids added to the allow-list | empty |
| ``LOWDIM_MAX_SAMPLES`` | largest batch a UI/API request may ask for | 64 |
| ``LOWDIM_MODEL_CACHE`` | how many loaded models to keep in memory | 3 |
| ``LOWDIM_ASSETS`` | folder with built-in models/calibrations | ``<repo>/assets`` |
| ``LOWDIM_CLIP`` | CLIP model (hub id in the local cache, or a folder) for the concept-strength curve of text models; ``off`` disables | ``openai/clip-vit-large-patch14`` |
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CLIP = "openai/clip-vit-large-patch14"


@dataclass(frozen=True)
class Settings:
    device: str = "auto"
    extra_models: tuple[str, ...] = field(default_factory=tuple)
    max_samples: int = 64
    model_cache: int = 3
    assets: Path = REPO_ROOT / "assets"
    clip: str = DEFAULT_CLIP

    @property
    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


def settings() -> Settings:
    """Current settings (read on each call so tests and operators can change the environment)."""
    extra = tuple(s.strip() for s in os.environ.get("LOWDIM_EXTRA_MODELS", "").split(",") if s.strip())
    return Settings(
        device=os.environ.get("LOWDIM_DEVICE", "auto"),
        extra_models=extra,
        max_samples=int(os.environ.get("LOWDIM_MAX_SAMPLES", "64")),
        model_cache=int(os.environ.get("LOWDIM_MODEL_CACHE", "3")),
        assets=Path(os.environ.get("LOWDIM_ASSETS", REPO_ROOT / "assets")),
        clip=os.environ.get("LOWDIM_CLIP", DEFAULT_CLIP),
    )
