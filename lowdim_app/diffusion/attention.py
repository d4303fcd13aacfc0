"""Make a diffusers U-Net safe for forward-mode AD (JVPs), as a context manager.

Two things break ``torch.func.jvp`` through diffusers U-Nets on CPU:
1. fused scaled-dot-product attention has no forward-AD formula -> switch every attention
   module to the classic :class:`diffusers.models.attention_processor.AttnProcessor`
   (explicit ``baddbmm`` + softmax);
2. ``GroupNorm`` after attention receives a non-contiguous tensor and its forward-AD path
   raises "view size is not compatible" -> a forward pre-hook makes its input contiguous.

Both changes compute the same function, so another request running the U-Net while the
switch is on gets identical outputs (only slower). Nested/concurrent users are reference
counted per U-Net: the original processors come back when the last user leaves.
"""
from __future__ import annotations

import weakref
from contextlib import contextmanager
from typing import Iterator

import torch

from .. import forksafe

_LOCK = forksafe.Lock()
_STATE: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def _contiguous_pre_hook(_module, args):
    if args and isinstance(args[0], torch.Tensor) and not args[0].is_contiguous():
        return (args[0].contiguous(), *args[1:])
    return None


@contextmanager
def forward_ad_safe(unet: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Within the context, ``torch.func.jvp`` works through ``unet``."""
    from diffusers.models.attention_processor import AttnProcessor

    with _LOCK:
        state = _STATE.get(unet)
        if state is None:
            saved = dict(unet.attn_processors) if hasattr(unet, "attn_processors") else {}
            if saved:
                unet.set_attn_processor(AttnProcessor())
            hooks = [m.register_forward_pre_hook(_contiguous_pre_hook)
                     for m in unet.modules() if isinstance(m, torch.nn.GroupNorm)]
            state = {"count": 0, "saved": saved, "hooks": hooks}
            _STATE[unet] = state
        state["count"] += 1
    try:
        yield unet
    finally:
        with _LOCK:
            state["count"] -= 1
            if state["count"] == 0:
                for h in state["hooks"]:
                    h.remove()
                if state["saved"]:
                    unet.set_attn_processor(state["saved"])
                del _STATE[unet]
