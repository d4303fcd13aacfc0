"""Memorization check from the spikiness of the U-Net's representation (seed 004 §3.1, §4.1, App. B.2, Alg. 1).

``h = h_theta(x_t, t, c)``: output of a named U-Net module at ``x_t = AddForwardNoise(x_0, t)``
(t = 50 of 1000, empty prompt for text models), global max-pooled over space -> ``C`` numbers;
``score = std(h)``. Memorized images have spiky representations (few large channels),
generalized ones balanced representations. The forward stops right after the hooked module.

Which direction means "memorized" can depend on the layer, so a :class:`Calibration` fixes both
the threshold and the sign from labelled images (ROC, AUROC, TPR at 1% FPR; paper Table 1).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError, check_range
from ..diffusion.hooks import get_module, run_until

METRICS = ("std", "l4_l2", "entropy", "max_min")
SD_DEFAULT_LAYER = "up_blocks.0.resnets.2"


def spikiness(h: torch.Tensor, metric: str = "std") -> torch.Tensor:
    """Per-row spikiness of ``N x C`` pooled representations (higher = spikier, except entropy).

    * ``std``: standard deviation over channels (the paper's score);
    * ``l4_l2``: ``||h||_4 / ||h||_2`` (1 for one-hot, ``C^{-1/4}`` for flat);
    * ``entropy``: Shannon entropy of ``|h| / sum |h|`` (low = spiky);
    * ``max_min``: ``max(h) - min(h)``.
    """
    h = h.double()
    if metric == "std":
        return h.std(dim=1, correction=0)
    if metric == "l4_l2":
        return h.norm(p=4, dim=1) / h.norm(p=2, dim=1).clamp(min=1e-30)
    if metric == "entropy":
        p = h.abs() / h.abs().sum(1, keepdim=True).clamp(min=1e-30)
        return -(p * torch.log(p.clamp(min=1e-30))).sum(1)
    if metric == "max_min":
        return h.amax(1) - h.amin(1)
    raise UserError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")


def _encoder_states(model, n: int):
    if not model.is_text:
        return None
    c = model.default_conditioning()
    return c.cond.expand(n, -1, -1)


@torch.no_grad()
def representations(model, images: torch.Tensor, layer: str, t: int = 50, n_noise: int = 1, seed: int = 0,
                    batch_size: int = 64, call_index: int = 0) -> torch.Tensor:
    """Global-max-pooled ``h`` (``N x C``) for pixel images in [-1, 1], averaged over ``n_noise`` draws.

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


def scores(model, images, layer: str, t: int = 50, metric: str = "std", n_noise: int = 1, seed: int = 0,
           batch_size: int = 64) -> np.ndarray:
    return spikiness(representations(model, images, layer, t, n_noise, seed, batch_size), metric).numpy()


@dataclass
class Calibration:
    """Threshold and sign for one (model, layer, t, metric), fitted from labelled scores."""

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

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"format": "lowdim-calibration-v1", **asdict(self)}, indent=1))
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
    """Fit sign and threshold: ROC/AUROC with scikit-learn, threshold at ``target_fpr`` on ``gen``."""
    from sklearn.metrics import roc_auc_score, roc_curve

    mem, gen = np.asarray(mem, float), np.asarray(gen, float)
    check_range("target false-positive rate", target_fpr, 0.0, 0.5)
    if len(gen) < 2:
        raise UserError("need at least 2 generalized (not memorized) images to calibrate")
    auroc = tpr1 = None
    direction = 1
    fpr_c = tpr_c = np.array([])
    if len(mem) >= 1:
        y = np.r_[np.ones(len(mem)), np.zeros(len(gen))]
        s = np.r_[mem, gen]
        auc = roc_auc_score(y, s)
        direction = 1 if auc >= 0.5 else -1
        auroc = float(max(auc, 1 - auc))
        fpr_c, tpr_c, _ = roc_curve(y, direction * s)
        tpr1 = float(np.interp(0.01, fpr_c, tpr_c))
    # threshold: the (1 - target_fpr) quantile of the generalized scores in the memorized direction
    q = np.quantile(direction * gen, 1 - target_fpr, method="higher")
    threshold = float(direction * q)
    cal = Calibration(model_id, layer, int(t), metric, direction, threshold, target_fpr, 0.0, float("nan"), auroc, tpr1,
                      n_noise, mem.tolist(), gen.tolist(), fpr_c.tolist(), tpr_c.tolist(), notes)
    cal.fpr = float(cal.is_memorized(gen).mean())
    cal.tpr = float(cal.is_memorized(mem).mean()) if len(mem) else float("nan")
    return cal


def calibration_path(assets: Path, model_id: str) -> Path:
    return assets / "calibrations" / f"{model_id}.json"


def default_calibration(model_id: str) -> Calibration | None:
    from ..config import settings

    p = calibration_path(settings().assets, model_id)
    return Calibration.load(p) if p.is_file() else None


def default_layer(model) -> str:
    cal = default_calibration(model.model_id)
    if cal is not None:
        return cal.layer
    return SD_DEFAULT_LAYER if model.is_text else "mid_block"


@dataclass
class ImageScore:
    name: str
    score: float
    memorized: bool | None
    implied_fpr: float | None


def score_images(model, images: torch.Tensor, names: list[str], layer: str | None = None, t: int | None = None,
                 metric: str | None = None, calibration: Calibration | None = None, n_noise: int | None = None,
                 seed: int = 0) -> tuple[list[ImageScore], Calibration | None]:
    """Score images with the model's calibrated (or the given) layer/t/metric and give verdicts."""
    cal = calibration if calibration is not None else default_calibration(model.model_id)
    if cal is not None:
        cal.check_model(model.model_id)
        same = (layer in (None, cal.layer)) and (t in (None, cal.t)) and (metric in (None, cal.metric))
        if not same:
            cal = None  # settings differ from the calibration: scores only, no verdict
    layer = layer or (cal.layer if cal else default_layer(model))
    t = 50 if t is None else t
    metric = metric or (cal.metric if cal else "std")
    n_noise = n_noise or (cal.n_noise if cal else 1)
    s = scores(model, images, layer, t, metric, n_noise, seed)
    out = []
    for name, v in zip(names, s):
        out.append(ImageScore(name, float(v), None if cal is None else bool(cal.is_memorized(v)),
                              None if cal is None else cal.implied_fpr(float(v))))
    return out, cal
