"""Reference sets and calibrations for the built-in digit models (seeded, reproducible).

Ground truth (offline stand-in for the paper's SSCD labels, see :mod:`lowdim_app.data.neighbours`):
a generated sample is *memorized* if its nearest training image (RMS distance) is < 0.07 and
*generalized* if > 0.10.

* ``digits-dup``: both sets are the model's own DDIM samples (the paper's setting).
* ``digits-mem``: memorized = its near-copy samples; it generates almost nothing novel (3%), so the
  generalized set is held-out real test digits (images it cannot have memorized).
* ``digits-gen``: no sample is a near-copy; the threshold is set at the target FPR on its (novel)
  samples, with the layer and sign measured on ``digits-dup`` (same architecture).

Layer choice: per-layer AUROC of the std score on these sets (``layer_auroc``); the default is
the best layer in the paper's direction (memorized = spikier, higher std).
"""
from __future__ import annotations

import numpy as np
import torch

from ..data.digits import load_digits_split
from ..data.neighbours import nearest
from ..diffusion.hooks import list_layers
from .memorization import METRICS, calibrate, representations, spikiness

N_SAMPLES = 384
SAMPLE_SEED = 7
STEPS = 50


def reference_sets(model, n: int = N_SAMPLES, seed: int = SAMPLE_SEED) -> tuple[torch.Tensor, torch.Tensor, str]:
    split = load_digits_split()
    train = split.train_images[np.asarray(model.card["train_index"], dtype=int)]
    samples = model.generate(n, seed=seed, steps=STEPS, progress=True)
    lab = nearest(samples, train).labels()
    mem = samples[lab == "memorized"]
    if model.model_id == "digits-mem":
        gen, how = split.test_images[:200], "memorized: near-copy samples; generalized: 200 held-out real test digits"
    else:
        gen, how = samples[lab == "generalized"], "memorized / generalized: the model's own samples by NN distance"
    return mem, gen, how


def layer_auroc(model, mem: torch.Tensor, gen: torch.Tensor, t: int = 50) -> list[dict]:
    from sklearn.metrics import roc_auc_score

    rows = []
    for layer in list_layers(model.unet, ("ResnetBlock2D", "UNetMidBlock2D")):
        hm, hg = representations(model, mem, layer, t), representations(model, gen, layer, t)
        row = {"model": model.model_id, "layer": layer, "n_memorized": len(mem), "n_generalized": len(gen)}
        for metric in METRICS:
            sm, sg = spikiness(hm, metric).numpy(), spikiness(hg, metric).numpy()
            row[f"auroc_{metric}"] = float(roc_auc_score(np.r_[np.ones(len(sm)), np.zeros(len(sg))], np.r_[sm, sg]))
        rows.append(row)
    return rows


def best_layer(rows: list[dict]) -> str:
    """Highest std-AUROC in the paper's direction (memorized = higher std)."""
    return max(rows, key=lambda r: r["auroc_std"])["layer"]


def calibrate_builtin(model, layer: str | None = None, t: int = 50, target_fpr: float = 0.01,
                      reference_layer_rows: list[dict] | None = None):
    """Returns (calibration, per-layer rows)."""
    mem, gen, how = reference_sets(model)
    rows = layer_auroc(model, mem, gen, t) if len(mem) else []
    if layer is None:
        layer = best_layer(rows) if rows else best_layer(reference_layer_rows or [])
    sm = spikiness(representations(model, mem, layer, t), "std").numpy() if len(mem) else np.array([])
    sg = spikiness(representations(model, gen, layer, t), "std").numpy()
    notes = (f"{how}; {len(mem)} memorized, {len(gen)} generalized; samples: {N_SAMPLES} DDIM ({STEPS} steps, "
             f"seed {SAMPLE_SEED}); layer chosen by per-layer AUROC"
             + ("" if len(mem) else " on digits-dup (this model memorizes nothing: no near-copies among its samples)"))
    cal = calibrate(sm, sg, model.model_id, layer, t, "std", target_fpr, notes=notes)
    return cal, rows
