"""Helpers the features share: model settings, loading, image conversion for results."""
from __future__ import annotations

from ..config import Runtime
from ..errors import UserError
from .settings import setting

MODEL_HELP = "built-in id (digits-gen, digits-mem, digits-dup), allow-listed hub id, or a local diffusers folder"


def model_setting(default: str = "digits-gen"):
    return setting(default, help=MODEL_HELP, max_chars=500)


def as_model(model, runtime: Runtime | None = None):
    """A :class:`~lowdim_app.diffusion.model.DiffusionModel` from what a caller holds: the model itself,
    a diffusers pipeline object (wrapped by ``DiffusionModel.from_pipeline``, no weights copied), or an
    id / folder path (loaded through the registry)."""
    from ..diffusion.model import DiffusionModel
    from ..diffusion.registry import load_model

    if isinstance(model, DiffusionModel):
        return model
    if isinstance(model, str):
        if not model.strip():
            raise UserError("choose a model")
        return load_model(model.strip(), runtime=runtime)
    if getattr(model, "unet", None) is not None and getattr(model, "scheduler", None) is not None:
        return DiffusionModel.from_pipeline(model)
    raise UserError(f"model must be an id, a folder, a DiffusionModel or a diffusers pipeline, "
                    f"got {type(model).__name__}")


def load(model_id: str, runtime: Runtime | None, model=None):
    """The model named by ``model_id``, or ``model`` when the caller already holds one (a
    ``DiffusionModel``, a diffusers pipeline object, or an id; see :func:`as_model`)."""
    from ..diffusion.registry import load_model

    if model is not None:
        return as_model(model, runtime)
    if not model_id.strip():
        raise UserError("choose a model")
    return load_model(model_id.strip(), runtime=runtime)


def conditioning(model, prompt: str, guidance: float = 1.0):
    """Prompt embedding for text models; a prompt given to an unconditional model is an error."""
    if model.is_text:
        return model.encode_prompt(prompt or "", guidance_scale=guidance)
    if prompt:
        raise UserError(f"{model.model_id} is unconditional; it takes no prompt")
    return None


def upscale_for(model, target: int = 128) -> int:
    """Nearest-neighbour upscale factor that shows a small model's images at about ``target`` px."""
    return max(1, target // model.image_shape[-1])
