"""Everything that touches diffusers: loading, the DiffusionModel wrapper, hooks, attention switches, training."""
from .hooks import add_vector, capture, list_layers, run_until
from .model import Conditioning, DiffusionModel
from .registry import DEFAULT_MODEL, BUILTIN_MODELS, HUB_MODELS, list_models, load_model

__all__ = ["add_vector", "capture", "list_layers", "run_until", "Conditioning", "DiffusionModel",
           "DEFAULT_MODEL", "BUILTIN_MODELS", "HUB_MODELS", "list_models", "load_model"]
