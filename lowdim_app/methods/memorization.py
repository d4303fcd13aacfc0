"""Memorization check from the spikiness of the U-Net's representation (Zhang et al. 2025,
arXiv:2512.20963, §4.1, Alg. 1, App. B.2).

``h = h_theta(x_t, t, c)``: output of a named U-Net module at ``x_t = AddForwardNoise(x_0, t)``
(t = 50 of 1000, empty prompt for text models), global max-pooled over space -> ``C`` numbers;
``score = std(h)`` (Alg. 1; the alternatives of App. B.2 via :func:`lowdim_app.metrics.spikiness`).
Memorized images have spiky representations (few large channels), generalized ones balanced
representations (the two-layer DAE picture of §3.1). The forward stops right after the hooked module.

Which direction means "memorized" can depend on the layer, so a :class:`Calibration` fixes both
the threshold and the sign from labelled images (ROC, AUROC, TPR at 1% FPR: the measures of Table 1).
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

METRICS = SPIKINESS_METRICS
DEFAULT_T = 50
SD_DEFAULT_LAYER = "up_blocks.0.resnets.2"   # App. B.2: Stable Diffusion v1.4

__all__ = ["METRICS", "Calibration", "ImageScore", "ScoreSetup", "calibrate", "calibration_path",
           "default_calibration", "default_layer", "representations", "score_images", "scores", "setup",
           "spikiness"]


def _encoder_states(model, n: int):
    if not model.is_text:
        return None
    c = model.default_conditioning()
    return c.cond.expand(n, -1, -1)


@torch.no_grad()
def representations(model, images: torch.Tensor, layer: str, t: int = DEFAULT_T, n_noise: int = 1, seed: int = 0,
                    batch_size: int = 64, call_index: int = 0) -> torch.Tensor:
    """Global-max-pooled ``h`` (``N x C``) for pixel images in [-1, 1], averaged over ``n_noise`` draws
    (Alg. 1, lines 1-2; the condition is the empty prompt).

    The U-Net stops right after ``layer`` (:func:`~lowdim_app.diffusion.hooks.run_until`).
    """
    model.check_timestep(t)
    check_range("noise draws", n_noise, 1, 64)
    get_module(model.unet, layer)
    x0 = torch.cat([model.encode(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
    acc = None
    for k in range(n_noise):
        noise = model.randn(len(x0), seed + k)
        feats = []
        for i in range(0, len(x0), batch_size):
            xb = model.add_noise(x0[i:i + batch_size], t, noise[i:i + batch_size]).to(model.dtype)
            tt = torch.full((len(xb),), t, device=xb.device)
            kw = {}
            ehs = _encoder_states(model, len(xb))
            if ehs is not None:
                kw["encoder_hidden_states"] = ehs
            h = run_until(model.unet, layer, xb, tt, call_index=call_index, **kw)
            feats.append(h.float().amax(dim=(2, 3)).cpu() if h.ndim == 4 else h.float().flatten(1).cpu())
        f = torch.cat(feats)
        acc = f if acc is None else acc + f
    return acc / n_noise


def scores(model, images, layer: str, t: int = DEFAULT_T, metric: str = "std", n_noise: int = 1, seed: int = 0,
           batch_size: int = 64) -> np.ndarray:
    """Spikiness of each image's pooled representation (Alg. 1: ``Std(h)`` for ``metric="std"``)."""
    return spikiness(representations(model, images, layer, t, n_noise, seed, batch_size), metric).numpy()


@dataclass
class Calibration:
    """Threshold and sign for one (model, layer, t, metric), fitted from labelled scores
    (Alg. 1's THRES; AUROC and TPR at 1% FPR as in Table 1)."""

    model_id: str
    layer: str
    t: int
    metric: str
    direction: int            # +1: memorized if score > threshold; -1: memorized if score < threshold
    threshold: float
    target_fpr: float
    fpr: float                # false-positive rate on the generalized reference at the threshold
    tpr: float
    auroc: float | None
    tpr_at_1pct_fpr: float | None
    n_noise: int = 1
    memorized_scores: list[float] = field(default_factory=list)
    generalized_scores: list[float] = field(default_factory=list)
    roc_fpr: list[float] = field(default_factory=list)
    roc_tpr: list[float] = field(default_factory=list)
    notes: str = ""

    def is_memorized(self, score) -> np.ndarray:
        s = np.asarray(score, dtype=float)
        return s > self.threshold if self.direction > 0 else s < self.threshold

    def implied_fpr(self, score: float) -> float:
        """Share of the generalized reference that scores at least as 'memorized' as ``score``."""
        g = np.asarray(self.generalized_scores, dtype=float)
        if not len(g):
            return float("nan")
        return float((g >= score).mean() if self.direction > 0 else (g <= score).mean())

    def rule(self) -> str:
        """``memorized if score > 0.9678``."""
        return f"memorized if score {'>' if self.direction > 0 else '<'} {self.threshold:.4g}"

    def headline(self) -> dict:
        """The numbers a person reads (what ``calibrate`` prints)."""
        return {k: getattr(self, k) for k in ("layer", "t", "metric", "direction", "threshold", "fpr", "tpr",
                                              "auroc", "tpr_at_1pct_fpr")}

    def to_dict(self) -> dict:
        return {"format": "lowdim-calibration-v1", **asdict(self)}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
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
    direction = 1
    fpr_c = tpr_c = np.array([])
    if len(mem) >= 1:
        auc = auroc(mem, gen)
        direction = 1 if auc >= 0.5 else -1
        area = float(max(auc, 1 - auc))
        fpr_c, tpr_c = roc(direction * mem, direction * gen)
        tpr1 = tpr_at_fpr(direction * mem, direction * gen, 0.01)
    # threshold: the (1 - target_fpr) quantile of the generalized scores in the memorized direction
    q = np.quantile(direction * gen, 1 - target_fpr, method="higher")
    threshold = float(direction * q)
    cal = Calibration(model_id, layer, int(t), metric, direction, threshold, target_fpr, 0.0, float("nan"), area, tpr1,
                      n_noise, mem.tolist(), gen.tolist(), fpr_c.tolist(), tpr_c.tolist(), notes)
    cal.fpr = float(cal.is_memorized(gen).mean())
    cal.tpr = float(cal.is_memorized(mem).mean()) if len(mem) else float("nan")
    return cal


def calibration_path(assets_dir: Path, model_id: str) -> Path:
    return Path(assets_dir) / "calibrations" / f"{model_id}.json"


def default_calibration(model_id: str, assets_dir: Path) -> Calibration | None:
    """The calibration shipped for ``model_id`` in ``assets_dir/calibrations`` (``None`` if none)."""
    p = calibration_path(assets_dir, model_id)
    return Calibration.load(p) if p.is_file() else None


def default_layer(model, assets_dir: Path) -> str:
    """The shipped calibration's layer, else App. B.2's Stable Diffusion layer or the mid block."""
    cal = default_calibration(model.model_id, assets_dir)
    if cal is not None:
        return cal.layer
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
                raise UserError(f"the calibration file is for {name} {fitted}; clear the {name} field or pick that {name}")
        return ScoreSetup(calibration.layer, calibration.t, calibration.metric, n_noise or calibration.n_noise,
                          calibration, "file")
    cal = default_calibration(model.model_id, assets_dir) if assets_dir is not None else None
    if cal is not None and not (layer in (None, "", cal.layer) and t in (None, cal.t) and metric in (None, cal.metric)):
        cal = None   # settings differ from the calibration: scores only, no verdict
    if cal is not None:
        return ScoreSetup(cal.layer, cal.t, cal.metric, n_noise or cal.n_noise, cal, "shipped")
    layer = layer or (default_layer(model, assets_dir) if assets_dir is not None else
                      SD_DEFAULT_LAYER if model.is_text else "mid_block")
    return ScoreSetup(layer, DEFAULT_T if t is None else t, metric or "std", n_noise or 1, None, "")


@dataclass
class ImageScore:
    name: str
    score: float
    memorized: bool | None
    implied_fpr: float | None

    @property
    def verdict(self) -> str:
        return "n/a" if self.memorized is None else ("memorized" if self.memorized else "generalized")


def score_images(model, images: torch.Tensor, names: list[str], how: ScoreSetup, seed: int = 0) -> list[ImageScore]:
    """Score images with ``how``'s layer/t/metric and give verdicts from its calibration (Alg. 1, line 3)."""
    s = scores(model, images, how.layer, how.t, how.metric, how.n_noise, seed)
    cal = how.calibration
    return [ImageScore(name, float(v), None if cal is None else bool(cal.is_memorized(v)),
                       None if cal is None else cal.implied_fpr(float(v)))
            for name, v in zip(names, s)]
