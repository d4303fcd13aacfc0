"""Representation steering (Zhang et al. 2025, arXiv:2512.20963, §4.2, eq. 11, App. B.3-B.4).

``f_steered(x_t, t, c) = g(h(x_t, t, c) + a * v)`` with ``v = mean_{x in S} h(x_t~, t~, c_bar)``:
features of a concept set ``S`` read at ``t~`` (10 of 1000 for SD) at one or several layers, averaged
over images (*spatial* vector, ``1 x C x H x W``) and also over ``H, W`` (the paper's *channel*
vector, ``1 x C x 1 x 1``). With a ``baseline`` set the vector is the difference of the two means
(concept minus baseline), which is what moves a generic sample toward the concept.

During sampling ``a * v`` is added to the layer outputs only in a window of steps (SD recipe: the last
20 of 40) and, with classifier-free guidance, only on the conditional half of the batch (App. B.3).
Generalized samples move smoothly with ``a``, memorized ones barely or abruptly (Fig. 8):
:func:`contrast_sources` picks one of each from a built-in model.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..diffusion.hooks import add_vector, capture, get_module
from ..errors import UserError, check_range
from ..metrics import nearest

# Stable Diffusion v1.4 (App. B.3). The paper lists up_blocks.0.resnets.2 twice; the sixth layer is read
# as up_blocks.1.resnets.2, the one resnet of the first two up blocks not otherwise listed.
SD_LAYERS = ["up_blocks.0.resnets.0", "up_blocks.0.resnets.1", "up_blocks.0.resnets.2",
             "up_blocks.1.resnets.0", "up_blocks.1.resnets.1", "up_blocks.1.resnets.2"]
SD_RECIPE = dict(t_tilde=10, steps=40, window=20, guidance_scale=3.5, kind="channel")
# Built-in digit models, chosen by measurement: a single up-block layer moved no sample to the target
# class at any strength; these four layers with the spatial concept-minus-all-digits vector moved every
# tested seed (class probability 0 -> 1 by a ~ 1).
DIGITS_LAYERS = ["up_blocks.0.resnets.0", "up_blocks.0.resnets.1", "up_blocks.1.resnets.0", "up_blocks.1.resnets.1"]
DIGITS_RECIPE = dict(t_tilde=10, steps=40, window=20, guidance_scale=1.0, kind="spatial")
MAX_STRENGTH = 100.0


def default_recipe(model) -> tuple[list[str], dict]:
    """``(layers, recipe)`` for a model: the paper's Stable Diffusion recipe or the built-in digits one."""
    return (list(SD_LAYERS), dict(SD_RECIPE)) if model.is_text else (list(DIGITS_LAYERS), dict(DIGITS_RECIPE))


@dataclass
class SteeringVector:
    vectors: dict[str, torch.Tensor]      # layer -> 1 x C x 1 x 1 (channel) or 1 x C x H x W (spatial)
    kind: str                              # channel | spatial
    t_tilde: int
    model_id: str
    n_images: int
    meta: dict = field(default_factory=dict)

    def norms(self) -> dict[str, float]:
        return {k: float(v.norm()) for k, v in self.vectors.items()}


@torch.no_grad()
def _mean_features(model, images: torch.Tensor, layers: list[str], t_tilde: int, cond, seed: int,
                   batch_size: int = 32, step_callback=None) -> dict[str, torch.Tensor]:
    """Mean over images of each layer's output at ``x_t~ = AddNoise(x_0, t~)`` (conditional path only)."""
    sums: dict[str, torch.Tensor] = {}
    n = 0
    x0 = model.encode(images)
    noise = model.randn(len(x0), seed)
    with capture(model.unet, layers) as cap:
        for i in range(0, len(x0), batch_size):
            if step_callback is not None:
                step_callback(i // batch_size, t_tilde)
            xb = model.add_noise(x0[i:i + batch_size], t_tilde, noise[i:i + batch_size])
            c = None if cond is None else type(cond)(cond.cond, None, 1.0, cond.prompt)
            cap.clear()
            model.predict(xb, t_tilde, c)
            for layer in layers:
                h = cap.outputs[layer][0].float().sum(0, keepdim=True)
                sums[layer] = h if layer not in sums else sums[layer] + h
            n += len(xb)
    return {k: v / n for k, v in sums.items()}


def steering_vector(model, images: torch.Tensor, layers: list[str] | None = None, t_tilde: int | None = None,
                    kind: str = "channel", cond=None, baseline: torch.Tensor | None = None, seed: int = 0,
                    step_callback=None) -> SteeringVector:
    """``v`` of eq. 11 from concept images (pixels in [-1, 1]); ``cond`` is ``c_bar`` for text models.
    ``seed`` draws the noise taking the images to ``t~``; ``step_callback(i, t~)`` runs before each batch."""
    if kind not in ("channel", "spatial"):
        raise UserError("steering vector kind must be 'channel' or 'spatial'")
    if len(images) == 0:
        raise UserError("the concept set is empty")
    d_layers, recipe = default_recipe(model)
    layers = layers or d_layers
    for layer in layers:
        get_module(model.unet, layer)
    t_tilde = recipe["t_tilde"] if t_tilde is None else model.check_timestep(t_tilde)
    if model.is_text and cond is None:
        cond = model.default_conditioning()
    v = _mean_features(model, images, layers, t_tilde, cond, seed, step_callback=step_callback)
    if baseline is not None:
        b = _mean_features(model, baseline, layers, t_tilde, model.default_conditioning() if model.is_text else None,
                           seed, step_callback=step_callback)
        v = {k: v[k] - b[k] for k in v}
    if kind == "channel":
        v = {k: t.mean(dim=(2, 3), keepdim=True) for k, t in v.items()}
    return SteeringVector(v, kind, t_tilde, model.model_id, len(images),
                          {"baseline": baseline is not None, "prompt": getattr(cond, "prompt", "")})


def steered_samples(model, x_start: torch.Tensor, sv: SteeringVector, strengths, t_start: int | None = None,
                    steps: int = 40, window: int = 20, cond=None, progress: bool = False,
                    step_callback=None) -> torch.Tensor:
    """One steered sample per strength ``a`` from the same start ``x_start`` (``1 x shape``), batched (eq. 11).

    Steering is on during the last ``window`` of the ``steps`` DDIM steps; with CFG only the
    conditional half of the batch is changed (App. B.3). ``a`` is applied per batch element.
    ``step_callback(i, t)`` runs before each step (e.g. to stop a cancelled run).
    """
    strengths = [float(a) for a in strengths]
    if not 1 <= len(strengths) <= 16:
        raise UserError("give between 1 and 16 steering strengths")
    for a in strengths:
        check_range("steering strength a", a, -MAX_STRENGTH, MAX_STRENGTH)
    if sv.model_id != model.model_id:
        raise UserError(f"this steering vector was computed on {sv.model_id}, not {model.model_id}")
    t_start = model.num_train_timesteps - 1 if t_start is None else t_start
    ts = model.timesteps(t_start, steps)
    check_range("steering window", window, 0, len(ts))
    first = len(ts) - window
    B = len(strengths)
    x = x_start.expand(B, *x_start.shape[1:]).clone()
    a = torch.tensor(strengths).view(B, 1, 1, 1)
    use_cfg = cond is not None and cond.uses_cfg
    scale = torch.cat([torch.zeros_like(a), a]) if use_cfg else a  # [uncond; cond] batch: cond half only
    vectors = {k: v.to(model.device) for k, v in sv.vectors.items()}
    vectors = {k: v * scale.to(v.device, v.dtype) if v.shape[0] == 1 else v for k, v in vectors.items()}
    with add_vector(model.unet, vectors, scale=1.0, cond_half_only=False) as handle:
        handle.enabled = False

        def on_step(i, t):
            handle.enabled = i >= first
            if step_callback is not None:
                step_callback(i, t)

        z = model.ddim_sample(x, t_start, steps, cond, progress=progress, step_callback=on_step, desc="steering")
    return model.decode(z).cpu()


def concept_strength_digits(images: torch.Tensor, target: int) -> np.ndarray:
    """Probability of the target digit under the disclosed logistic-regression classifier."""
    from ..data.classifier import predict_proba

    return predict_proba(images)[:, int(target)]


def digit_concept(target: int, n: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Built-in concept set: ``n`` training digits of class ``target``; baseline: all training digits."""
    from ..data.digits import load_digits_split

    check_range("digit class", target, 0, 9)
    s = load_digits_split()
    return s.train_images[s.train_labels == int(target)][:n], s.train_images


def contrast_sources(model, n: int = 48, seed: int = 0, steps: int = 40, avoid_class: int | None = None,
                     step_callback=None, chunk: int = 8):
    """Starting noises of one memorized and one generalized sample of a built-in model, for the paper's
    contrast (Zhang et al. 2025, Fig. 8): among ``n`` seeded samples, the first whose nearest training
    image is a near-copy and the first that is novel (thresholds of :mod:`lowdim_app.data.neighbours`),
    skipping samples already of ``avoid_class``. Samples are drawn ``chunk`` at a time until both are
    found. Returns ``{label: (index, noise)}``."""
    from ..data.classifier import predict_proba
    from ..data.digits import load_digits_split
    from ..data.neighbours import COPY_THRESHOLD, NOVEL_THRESHOLD

    index = model.card.get("train_index")
    if not index:
        raise UserError(f"{model.model_id} has no training index; the contrast needs a built-in model")
    train = load_digits_split().train_images[np.asarray(index, dtype=int)]
    noise = model.randn(n, seed)
    found: dict[str, tuple[int, torch.Tensor]] = {}
    for lo in range(0, n, chunk):
        samples = model.decode(model.ddim_sample(noise[lo:lo + chunk], model.num_train_timesteps - 1, steps,
                                                 step_callback=step_callback)).cpu()
        d = nearest(samples, train).nearest.numpy()
        labels = np.where(d < COPY_THRESHOLD, "memorized", np.where(d > NOVEL_THRESHOLD, "generalized", "ambiguous"))
        pred = predict_proba(samples).argmax(1)
        for j, label in enumerate(labels):
            if label != "ambiguous" and label not in found and (avoid_class is None or pred[j] != avoid_class):
                found[label] = (lo + j, noise[lo + j:lo + j + 1])
        if len(found) == 2:
            break
    return {k: found[k] for k in ("memorized", "generalized") if k in found}
