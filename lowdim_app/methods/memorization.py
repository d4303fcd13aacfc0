"""Memorization check from the spikiness of the U-Net's representation (Zhang et al. 2025,
arXiv:2512.20963, §4.1, Alg. 1, App. B.2), with the denoising error (Carlini et al. 2023,
arXiv:2301.13188; Matsumoto et al. 2023, arXiv:2302.03262) and the local intrinsic dimension FLIPD
(Kamkari et al. 2024, arXiv:2406.03537; :mod:`.flipd`) as the other prompt-free detectors
(:mod:`.detectors` lists them all, the prompt detectors included).

``h = h_theta(x_t, t, c)``: output of a named U-Net module at ``x_t = AddForwardNoise(x_0, t)``
(t = 50 of 1000, empty prompt for text models), global max-pooled over space -> ``C`` numbers;
``score = std(h)`` (Alg. 1; the alternatives of App. B.2 via :func:`lowdim_app.metrics.spikiness`).
Memorized images have spiky representations (few large channels), generalized ones balanced
representations (the two-layer DAE picture of §3.1). The forward stops right after the hooked module.

Noise: draw ``k`` under seed ``s`` is :func:`noise_draw` ``(s, k)``, the same for every image, so an
image's score does not depend on the other images of the batch or on its position. A score is the
mean over ``n_noise`` draws of the per-draw value (for one draw this is Alg. 1 exactly; Alg. 1 averages
``h`` over draws before taking the std), reported with its spread (``SPREAD_SIGMAS`` standard
errors). Verdicts: ``out-of-domain`` when the denoising error exceeds the calibration's
out-of-domain threshold (a high quantile over real in-domain images), ``uncertain`` when
``score +- spread`` contains the threshold, else ``memorized`` / ``generalized``.

Which direction means "memorized" can depend on the layer, so a :class:`Calibration` fixes both
the threshold and the sign from labelled images (ROC, AUROC, TPR at 1% FPR: the measures of Table 1).
Without a memorized set, :func:`calibrate_one_class` fits the threshold from known non-training
images alone, in the paper's direction, and states the false-positive rate it promises
(:mod:`.one_class`).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..diffusion.hooks import get_module, run_until
from ..errors import UserError, check_range
from ..metrics import SPIKINESS_METRICS, auroc, roc, spikiness, tpr_at_fpr

DENOISING_ERROR = "denoising_error"
FLIPD = "flipd"
METRICS = SPIKINESS_METRICS                       # spikiness measures of the representation
LAYERLESS = (DENOISING_ERROR, FLIPD)              # image detectors that read no layer
DETECTORS = SPIKINESS_METRICS + LAYERLESS         # everything ``metric`` may name (the prompt-free detectors)
DEFAULT_T = 50
DEFAULT_NOISE_DRAWS = 4     # bench/detectors.py: verdict flip rate against the number of draws
SPREAD_SIGMAS = 2.0         # the spread is 2 standard errors of the mean over draws
OOD_T = DEFAULT_T
SD_DEFAULT_LAYER = "up_blocks.0.resnets.2"   # App. B.2: Stable Diffusion v1.4

__all__ = ["DENOISING_ERROR", "DETECTORS", "FLIPD", "LAYERLESS", "METRICS", "paper_direction", "Calibration", "ImageScore",
           "ScoreSetup", "calibrate", "calibrate_one_class", "calibration_path",
           "default_calibration", "default_layer", "denoising_error_draws", "draw_seed", "fit_ood", "mean_and_spread",
           "noise_draw", "representation_draws", "representations", "score_draws", "score_images", "scores", "setup",
           "spikiness"]


def _encoder_states(model, n: int):
    if not model.is_text:
        return None
    c = model.default_conditioning()
    return c.cond.expand(n, -1, -1)


def draw_seed(seed: int, draw: int) -> int:
    """The seed of noise draw ``draw`` under the user's ``seed``: a function of (seed, draw) only."""
    return int(np.random.SeedSequence([int(seed) % 2**63, int(draw)]).generate_state(1, np.uint64)[0] % 2**63)


def noise_draw(model, seed: int, draw: int) -> torch.Tensor:
    """``1 x sample_shape`` noise of draw ``draw``: every image gets the same draw-``draw`` noise, whatever
    its position in a batch, so a score depends on (image, model, settings, seed) alone."""
    return model.randn(1, draw_seed(seed, draw))


def _encode(model, images, batch_size):
    if not torch.isfinite(images).all():
        raise UserError("an image has NaN or infinite pixel values")
    return torch.cat([model.encode(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


@torch.no_grad()
def representation_draws(model, images: torch.Tensor, layer: str, t: int = DEFAULT_T, n_noise: int = 1, seed: int = 0,
                         batch_size: int = 64, call_index: int = 0) -> torch.Tensor:
    """Global-max-pooled ``h`` per image and noise draw (``N x K x C``) for pixel images in [-1, 1]
    (Zhang et al. 2025, Alg. 1, lines 1-2; the condition is the empty prompt). Draw ``k`` uses
    :func:`noise_draw` ``(seed, k)`` for every image. The U-Net stops right after ``layer``."""
    model.check_timestep(t)
    check_range("noise draws", n_noise, 1, 64)
    get_module(model.unet, layer)
    x0 = _encode(model, images, batch_size)
    out = []
    for k in range(n_noise):
        noise = noise_draw(model, seed, k)
        feats = []
        for i in range(0, len(x0), batch_size):
            xb = x0[i:i + batch_size]
            xb = model.add_noise(xb, t, noise.expand(len(xb), *noise.shape[1:])).to(model.dtype)
            tt = torch.full((len(xb),), t, device=xb.device)
            kw = {}
            ehs = _encoder_states(model, len(xb))
            if ehs is not None:
                kw["encoder_hidden_states"] = ehs
            h = run_until(model.unet, layer, xb, tt, call_index=call_index, **kw)
            feats.append(h.float().amax(dim=(2, 3)).cpu() if h.ndim == 4 else h.float().flatten(1).cpu())
        out.append(torch.cat(feats))
    return torch.stack(out, 1)


def representations(model, images: torch.Tensor, layer: str, t: int = DEFAULT_T, n_noise: int = 1, seed: int = 0,
                    batch_size: int = 64, call_index: int = 0) -> torch.Tensor:
    """``h`` (``N x C``) averaged over ``n_noise`` draws (Alg. 1, lines 1-2)."""
    return representation_draws(model, images, layer, t, n_noise, seed, batch_size, call_index).mean(1)


@torch.no_grad()
def denoising_error_draws(model, images: torch.Tensor, t: int = DEFAULT_T, n_noise: int = 1, seed: int = 0,
                          batch_size: int = 64) -> np.ndarray:
    """``||eps_hat(x_t, t) - eps||^2 / n`` per image and draw (``N x K``): the loss-threshold baseline of
    Carlini et al. 2023 (arXiv:2301.13188) / Matsumoto et al. 2023 (arXiv:2302.03262), with the same
    per-(seed, draw) noise as :func:`representation_draws`. Lower = better denoised."""
    model.check_timestep(t)
    check_range("noise draws", n_noise, 1, 64)
    x0 = _encode(model, images, batch_size)
    cond = model.default_conditioning()
    err = np.zeros((len(x0), n_noise))
    for k in range(n_noise):
        noise = noise_draw(model, seed, k)
        for i in range(0, len(x0), batch_size):
            xb = x0[i:i + batch_size]
            nb = noise.expand(len(xb), *noise.shape[1:])
            eps = model.eps(model.add_noise(xb, t, nb), t, cond)
            err[i:i + len(xb), k] = ((eps.float() - nb.float()) ** 2).flatten(1).mean(1).double().cpu().numpy()
    return err


def paper_direction(metric: str) -> int:
    """+1 when a higher value means memorized in the detector's paper, -1 when lower does."""
    from .detectors import detector

    return detector(metric).memorized_if


def score_draws(model, images, layer: str, t: int = DEFAULT_T, metric: str = "std", n_noise: int = 1, seed: int = 0,
                batch_size: int = 64) -> np.ndarray:
    """The detector's value per image and noise draw (``N x K``): a spikiness measure of the pooled
    representation at ``layer`` (Alg. 1: ``Std(h)``), ``metric="denoising_error"`` or ``metric="flipd"``
    (Hutchinson probes as the draws; ``layer`` unused for both)."""
    if metric == DENOISING_ERROR:
        return denoising_error_draws(model, images, t, n_noise, seed, batch_size)
    if metric == FLIPD:
        from .flipd import flipd_draws

        return flipd_draws(model, images, t, n_noise, seed, min(batch_size, 32))
    h = representation_draws(model, images, layer, t, n_noise, seed, batch_size)
    n, k, c = h.shape
    return spikiness(h.reshape(n * k, c), metric).numpy().astype(float).reshape(n, k)


def scores(model, images, layer: str, t: int = DEFAULT_T, metric: str = "std", n_noise: int = 1, seed: int = 0,
           batch_size: int = 64) -> np.ndarray:
    """Mean over the ``n_noise`` draws of :func:`score_draws` (one number per image)."""
    return score_draws(model, images, layer, t, metric, n_noise, seed, batch_size).mean(1)


def mean_and_spread(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over draws and the spread: ``SPREAD_SIGMAS`` standard errors of that mean (0 for one draw)."""
    d = np.asarray(draws, float)
    k = d.shape[1]
    se = d.std(1, ddof=1) / np.sqrt(k) if k > 1 else np.zeros(len(d))
    return d.mean(1), SPREAD_SIGMAS * se


def _finite_or_none(v):
    if isinstance(v, float) and not np.isfinite(v):
        return None
    if isinstance(v, list):
        return [_finite_or_none(x) for x in v]
    return v


@dataclass
class Calibration:
    """Threshold and sign for one (model, detector = layer / t / metric), fitted from labelled scores
    (Alg. 1's THRES; AUROC and TPR at 1% FPR as in Table 1), and the out-of-domain threshold: the
    denoising error at ``ood_t`` above which an image is unlike the model's real in-domain images
    (``ood_reference``: their errors; threshold at ``1 - ood_target_fpr`` of them)."""

    model_id: str
    layer: str
    t: int
    metric: str
    direction: int            # +1: memorized if score > threshold; -1: memorized if score < threshold
    threshold: float
    target_fpr: float
    fpr: float                # false-positive rate on the generalized reference at the threshold
    tpr: float | None
    auroc: float | None
    tpr_at_1pct_fpr: float | None
    n_noise: int = 1
    memorized_scores: list[float] = field(default_factory=list)
    generalized_scores: list[float] = field(default_factory=list)
    roc_fpr: list[float] = field(default_factory=list)
    roc_tpr: list[float] = field(default_factory=list)
    notes: str = ""
    ood_t: int = OOD_T
    ood_threshold: float | None = None
    ood_target_fpr: float = 0.01
    ood_reference: list[float] = field(default_factory=list)
    ood_notes: str = ""
    detectors: list[dict] = field(default_factory=list)   # the detectors compared when this one was chosen
    kind: str = "two-class"   # "two-class" (memorized + generalized sets) or "one-class" (non-training images only)
    fpr_promise: dict = field(default_factory=dict)         # one-class: methods.one_class.FprPromise.to_dict()

    def is_memorized(self, score) -> np.ndarray:
        s = np.asarray(score, dtype=float)
        return s > self.threshold if self.direction > 0 else s < self.threshold

    def implied_fpr(self, score: float) -> float | None:
        """Share of the generalized reference that scores at least as 'memorized' as ``score``."""
        g = np.asarray(self.generalized_scores, dtype=float)
        if not len(g) or not np.isfinite(score):
            return None
        return float((g >= score).mean() if self.direction > 0 else (g <= score).mean())

    def verdict(self, score: float, spread: float = 0.0, ood_value: float | None = None) -> tuple[str, str]:
        """(``memorized`` | ``generalized`` | ``uncertain`` | ``out-of-domain``, one-line reason)."""
        if not np.isfinite(score):
            return "out-of-domain", "the score is not a finite number"
        if self.ood_threshold is not None and ood_value is not None and not ood_value <= self.ood_threshold:
            return "out-of-domain", (f"denoising error {ood_value:.3g} at t = {self.ood_t} is above {self.ood_threshold:.3g}, "
                                     f"the {100 * (1 - self.ood_target_fpr):g}th percentile of real in-domain images: "
                                     "unlike what this model was trained on (dark-on-light? try invert)")
        if abs(score - self.threshold) <= spread:
            return "uncertain", (f"score {score:.4g} +- {spread:.2g} straddles the threshold {self.threshold:.4g}: "
                                 "more noise draws may decide")
        mem = bool(self.is_memorized(score))
        return ("memorized" if mem else "generalized"), ""

    def rule(self) -> str:
        """``memorized if score > 0.9678``."""
        return f"memorized if score {'>' if self.direction > 0 else '<'} {self.threshold:.4g}"

    def detector_name(self) -> str:
        if self.metric in LAYERLESS:
            return f"{'denoising error' if self.metric == DENOISING_ERROR else 'FLIPD'} at t = {self.t}"
        return f"{self.metric} of `{self.layer}` at t = {self.t}"

    def headline(self) -> dict:
        """The numbers a person reads (what ``calibrate`` prints)."""
        out = {k: getattr(self, k) for k in ("kind", "layer", "t", "metric", "direction", "threshold", "fpr", "tpr",
                                             "auroc", "tpr_at_1pct_fpr", "n_noise", "ood_t", "ood_threshold")}
        if self.fpr_promise:
            out["fpr_promise"] = dict(self.fpr_promise)
        return out

    def promise_text(self) -> str:
        """One-class: the false-positive rate the threshold promises, with its uncertainty ('' otherwise)."""
        if not self.fpr_promise:
            return ""
        from .one_class import FprPromise

        return FprPromise(**self.fpr_promise).describe()

    def to_dict(self) -> dict:
        return {"format": "lowdim-calibration-v1", **{k: _finite_or_none(v) for k, v in asdict(self).items()}}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Calibration":
        try:
            d = json.loads(Path(path).read_text())
            if d.pop("format", None) != "lowdim-calibration-v1":
                raise ValueError
            return cls(**d)
        except Exception:
            raise UserError(f"{Path(path).name}: not a LowDim Lab calibration file") from None

    def check_model(self, model_id: str) -> None:
        if model_id != self.model_id:
            raise UserError(f"this calibration is for {self.model_id}, not {model_id}")


def calibrate(mem: np.ndarray, gen: np.ndarray, model_id: str, layer: str, t: int, metric: str,
              target_fpr: float = 0.01, n_noise: int = 1, notes: str = "") -> Calibration:
    """Fit sign and threshold: ROC/AUROC (:mod:`lowdim_app.metrics`), threshold at ``target_fpr`` on ``gen``."""
    mem, gen = np.asarray(mem, float), np.asarray(gen, float)
    check_range("target false-positive rate", target_fpr, 0.0, 0.5)
    if len(gen) < 2:
        raise UserError("need at least 2 generalized (not memorized) images to calibrate")
    area = tpr1 = None
    direction = paper_direction(metric) if metric in DETECTORS else 1
    fpr_c = tpr_c = np.array([])
    if len(mem) >= 1:
        auc = auroc(mem, gen)
        direction = 1 if auc >= 0.5 else -1
        area = float(max(auc, 1 - auc))
        fpr_c, tpr_c = roc(direction * mem, direction * gen)
        tpr1 = float(tpr_at_fpr(direction * mem, direction * gen, 0.01))
    # threshold: the (1 - target_fpr) quantile of the generalized scores in the memorized direction
    q = np.quantile(direction * gen, 1 - target_fpr, method="higher")
    threshold = float(direction * q)
    cal = Calibration(model_id, layer, int(t), metric, direction, threshold, target_fpr, 0.0, None, area, tpr1,
                      n_noise, mem.tolist(), gen.tolist(), fpr_c.tolist(), tpr_c.tolist(), notes)
    cal.fpr = float(cal.is_memorized(gen).mean())
    cal.tpr = float(cal.is_memorized(mem).mean()) if len(mem) else None
    return cal


def calibrate_one_class(reference: np.ndarray, model_id: str, layer: str, t: int, metric: str, direction: int,
                        target_fpr: float = 0.01, confidence: float = 0.95, n_noise: int = 1,
                        notes: str = "") -> Calibration:
    """A threshold from the scores of images known not to be training data alone (no memorized set):
    the conformal quantile of :mod:`lowdim_app.methods.one_class`, in the direction ``direction``
    (+1: higher = memorized), with the FPR it promises for this reference size."""
    from .one_class import fit_one_class

    ref = np.asarray(reference, float)
    threshold, promise = fit_one_class(ref, direction, target_fpr, confidence)
    cal = Calibration(model_id, layer, int(t), metric, int(direction), threshold, float(target_fpr), 0.0, None, None,
                      None, n_noise, [], ref.tolist(), notes=notes, kind="one-class", fpr_promise=promise.to_dict())
    cal.fpr = float(cal.is_memorized(ref).mean())
    return cal


def fit_ood(cal: Calibration, reference_errors: np.ndarray, t: int = OOD_T, target_fpr: float = 0.01,
            notes: str = "") -> Calibration:
    """Set ``cal``'s out-of-domain threshold: the ``1 - target_fpr`` quantile of the denoising errors
    (mean over ``cal.n_noise`` draws) of real in-domain images."""
    ref = np.asarray(reference_errors, float)
    if len(ref) < 2:
        raise UserError("need at least 2 in-domain images for the out-of-domain threshold")
    cal.ood_t, cal.ood_target_fpr, cal.ood_notes = int(t), float(target_fpr), notes
    cal.ood_threshold = float(np.quantile(ref, 1 - target_fpr, method="higher"))
    cal.ood_reference = ref.tolist()
    return cal


def calibration_path(assets_dir: Path, model_id: str) -> Path:
    return Path(assets_dir) / "calibrations" / f"{model_id}.json"


def default_calibration(model_id: str, assets_dir: Path) -> Calibration | None:
    """The calibration shipped for ``model_id`` in ``assets_dir/calibrations`` (``None`` if none)."""
    p = calibration_path(assets_dir, model_id)
    return Calibration.load(p) if p.is_file() else None


def default_layer(model, assets_dir: Path) -> str:
    """The layer of a spikiness score: the shipped calibration's layer, or, when its detector needs none
    (the denoising error), the layer its std detector was fitted at; else App. B.2's Stable Diffusion
    layer or the mid block."""
    cal = default_calibration(model.model_id, assets_dir)
    if cal is not None and cal.layer:
        return cal.layer
    std_layer = next((d.get("layer") for d in (cal.detectors if cal is not None else []) if d.get("metric") == "std"), "")
    if std_layer:
        return std_layer
    return SD_DEFAULT_LAYER if model.is_text else "mid_block"


@dataclass(frozen=True)
class ScoreSetup:
    """Layer, timestep, metric and noise draws of a score, and the calibration that gives verdicts."""

    layer: str
    t: int
    metric: str
    n_noise: int
    calibration: Calibration | None
    source: str = ""          # "file" (named by the user), "shipped", or "" (no verdicts)


def setup(model, assets_dir: Path | None, layer: str | None = None, t: int | None = None, metric: str | None = None,
          n_noise: int | None = None, calibration: Calibration | None = None) -> ScoreSetup:
    """Resolve the score's settings against a calibration.

    * ``calibration`` (a file the user named): it must be this model's; its layer, t and metric fill
      the blanks, and a different explicit value is an error.
    * otherwise the model's shipped calibration in ``assets_dir`` gives verdicts when the settings
      agree with it (blanks take its values), and no verdict when they differ.
    """
    if calibration is not None:
        calibration.check_model(model.model_id)
        for name, given, fitted in (("layer", layer, calibration.layer), ("t", t, calibration.t),
                                    ("metric", metric, calibration.metric)):
            if given not in (None, "", fitted):
                if not fitted:   # a layerless detector (the denoising error, FLIPD)
                    raise UserError(f"the calibration file's detector ({calibration.metric}) reads no {name}; clear "
                                    f"the {name} field")
                raise UserError(f"the calibration file is for {name} {fitted}; clear the {name} field or "
                                f"pick that {name}")
        return ScoreSetup(calibration.layer, calibration.t, calibration.metric, n_noise or calibration.n_noise,
                          calibration, "file")
    cal = default_calibration(model.model_id, assets_dir) if assets_dir is not None else None
    if cal is not None and not (layer in (None, "", cal.layer) and t in (None, cal.t) and metric in (None, cal.metric)):
        cal = None   # settings differ from the calibration: scores only, no verdict
    if cal is not None:
        return ScoreSetup(cal.layer, cal.t, cal.metric, n_noise or cal.n_noise, cal, "shipped")
    metric = metric or "std"
    if metric in LAYERLESS:
        layer = ""
    else:
        layer = layer or (default_layer(model, assets_dir) if assets_dir is not None else
                          SD_DEFAULT_LAYER if model.is_text else "mid_block")
    return ScoreSetup(layer, DEFAULT_T if t is None else t, metric, n_noise or DEFAULT_NOISE_DRAWS, None, "")


@dataclass
class ImageScore:
    name: str
    score: float              # mean over the noise draws
    memorized: bool | None
    implied_fpr: float | None
    spread: float = 0.0       # SPREAD_SIGMAS standard errors of that mean
    verdict: str = "n/a"      # memorized | generalized | uncertain | out-of-domain | n/a (no calibration)
    reason: str = ""
    ood_value: float | None = None


def _check_content(images: torch.Tensor) -> None:
    if not torch.isfinite(images).all():
        raise UserError("an image has NaN or infinite pixel values")
    flat = images.flatten(1)
    if len(flat) and bool(((flat.amax(1) - flat.amin(1)) == 0).any()):
        raise UserError("an image has no content (every pixel the same)")


def score_images(model, images: torch.Tensor, names: list[str], how: ScoreSetup, seed: int = 0) -> list[ImageScore]:
    """Score images with ``how``'s layer/t/metric over ``how.n_noise`` draws and give verdicts from its
    calibration (Alg. 1, line 3), out-of-domain first. Each image's numbers depend on the image, the
    model, the settings and the seed only (not on the other images or the order)."""
    _check_content(images)
    d = score_draws(model, images, how.layer, how.t, how.metric, how.n_noise, seed)
    mean, spread = mean_and_spread(d)
    cal = how.calibration
    ood = [None] * len(mean)
    if cal is not None and cal.ood_threshold is not None:
        e = d if (how.metric == DENOISING_ERROR and how.t == cal.ood_t) else \
            denoising_error_draws(model, images, cal.ood_t, how.n_noise, seed)
        ood = [float(v) for v in e.mean(1)]
    rows = []
    for name, m, sp, o in zip(names, mean, spread, ood):
        m, sp = float(m), float(sp)
        if cal is None:
            rows.append(ImageScore(name, m, None, None, sp, "n/a", "", o))
            continue
        v, why = cal.verdict(m, sp, o)
        rows.append(ImageScore(name, m, {"memorized": True, "generalized": False}.get(v), cal.implied_fpr(m), sp, v,
                               why, o))
    return rows
