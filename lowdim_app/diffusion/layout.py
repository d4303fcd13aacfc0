"""How a diffusers pipeline folder is laid out, checked before anything is loaded.

Two layouts exist on the hub and on disk:

* **subfolders** (what ``save_pretrained`` writes): ``model_index.json``, ``unet/config.json`` +
  weights, ``scheduler/scheduler_config.json`` (+ ``vae/``, ``text_encoder/``, ``tokenizer/`` for
  Stable Diffusion);
* **flat** (how ``google/ddpm-cifar10-32`` and ``google/ddpm-ema-celebahq-256`` are published): the
  U-Net's ``config.json``, its weights and ``scheduler_config.json`` at the root next to
  ``model_index.json``.

Only safetensors weights are accepted; a folder that has only PyTorch pickles (``*.bin``, ``*.pt``,
``*.ckpt``) is refused with a message that says so -- pickles are never unpickled. Every problem is
one :class:`~lowdim_app.errors.UserError` line.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelUnavailable, UserError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def read_json(path: Path, what: str) -> dict:
    """A JSON object from ``path`` or one clear line naming ``what`` is wrong."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{what} is missing ({path.name})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{what} ({path.name}) is not valid JSON: {type(err).__name__}") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} ({path.name}) is not a JSON object")
    return data


@dataclass(frozen=True)
class PipelineLayout:
    root: Path
    kind: str                 # "pixel" | "latent"
    unet_dir: Path
    scheduler_config: dict
    flat: bool

    @property
    def unet_subfolder(self) -> str | None:
        return None if self.flat else "unet"


def _weights_ok(folder: Path, name: str, what: str) -> None:
    if list(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES) if folder.is_dir() else []
    if pickles:
        raise ModelUnavailable(
            f"{name}: the {what} weights are published only as PyTorch pickles ({', '.join(pickles[:3])}); "
            "LowDim Lab loads safetensors only and never unpickles. Convert them once on a trusted machine "
            "(diffusers: load with use_safetensors=False, then save_pretrained(..., safe_serialization=True)) "
            "and use that folder")
    raise UserError(f"{name}: no {what} weights (*.safetensors) found")


def inspect(root: Path, name: str) -> PipelineLayout:
    """The layout of a pipeline folder; raises one line for a broken or partial folder."""
    index = read_json(root / "model_index.json", f"{name}: the pipeline index")
    components = {k for k, v in index.items() if not k.startswith("_") and isinstance(v, (list, tuple))}
    if "unet" not in components:
        raise UserError(f"{name}: unsupported pipeline {index.get('_class_name', '?')!r} "
                        "(need a UNet2DModel or Stable Diffusion pipeline)")
    latent = "vae" in components
    flat = not (root / "unet").is_dir() and (root / "config.json").is_file()
    if latent and flat:
        raise UserError(f"{name}: a latent pipeline needs unet/, vae/, text_encoder/ and tokenizer/ subfolders")
    unet_dir = root if flat else root / "unet"
    read_json(unet_dir / "config.json", f"{name}: the U-Net config")
    _weights_ok(unet_dir, name, "U-Net")
    sched_file = root / "scheduler_config.json" if flat else root / "scheduler" / "scheduler_config.json"
    if not sched_file.is_file() and (root / "scheduler_config.json").is_file():
        sched_file = root / "scheduler_config.json"
    scheduler = read_json(sched_file, f"{name}: the scheduler config")
    if latent:
        for sub in ("vae", "text_encoder"):
            read_json(root / sub / "config.json", f"{name}: the {sub} config")
            _weights_ok(root / sub, name, sub)
        if not (root / "tokenizer").is_dir():
            raise UserError(f"{name}: the tokenizer/ folder is missing")
    return PipelineLayout(root=root, kind="latent" if latent else "pixel", unet_dir=unet_dir,
                          scheduler_config=scheduler, flat=flat)
