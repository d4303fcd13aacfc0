"""Every memorization detector behind one interface, each with its paper and the direction that means
"memorized" in that paper.

Image detectors (prompt-free: they score any image, uploads included) map ``N`` pixel images in
[-1, 1] to ``N x K`` values (``K`` seeded noise draws or probes, the same for every image):

* ``std``, ``l4_l2``, ``entropy``, ``max_min`` -- the spikiness of the global-max-pooled U-Net
  representation at ``x_t = AddForwardNoise(x_0, t)`` (Zhang et al. 2025, arXiv:2512.20963, Alg. 1 and
  App. B.2); one early-stopped U-Net pass per draw, shared by the four measures;
* ``denoising_error`` -- ``||eps_hat(x_t, t) - eps||^2 / n``, the loss threshold (Carlini et al. 2023,
  arXiv:2301.13188, §5; Matsumoto et al. 2023, arXiv:2302.03262); lower = memorized;
* ``flipd`` -- the local intrinsic dimension FLIPD (Kamkari et al. 2024, arXiv:2406.03537), the
  geometric detector of Ross et al. 2024 (arXiv:2411.00113); lower = memorized.

Prompt detectors (text models only; they score a (prompt, seed) generation from the first steps of its
guided trajectory, so an uploaded image alone cannot be scored) map ``n`` seeds of one prompt to ``n``
values: ``text_noise_norm`` (Wen et al. 2024, arXiv:2407.21720) and ``sharpness`` (Jeon et al. 2025,
arXiv:2412.04140), both higher = memorized.

:func:`score_images` runs several image detectors over a batch and times each (the spikiness measures
share their representation pass, and each is charged that pass); :func:`score_prompt` does the same
for the prompt detectors.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UserError
from ..metrics import SPIKINESS_METRICS, spikiness

__all__ = ["DETECTORS", "Detector", "DetectorOptions", "IMAGE_DETECTORS", "PROMPT_DETECTORS", "applicable",
           "detection_quality", "detector", "score_images", "score_prompt", "tpr_at_fpr_strict"]


@dataclass(frozen=True)
class Detector:
    name: str
    label: str
    paper: str
    needs_prompt: bool
    memorized_if: int          # +1: a higher value means memorized; -1: lower (the paper's direction)
    needs_layer: bool = False
    forwards: str = ""         # network evaluations per image (what its seconds per image buy)

    @property
    def direction_text(self) -> str:
        return "higher = memorized" if self.memorized_if > 0 else "lower = memorized"


_Z = "Zhang et al. 2025, arXiv:2512.20963, Alg. 1 / App. B.2"
DETECTORS: dict[str, Detector] = {d.name: d for d in (
    Detector("std", "representation std", _Z, False, +1, True, "1 early-stopped U-Net pass per draw"),
    Detector("l4_l2", "representation l4/l2", _Z, False, +1, True, "1 early-stopped U-Net pass per draw"),
    Detector("entropy", "representation entropy", _Z, False, -1, True, "1 early-stopped U-Net pass per draw"),
    Detector("max_min", "representation max-min", _Z, False, +1, True, "1 early-stopped U-Net pass per draw"),
    Detector("denoising_error", "denoising error", "Carlini et al. 2023, arXiv:2301.13188, §5", False, -1, False,
             "1 U-Net pass per draw"),
    Detector("flipd", "local intrinsic dimension (FLIPD)",
             "Kamkari et al. 2024, arXiv:2406.03537; Ross et al. 2024, arXiv:2411.00113", False, -1, False,
             "1 + 2 per probe float32 U-Net passes"),
    Detector("text_noise_norm", "text-conditional noise norm", "Wen et al. 2024, arXiv:2407.21720, §3.1", True, +1,
             False, "2 U-Net passes (empty prompt, prompt) per first step"),
    Detector("sharpness", "sharpness (Hessian-score product)", "Jeon et al. 2025, arXiv:2412.04140, §4", True, +1,
             False, "6 float32 U-Net passes per first step"),
)}
IMAGE_DETECTORS = tuple(n for n, d in DETECTORS.items() if not d.needs_prompt)
PROMPT_DETECTORS = tuple(n for n, d in DETECTORS.items() if d.needs_prompt)


def detector(name: str) -> Detector:
    if name not in DETECTORS:
        raise UserError(f"unknown detector {name!r}; one of {', '.join(DETECTORS)}")
    return DETECTORS[name]


def applicable(model, names=()) -> tuple[str, ...]:
    """``names`` (all detectors when empty) checked against the model: prompt detectors need a text model."""
    names = tuple(names) or tuple(n for n in DETECTORS if model.is_text or not DETECTORS[n].needs_prompt)
    for n in names:
        d = detector(n)
        if d.needs_prompt and not model.is_text:
            raise UserError(f"{n} ({d.paper}) needs the prompt of a text-to-image model; "
                            f"{model.model_id} is unconditional")
    return names


@dataclass(frozen=True)
class DetectorOptions:
    """What the detectors' values depend on besides the image / prompt."""

    layer: str = ""            # spikiness: the U-Net module (required when a spikiness measure runs)
    t: int = 50                # image detectors: timestep
    noise_draws: int = 1       # image detectors: noise draws (FLIPD: Hutchinson probes)
    seed: int = 0              # seed of the draws / probes
    steps: int = 50            # prompt detectors: the generation's DDIM steps ...
    guidance: float = 7.5      # ... and guidance scale
    first_steps: int = 1       # ... and how many of its first steps are read
    batch_size: int = 64


def score_images(model, names, images: torch.Tensor, opts: DetectorOptions) -> dict[str, tuple[np.ndarray, float]]:
    """``{name: (N x K values, seconds)}`` for the image detectors ``names``."""
    from . import memorization as mz
    from .flipd import flipd_draws

    out = {}
    spiky = [n for n in names if n in SPIKINESS_METRICS]
    if spiky:
        if not opts.layer:
            raise UserError("the spikiness detectors need a layer")
        t0 = time.perf_counter()
        h = mz.representation_draws(model, images, opts.layer, opts.t, opts.noise_draws, opts.seed, opts.batch_size)
        shared = time.perf_counter() - t0
        n, k, c = h.shape
        for name in spiky:
            t1 = time.perf_counter()
            v = spikiness(h.reshape(n * k, c), name).numpy().astype(float).reshape(n, k)
            out[name] = (v, shared + time.perf_counter() - t1)
    for name in names:
        if name in out:
            continue
        if detector(name).needs_prompt:
            raise UserError(f"{name} ({detector(name).paper}) needs the prompt: it scores a generation, not an image")
        t0 = time.perf_counter()
        if name == "denoising_error":
            v = mz.denoising_error_draws(model, images, opts.t, opts.noise_draws, opts.seed, opts.batch_size)
        else:
            v = flipd_draws(model, images, opts.t, opts.noise_draws, opts.seed, opts.batch_size)
        out[name] = (v, time.perf_counter() - t0)
    return out


def score_prompt(model, names, prompt: str, noise: torch.Tensor, opts: DetectorOptions) -> dict[str, tuple[np.ndarray, float]]:
    """``{name: (n x 1 values, seconds)}`` for the prompt detectors ``names`` on the generations of ``prompt``
    from ``noise`` (one ``x_T`` per image); each detector is timed on its own pass."""
    from .memorization_baselines import guided_trajectory_detectors

    out = {}
    for name in names:
        t0 = time.perf_counter()
        v = guided_trajectory_detectors(model, prompt, noise, steps=opts.steps, guidance=opts.guidance,
                                        first_steps=opts.first_steps, which=(name,))[name]
        out[name] = (v[:, None], time.perf_counter() - t0)
    return out


def tpr_at_fpr_strict(pos, neg, fpr: float) -> float:
    """The largest true-positive rate of a threshold whose false-positive rate is at most ``fpr`` (a point
    the detector can actually run at: no interpolation between ROC points; "higher = positive")."""
    from ..metrics import roc

    f, t = roc(pos, neg)
    ok = f <= fpr + 1e-12
    return float(t[ok].max()) if ok.any() else 0.0


def detection_quality(memorized, generalized, memorized_if: int) -> dict:
    """AUROC, TPR at 1 % and 3 % FPR (strict) and the ROC curve of ``memorized`` vs ``generalized`` values
    in the detector's fixed direction (``memorized_if``; nothing is fitted on the evaluated sets, so an
    AUROC below 0.5 says the detector points the other way on this model)."""
    from ..metrics import auroc, roc

    pos = memorized_if * np.asarray(memorized, float)
    neg = memorized_if * np.asarray(generalized, float)
    if len(pos) == 0 or len(neg) == 0:
        return {"auroc": None, "tpr_at_1pct_fpr": None, "tpr_at_3pct_fpr": None, "roc": None}
    return {"auroc": auroc(pos, neg), "tpr_at_1pct_fpr": tpr_at_fpr_strict(pos, neg, 0.01),
            "tpr_at_3pct_fpr": tpr_at_fpr_strict(pos, neg, 0.03), "roc": roc(pos, neg)}
