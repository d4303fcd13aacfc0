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
    tensors to read (default: all). Anything else -- not such a file, NaN or infinite values, a tensor
    of zeros (no direction to move along) -- is one :class:`UserError` naming the file and ``what``."""
    from safetensors import safe_open

    path = Path(path)
    name = path.name
    try:
        with safe_open(str(path), framework="pt") as f:
            info = json.loads((f.metadata() or {})["lowdim"])
            keys = list(names(info)) if names is not None else list(f.keys())
            tensors = {k: f.get_tensor(k) for k in keys}
    except Exception:
        raise UserError(f"{name}: not a LowDim Lab {what}") from None
    check_tensors(tensors, name, what)
    return tensors, info


def check_tensors(tensors: dict[str, torch.Tensor], name: str, what: str) -> None:
    """Refuse tensors no edit or steering can use: NaN / infinite values, or all zeros."""
    noun = what.split(" (")[0]
    for key, t in tensors.items():
        where = f" (tensor {key!r})" if len(tensors) > 1 else ""
        if not t.is_floating_point():
            raise UserError(f"{name}: not a LowDim Lab {what} ({t.dtype} values{where})")
        if not bool(torch.isfinite(t).all()):
            raise UserError(f"{name}: this {noun} holds NaN or infinite values{where}; save it again")
        if not bool(t.any()):
            raise UserError(f"{name}: this {noun} is all zeros{where} (no direction to move along); save it again")
