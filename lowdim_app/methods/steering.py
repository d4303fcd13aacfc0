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

Budget (a Space's per-request limit): the concept images of a ``prompt:`` concept are generated one
at a time (:func:`generate_concept`, a callback per image, so progress and stopping work between
images) and VAE-encoded in slices of :data:`ENCODE_BATCH`; a vector is computed once and kept --
in a file (:meth:`SteeringVector.save` / :meth:`SteeringVector.load`, safetensors with the metadata
in its header) and in the process (:data:`CONCEPT_CACHE`, a bounded, locked cache keyed by
everything that determines the vector).
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Hashable

import numpy as np
import torch

from ..diffusion.hooks import add_vector, capture, get_module
from ..errors import UserError, check_range
from ..metrics import first_crossing, nearest
from .tensor_files import load_tensors, save_tensors

# Stable Diffusion v1.4 (App. B.3). The paper lists up_blocks.0.resnets.2 twice; the sixth layer is read
# as up_blocks.1.resnets.2, the one resnet of the first two up blocks not otherwise listed.
SD_LAYERS = ["up_blocks.0.resnets.0", "up_blocks.0.resnets.1", "up_blocks.0.resnets.2",
             "up_blocks.1.resnets.0", "up_blocks.1.resnets.1", "up_blocks.1.resnets.2"]
# concept_n / concept_steps: the paper generates 100 concept images with 40 steps each (8,000 U-Net
# evaluations with CFG). bench/steering_concept.py, so far only on the tests' tiny SD (random weights,
# seeds 0 and 1, a 32-image reference): 16 images at 20 steps give cos 0.9985 to the 32-image 40-step
# vector (0.9725 after removing another prompt's vector), 20 steps the same as 40; it has not been
# measured on SD v1.4's architecture or trained weights, so the defaults below are assumed there.
SD_RECIPE = dict(t_tilde=10, steps=40, window=20, guidance_scale=3.5, kind="channel", concept_n=16, concept_steps=20)
# Built-in digit models: these four layers with the spatial concept-minus-all-digits vector move every tested
# sample to the target class by a ~ 1 (bench/steer_contrast.py). On the shipped models the paper's single layer
# up_blocks.1.resnets.1 (App. B.4) does too, by a ~ 1.5, with a weaker memorized/generalized contrast in P(target);
# the channel vector needs a ~ 25-60 and leaves most samples short of P = 0.9 (bench/steer_contrast_setups.py).
DIGITS_LAYERS = ["up_blocks.0.resnets.0", "up_blocks.0.resnets.1", "up_blocks.1.resnets.0", "up_blocks.1.resnets.1"]
DIGITS_RECIPE = dict(t_tilde=10, steps=40, window=20, guidance_scale=1.0, kind="spatial", concept_n=100)
# Where the contrast of Fig. 8 is taken from on the built-in models (bench/steer_contrast.py): memorized samples
# of the model that memorizes, generalized samples of the model that generalizes, each steered with its own vector.
CONTRAST_MODELS = {"memorized": "digits-mem", "generalized": "digits-gen"}
MAX_STRENGTH = 100.0
FEATURE_BATCH = 32          # concept images per U-Net call when reading the features at t~
ENCODE_BATCH = 4            # concept images per VAE encode call (SD: 4 images of 512 px at once, not 100)
VECTOR_FORMAT = "lowdim-steering-vector-v1"
CACHE_SIZE = 16             # steering vectors kept per process (an SD channel vector is 6 x C floats)


def recipe_for(text: bool) -> tuple[list[str], dict]:
    """``(layers, recipe)``: the paper's Stable Diffusion recipe (text models) or the built-in digits one."""
    return (list(SD_LAYERS), dict(SD_RECIPE)) if text else (list(DIGITS_LAYERS), dict(DIGITS_RECIPE))


def default_recipe(model) -> tuple[list[str], dict]:
    """``(layers, recipe)`` for a model: the paper's Stable Diffusion recipe or the built-in digits one."""
    return recipe_for(model.is_text)


@dataclass
class SteeringVector:
    """``v`` of eq. 11 per layer, and what it was computed from (saved with it in a vector file)."""

    vectors: dict[str, torch.Tensor]      # layer -> 1 x C x 1 x 1 (channel) or 1 x C x H x W (spatial)
    kind: str                              # channel | spatial
    t_tilde: int
    model_id: str
    n_images: int
    meta: dict = field(default_factory=dict)
    concept: tuple[str, ...] = ()          # the concept spec (digit:K, prompt:TEXT or image file names)
    concept_n: int | None = None           # images asked for (digit:K, prompt:TEXT)
    seed: int | None = None                # seed of a prompt concept set and of the noise to t~
    concept_steps: int | None = None       # DDIM steps per generated concept image (prompt:TEXT)
    guidance: float | None = None          # CFG scale generating the concept images (prompt:TEXT)

    @property
    def layers(self) -> list[str]:
        return list(self.vectors)

    def norms(self) -> dict[str, float]:
        return {k: float(v.norm()) for k, v in self.vectors.items()}

    def info(self) -> dict:
        return {"format": VECTOR_FORMAT, "model_id": self.model_id, "layers": self.layers, "kind": self.kind,
                "t_tilde": self.t_tilde, "concept": list(self.concept), "concept_n": self.concept_n,
                "n_images": self.n_images, "seed": self.seed, "concept_steps": self.concept_steps,
                "guidance": self.guidance, "shapes": {k: list(v.shape) for k, v in self.vectors.items()},
                "meta": self.meta}

    def save(self, path: str | Path) -> Path:
        """A safetensors file: one tensor per layer, the metadata (:meth:`info`) as JSON in its header."""
        return save_tensors(path, self.vectors, self.info())

    @classmethod
    def load(cls, path: str | Path) -> "SteeringVector":
        path = Path(path)
        vectors, info = load_tensors(path, "steering vector file (.safetensors saved by steer)",
                                     names=lambda info: info["layers"])
        if (info.get("format") != VECTOR_FORMAT or info.get("kind") not in ("channel", "spatial") or not vectors
                or any(list(v.shape) != info["shapes"].get(k) for k, v in vectors.items())):
            raise UserError(f"{path.name}: unsupported or corrupt steering vector file")
        return cls(vectors, info["kind"], int(info["t_tilde"]), info["model_id"], int(info["n_images"]),
                   info.get("meta", {}), tuple(info.get("concept", ())), info.get("concept_n"), info.get("seed"),
                   info.get("concept_steps"), info.get("guidance"))

    def check_compatible(self, model, layers: list[str] | None = None, kind: str | None = None,
                         t_tilde: int | None = None, name: str = "the steering vector") -> None:
        """A vector only means something for the model and layers it was computed on; ``layers``,
        ``kind``, ``t_tilde`` given explicitly must be the vector's. One-line :class:`UserError` otherwise."""
        if self.model_id != model.model_id:
            raise UserError(f"{name} was computed on {self.model_id}, not {model.model_id}; use it with the same model")
        if layers and list(layers) != self.layers:
            raise UserError(f"{name} was computed at layers {','.join(self.layers)}, not {','.join(layers)}; "
                            "leave the layers empty or give the same ones")
        if kind is not None and kind != self.kind:
            raise UserError(f"{name} is a {self.kind} vector, not {kind}")
        if t_tilde is not None and int(t_tilde) != self.t_tilde:
            raise UserError(f"{name} was computed at t~ = {self.t_tilde}, not {t_tilde}")
        for layer, v in self.vectors.items():
            channels = getattr(get_module(model.unet, layer), "out_channels", None)
            if channels is not None and v.ndim == 4 and v.shape[1] != channels:
                raise UserError(f"{name} has {v.shape[1]} channels at {layer}; the model has {channels}")


def cache_key(model_id: str, concept: tuple[str, ...], concept_n: int | None, layers, t_tilde: int, kind: str,
              seed: int, concept_steps: int | None = None, guidance: float | None = None) -> tuple:
    """Everything that determines the vector of a ``digit:`` or ``prompt:`` concept (the key of :data:`CONCEPT_CACHE`)."""
    return (str(model_id), tuple(concept), concept_n, tuple(layers), int(t_tilde), str(kind), int(seed),
            None if concept_steps is None else int(concept_steps), None if guidance is None else float(guidance))


class ConceptCache:
    """Steering vectors computed in this process, keyed by :func:`cache_key`; at most ``maxsize``
    (least recently used dropped). Lookups and inserts hold a lock; a key being computed is marked
    pending, so concurrent requests for the same concept compute it once: the others wait for it
    (checking ``wait_check`` -- e.g. a stop request -- every 0.1 s) and take the result; if the
    computation fails or is stopped, the next waiter computes it. Values are shared: read only."""

    def __init__(self, maxsize: int = CACHE_SIZE):
        self.maxsize = int(maxsize)
        self._lock = threading.Lock()
        self._items: OrderedDict[Hashable, SteeringVector] = OrderedDict()
        self._pending: dict[Hashable, threading.Event] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, key) -> bool:
        with self._lock:
            return key in self._items

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def get_or_compute(self, key, compute: Callable[[], SteeringVector],
                       wait_check: Callable[[], None] | None = None) -> tuple[SteeringVector, bool]:
        """``(vector, hit)``: the cached vector (``hit=True``) or ``compute()``'s, stored under ``key``."""
        while True:
            with self._lock:
                if key in self._items:
                    self._items.move_to_end(key)
                    return self._items[key], True
                pending = self._pending.get(key)
                if pending is None:
                    pending = self._pending[key] = threading.Event()
                    break
            while not pending.wait(0.1):
                if wait_check is not None:
                    wait_check()
        try:
            value = compute()
        except BaseException:
            with self._lock:
                del self._pending[key]
            pending.set()
            raise
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)
            del self._pending[key]
        pending.set()
        return value, False


CONCEPT_CACHE = ConceptCache()


@torch.no_grad()
def generate_concept(model, cond, n: int, seed: int, steps: int, *, on_image: Callable[[int, int], None] | None = None,
                     step_callback=None, progress: bool = False, batch: int = 1) -> torch.Tensor:
    """The images of a ``prompt:`` concept set (pixels in [-1, 1]): DDIM from ``model.randn(n, seed)``
    (image ``i`` starts from row ``i``, so the first ``m`` images of a set of ``n`` are the set of ``m``),
    ``batch`` images per call (1: one at a time); ``on_image(done, n)`` runs after each call (it may
    raise to stop), ``step_callback(i, t)`` before each DDIM step."""
    check_range("concept images", n, 1, 100_000)
    noise = model.randn(n, seed)
    out = []
    for lo in range(0, n, batch):
        z = model.ddim_sample(noise[lo:lo + batch], model.num_train_timesteps - 1, steps, cond, progress=progress,
                              step_callback=step_callback, desc="concept image")
        out.append(model.decode(z).cpu())
        if on_image is not None:
            on_image(min(lo + batch, n), n)
    return torch.cat(out)


def encode_in_slices(model, images: torch.Tensor, batch: int = ENCODE_BATCH, on_slice=None) -> torch.Tensor:
    """``model.encode`` ``batch`` images at a time (latent models; one call for pixel models, whose encode
    is the identity); ``on_slice(done, n)`` after each call."""
    n = len(images)
    step = batch if model.is_latent else max(n, 1)
    out = []
    for lo in range(0, n, step):
        out.append(model.encode(images[lo:lo + step]))
        if on_slice is not None:
            on_slice(min(lo + step, n), n)
    return torch.cat(out)


@torch.no_grad()
def _mean_features(model, images: torch.Tensor, layers: list[str], t_tilde: int, cond, seed: int,
                   batch_size: int = FEATURE_BATCH, step_callback=None, on_encoded=None) -> dict[str, torch.Tensor]:
    """Mean over images of each layer's output at ``x_t~ = AddNoise(x_0, t~)`` (conditional path only).
    Images are VAE-encoded :data:`ENCODE_BATCH` at a time (``on_encoded(done, n)`` after each slice)."""
    sums: dict[str, torch.Tensor] = {}
    n = 0
    total = len(images)
    noise = model.randn(total, seed)
    c = None if cond is None else type(cond)(cond.cond, None, 1.0, cond.prompt)
    with capture(model.unet, layers) as cap:
        for i in range(0, total, batch_size):
            if step_callback is not None:
                step_callback(i // batch_size, t_tilde)
            slice_done = None if on_encoded is None else (lambda done, _n, i=i: on_encoded(i + done, total))
            x0 = encode_in_slices(model, images[i:i + batch_size], on_slice=slice_done)
            xb = model.add_noise(x0, t_tilde, noise[i:i + batch_size])
            cap.clear()
            model.predict(xb, t_tilde, c)
            for layer in layers:
                h = cap.outputs[layer][0].float().sum(0, keepdim=True)
                sums[layer] = h if layer not in sums else sums[layer] + h
            n += len(xb)
    return {k: v / n for k, v in sums.items()}


def steering_vector(model, images: torch.Tensor, layers: list[str] | None = None, t_tilde: int | None = None,
                    kind: str = "channel", cond=None, baseline: torch.Tensor | None = None, seed: int = 0,
                    step_callback=None, on_encoded=None) -> SteeringVector:
    """``v`` of eq. 11 from concept images (pixels in [-1, 1]); ``cond`` is ``c_bar`` for text models.
    ``seed`` draws the noise taking the images to ``t~``; ``step_callback(i, t~)`` runs before each batch,
    ``on_encoded(done, n)`` after each VAE slice of the concept images."""
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
    v = _mean_features(model, images, layers, t_tilde, cond, seed, step_callback=step_callback, on_encoded=on_encoded)
    if baseline is not None:
        b = _mean_features(model, baseline, layers, t_tilde, model.default_conditioning() if model.is_text else None,
                           seed, step_callback=step_callback)
        v = {k: v[k] - b[k] for k in v}
    if kind == "channel":
        v = {k: t.mean(dim=(2, 3), keepdim=True) for k, t in v.items()}
    return SteeringVector({k: t.cpu() for k, t in v.items()}, kind, t_tilde, model.model_id, len(images),
                          {"baseline": baseline is not None, "prompt": getattr(cond, "prompt", "")}, seed=int(seed))


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


def invert_source(model, z0: torch.Tensor, t_start: int, steps: int, window: int, cond=None,
                  progress: bool = False) -> tuple[torch.Tensor, int, int, int]:
    """An image source: ``(x, t_from, steps, window)`` for :func:`steered_samples`. The image is DDIM-inverted
    only down to where steering starts (the ``window``-th last step of the grid from ``t_start``), since the
    unsteered steps before it would retrace the inversion; inverting to ``T`` instead lands where a cosine
    schedule's ``x_T`` is near a boundary between the denoiser's basins and can come back as another image
    (digits-gen, 40 steps, window 20: the example digits' reconstruction RMS 0.02-0.12 at the window's start,
    0.04-0.47 from ``T``). With no window the image is inverted to ``t_start``."""
    ts = model.timesteps(t_start, steps)
    check_range("steering window", window, 0, len(ts))
    if window == 0:
        return model.ddim_invert(z0, t_start, steps, cond, progress=progress), t_start, steps, 0
    t_from = ts[len(ts) - window]
    return model.ddim_invert(z0, t_from, window, cond, progress=progress), t_from, window, window


def concept_strength_digits(images: torch.Tensor, target: int) -> np.ndarray:
    """Probability of the target digit under the disclosed logistic-regression classifier."""
    from ..data.classifier import predict_proba

    return predict_proba(images)[:, int(target)]


def jump_share(values, min_rise: float = 0.05) -> float | None:
    """The largest rise between neighbouring strengths over the whole rise ``max - first`` (1: all of it in one
    step, threshold-like; ``1/(n-1)``: evenly spread); ``None`` when the values rise by less than ``min_rise``."""
    y = np.asarray(values, dtype=float)
    rise = float(y.max() - y[0])
    return float(np.diff(y).max()) / rise if rise > min_rise else None


def pixel_progress(images: torch.Tensor) -> np.ndarray:
    """``||x(a) - x(0)|| / ||x(a_max) - x(0)||`` over the steered images (one per strength, first at a = 0):
    how far each has moved from the unsteered sample, free of any classifier's sharpness."""
    x = images.flatten(1).double()
    d = (x - x[0]).norm(dim=1).numpy()
    return d / d[-1] if d[-1] > 0 else np.zeros_like(d)


def curve_measures(strengths, p, images: torch.Tensor | None = None) -> dict:
    """How a steering curve responds to the strength (Zhang et al. 2025, Fig. 8: smooth and monotone for
    generalized samples, threshold-like for memorized ones). ``p``: the concept strength (a probability) per
    strength; ``images``: the steered samples.

    ``a_cross``: where ``p`` first crosses 0.5; ``width``: the span of ``a`` over which ``p`` goes 0.1 -> 0.9
    (from ``p(0) < 0.1``), ``rel_width`` = width / a_cross; ``jump_share`` of ``p``; ``pixel_jump_share``: the
    jump share of :func:`pixel_progress`; ``monotone``: Spearman correlation of ``p`` with ``a``."""
    from scipy.stats import spearmanr

    a, p = np.asarray(strengths, dtype=float), np.asarray(p, dtype=float)
    lo, mid, hi = (first_crossing(a, p, q) for q in (0.1, 0.5, 0.9))
    width = hi - lo if lo is not None and hi is not None and p[0] < 0.1 else None
    out = {"a_cross": mid, "width": width, "rel_width": width / mid if width is not None and mid else None,
           "jump_share": jump_share(p),
           "pixel_jump_share": None if images is None else jump_share(pixel_progress(images), 0.0),
           "monotone": float(spearmanr(a, p).statistic) if np.ptp(p) > 0 else 0.0}
    return {k: v if v is None else round(float(v), 4) for k, v in out.items()}


def digit_concept(target: int, n: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Built-in concept set: ``n`` training digits of class ``target``; baseline: all training digits."""
    from ..data.digits import load_digits_split

    check_range("digit class", target, 0, 9)
    s = load_digits_split()
    return s.train_images[s.train_labels == int(target)][:n], s.train_images


def contrast_sources(model, n: int = 48, seed: int = 0, steps: int = 40, avoid_class: int | None = None,
                     step_callback=None, chunk: int = 8, labels: tuple[str, ...] = ("memorized", "generalized")):
    """Starting noises of one memorized and one generalized sample of a built-in model, for the paper's
    contrast (Zhang et al. 2025, Fig. 8): among ``n`` seeded samples, the first whose nearest training
    image is a near-copy and the first that is novel (thresholds of :mod:`lowdim_app.data.neighbours`),
    skipping samples already of ``avoid_class``. Samples are drawn ``chunk`` at a time until one of each of
    ``labels`` is found. Returns ``{label: (index, noise)}``."""
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
            if label in labels and label not in found and (avoid_class is None or pred[j] != avoid_class):
                found[label] = (lo + j, noise[lo + j:lo + j + 1])
        if len(found) == len(labels):
            break
    return {k: found[k] for k in labels if k in found}
