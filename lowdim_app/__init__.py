"""LowDim Lab: the low-dimensional structure of diffusion models, made usable.

The public API (all lazy: ``import lowdim_app`` loads neither torch nor diffusers)::

    import lowdim_app as ld
    model = ld.DiffusionModel.from_pipeline(pipe)        # any loaded DDPM/DDIM or Stable Diffusion pipeline
    found = ld.find_directions("digit.png", model, k=3)  # Jacobian singular vectors (Wang et al. 2024, §4.2)
    strip = ld.edit(found, direction=1, alpha=[-4, 0, 4])

See :mod:`lowdim_app.api` for every function and the documentation site (``mkdocs serve``).
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "DiffusionModel", "load_model", "list_models", "as_model",
    "sample", "find_directions", "edit", "jacobian_rank",
    "score", "calibrate", "audit",
    "steering_vector", "steer",
    "phase_transition",
    "run",
    "UserError",
]

_API = {name for name in __all__ if name not in ("__version__", "UserError")}


def __getattr__(name: str):
    if name in _API:
        from . import api

        return getattr(api, name)
    if name == "UserError":
        from .errors import UserError

        return UserError
    raise AttributeError(f"module 'lowdim_app' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
