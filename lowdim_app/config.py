"""The operator's settings (:class:`Runtime`), read from the environment in exactly one place.

The adapters (the CLI and the app) call :func:`from_environment` once and pass the result down;
the feature layer and everything below it take a :class:`Runtime` argument and never read the
environment themselves. Library users get the built-in defaults unless they pass their own.

| variable | meaning | default |
|---|---|---|
| ``LOWDIM_DEVICE`` | ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` | ``auto`` (CUDA if present) |
| ``LOWDIM_EXTRA_MODELS`` | comma-separated hub ids added to the allow-list | empty |
| ``LOWDIM_MAX_SAMPLES`` | largest batch a UI/API request may ask for | 64 |
| ``LOWDIM_MODEL_CACHE`` | how many loaded models to keep in memory | 3 |
| ``LOWDIM_ASSETS`` | folder with built-in models/calibrations | ``<repo>/assets`` (installed: ``lowdim_app/assets``) |
| ``LOWDIM_CLIP`` | CLIP model (hub id in the local cache, or a folder) for the concept-strength curve of text models; ``off`` disables | ``openai/clip-vit-large-patch14`` |
| ``LOWDIM_REQUEST_BUDGET_S`` | most seconds (estimated from the request's cost) one request may take; larger ones are refused with the CLI command to run them elsewhere; ``none`` for no limit | 120 in public mode, else none |
| ``LOWDIM_PUBLIC`` | public mode: only built-in and allow-listed models, no server paths from callers | on when ``SPACE_ID`` is set (a Hugging Face Space), else off |
| ``LOWDIM_MAX_UPLOAD_MB`` | largest file an app visitor may upload (larger ones are refused before they are stored) | 20 |
| ``LOWDIM_PRELOAD`` | models the app loads at start-up (on the CPU): ``auto`` (on a ZeroGPU Space every model available here, so every forked GPU worker inherits them; elsewhere none), ``none``, or comma-separated ids | ``auto`` |
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
# built-in models, calibrations, examples: <repo>/assets in a checkout; lowdim_app/assets in an installed wheel
_PACKAGED_ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_ASSETS = _PACKAGED_ASSETS if (_PACKAGED_ASSETS / "models").is_dir() else REPO_ROOT / "assets"
DEFAULT_CLIP = "openai/clip-vit-large-patch14"


@dataclass(frozen=True)
class Runtime:
    """Where and with what limits actions run (not part of any action's settings)."""

    device: str = "auto"
    extra_models: tuple[str, ...] = field(default_factory=tuple)
    max_samples: int = 64
    model_cache: int = 3
    assets: Path = DEFAULT_ASSETS
    clip: str = DEFAULT_CLIP
    public: bool = False
    request_budget_s: float | None = None
    preload: str = "auto"
    max_upload_mb: int = 20

    @property
    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    @property
    def examples(self) -> Path:
        return self.assets / "examples"


def _int_env(name: str, default: int) -> int:
    text = os.environ.get(name, "")
    try:
        return int(text) if text.strip() else default
    except ValueError:
        raise SystemExit(f"error: {name} must be a whole number, got {text!r}") from None


def from_environment() -> Runtime:
    """The operator's :class:`Runtime` from ``LOWDIM_*`` variables (read on each call)."""
    extra = tuple(s.strip() for s in os.environ.get("LOWDIM_EXTRA_MODELS", "").split(",") if s.strip())
    public = _flag_env("LOWDIM_PUBLIC", default=bool(os.environ.get("SPACE_ID")))
    return Runtime(
        device=os.environ.get("LOWDIM_DEVICE", "auto"),
        extra_models=extra,
        max_samples=_int_env("LOWDIM_MAX_SAMPLES", 64),
        model_cache=_int_env("LOWDIM_MODEL_CACHE", 3),
        assets=Path(os.environ.get("LOWDIM_ASSETS", DEFAULT_ASSETS)),
        clip=os.environ.get("LOWDIM_CLIP", DEFAULT_CLIP),
        public=public,
        request_budget_s=_budget_env("LOWDIM_REQUEST_BUDGET_S", 120.0 if public else None),
        preload=os.environ.get("LOWDIM_PRELOAD", "auto").strip() or "auto",
        max_upload_mb=_int_env("LOWDIM_MAX_UPLOAD_MB", 20),
    )


def _flag_env(name: str, default: bool) -> bool:
    text = os.environ.get(name, "").strip().lower()
    if not text:
        return default
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise SystemExit(f"error: {name} must be 1 or 0, got {text!r}")


def _budget_env(name: str, default: float | None) -> float | None:
    text = os.environ.get(name, "").strip().lower()
    if not text:
        return default
    if text in ("none", "off", "0"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise SystemExit(f"error: {name} must be a number of seconds or 'none', got {text!r}") from None
    if not value > 0:
        raise SystemExit(f"error: {name} must be positive, got {text!r}")
    return value
