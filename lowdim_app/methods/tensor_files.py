"""Tensors with JSON metadata in one ``.safetensors`` file (saved directions and steering vectors):
the metadata sits in the file's header under ``"lowdim"``, so nothing but tensors and text is read
back (no pickles)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import UserError


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], info: dict) -> Path:
    """Write ``tensors`` (float32, CPU) and ``info`` to ``path`` (parent folders created)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, str(path),
              metadata={"lowdim": json.dumps(info)})
    return path


def load_tensors(path: str | Path, what: str, names=None) -> tuple[dict[str, torch.Tensor], dict]:
    """``(tensors, info)`` of a file written by :func:`save_tensors`; ``names(info)`` picks the
    tensors to read (default: all). Anything else is one :class:`UserError` naming ``what``."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            info = json.loads((f.metadata() or {})["lowdim"])
            keys = list(names(info)) if names is not None else list(f.keys())
            return {k: f.get_tensor(k) for k in keys}, info
    except Exception:
        raise UserError(f"{path.name}: not a LowDim Lab {what}") from None
