"""CLIP similarity as the concept-strength measure for text models (the steering curves of
Zhang et al. 2025, arXiv:2512.20963, §4.2, Fig. 8).

``sim(x, p) = <f_img(x), f_txt(p)> / (||f_img(x)|| ||f_txt(p)||)`` with a CLIP model's projected
image and text embeddings (Radford et al. 2021). The caller names the model (the operator's
``Runtime.clip``: a hub id in the local cache -- nothing is downloaded at run time -- or a folder
with ``CLIPModel`` weights and its processor); when it is not available the steering curve is
simply not drawn for text models.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import forksafe

__all__ = ["ClipScorer", "load_clip", "clip_similarity"]

_LOCK = forksafe.Lock()
_CACHE: dict[str, "ClipScorer | None"] = {}


@dataclass
class ClipScorer:
    source: str
    model: object
    processor: object

    @torch.no_grad()
    def similarity(self, images: torch.Tensor, text: str) -> np.ndarray:
        """Cosine similarity of each image (``B x 3 x H x W`` in [-1, 1]) to ``text``."""
        from ..data.images import to_pil

        inputs = self.processor(text=[text], images=to_pil(images), return_tensors="pt", padding=True)
        out = self.model(**inputs)
        a = torch.nn.functional.normalize(out.image_embeds.float(), dim=-1)
        b = torch.nn.functional.normalize(out.text_embeds.float(), dim=-1)
        return (a @ b.T)[:, 0].numpy()


def load_clip(source: str) -> ClipScorer | None:
    """The CLIP scorer from ``source`` or ``None`` when it is not available locally (``off``, not in
    the cache, or not loadable). Loaded once per source (thread-safe cache of read-only models)."""
    if not source or source.lower() in ("off", "none"):
        return None
    with _LOCK:
        if source not in _CACHE:
            try:
                from transformers import CLIPModel, CLIPProcessor

                model = CLIPModel.from_pretrained(source, local_files_only=True).eval()
                _CACHE[source] = ClipScorer(source, model, CLIPProcessor.from_pretrained(source, local_files_only=True))
            except (OSError, ValueError):
                _CACHE[source] = None
        return _CACHE[source]


def clip_similarity(images: torch.Tensor, text: str, source: str) -> np.ndarray | None:
    """:meth:`ClipScorer.similarity` with the scorer from ``source``, or ``None`` without one."""
    scorer = load_clip(source)
    return None if scorer is None else scorer.similarity(images, text)
