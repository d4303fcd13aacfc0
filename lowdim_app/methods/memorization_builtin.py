"""Reference sets and calibrations for the built-in digit models (seeded, reproducible).

Ground truth (offline stand-in for the SSCD labels of Zhang et al. 2025, arXiv:2512.20963, App. B.2;
see :mod:`lowdim_app.data.neighbours`): a generated sample is *memorized* if its nearest training
image (RMS distance) is < 0.07 and *generalized* if > 0.10.

* ``digits-dup``: both sets are the model's own DDIM samples (the paper's setting).
* ``digits-mem``: memorized = its near-copy samples; it generates almost nothing novel (3%), so the
  generalized set is held-out real test digits (images it cannot have memorized).
* ``digits-gen``: no sample is a near-copy; the threshold is set at the target FPR on its (novel)
  samples, with the layer and sign measured on ``digits-dup`` (same architecture).

Layer choice: per-layer AUROC of the std score on these sets (``layer_auroc``); the default is
the best layer in the paper's direction (memorized = spikier, higher std; §4.1).
"""
from __future__ import annotations

import numpy as np
import torch

from ..data.digits import load_digits_split
from ..data.neighbours import COPY_THRESHOLD, NOVEL_THRESHOLD
from ..diffusion.hooks import list_layers
from ..metrics import Neighbours, auroc, nearest
from .memorization import DEFAULT_T, METRICS, calibrate, representations, spikiness

BUILTIN_MODELS = ("digits-dup", "digits-mem", "digits-gen")   # calibration order: digits-gen reuses digits-dup's layers
N_SAMPLES = 384
SAMPLE_SEED = 7
STEPS = 50


def training_images(model) -> torch.Tensor:
    """The built-in model's own training digits (``card["train_index"]`` of the digits split)."""
    return load_digits_split().train_images[np.asarray(model.card["train_index"], dtype=int)]


def nearest_training(model, images: torch.Tensor) -> tuple[Neighbours, torch.Tensor]:
    """Nearest training image of each image (RMS distance) and the training set searched."""
    train = training_images(model)
    return nearest(images, train, k=1), train


def copy_labels(distance: torch.Tensor) -> np.ndarray:
    """'memorized' (near-copy) / 'generalized' (novel) / 'ambiguous' by nearest-neighbour distance."""
    d = torch.as_tensor(distance).numpy()
    return np.where(d < COPY_THRESHOLD, "memorized", np.where(d > NOVEL_THRESHOLD, "generalized", "ambiguous"))


def reference_sets(model, n: int = N_SAMPLES, seed: int = SAMPLE_SEED, steps: int = STEPS,
                   progress: bool = True) -> tuple[torch.Tensor, torch.Tensor, str]:
    split = load_digits_split()
    samples = model.generate(n, seed=seed, steps=steps, progress=progress)
    lab = copy_labels(nearest(samples, training_images(model)).nearest)
    mem = samples[lab == "memorized"]
    if model.model_id == "digits-mem":
        gen, how = split.test_images[:200], "memorized: near-copy samples; generalized: 200 held-out real test digits"
    else:
        gen, how = samples[lab == "generalized"], "memorized / generalized: the model's own samples by NN distance"
    return mem, gen, how


def layer_auroc(model, mem: torch.Tensor, gen: torch.Tensor, t: int = DEFAULT_T) -> list[dict]:
    """AUROC of every spikiness metric at every ResNet / mid block (the layer sweep behind App. B.2's choice)."""
    rows = []
    for layer in list_layers(model.unet, ("ResnetBlock2D", "UNetMidBlock2D")):
        hm, hg = representations(model, mem, layer, t), representations(model, gen, layer, t)
        row = {"model": model.model_id, "layer": layer, "n_memorized": len(mem), "n_generalized": len(gen)}
        for metric in METRICS:
            row[f"auroc_{metric}"] = auroc(spikiness(hm, metric), spikiness(hg, metric))
        rows.append(row)
    return rows


def best_layer(rows: list[dict]) -> str:
    """Highest std-AUROC in the paper's direction (memorized = higher std)."""
    return max(rows, key=lambda r: r["auroc_std"])["layer"]


def calibrate_builtin(model, layer: str | None = None, t: int = DEFAULT_T, target_fpr: float = 0.01,
                      reference_layer_rows: list[dict] | None = None, n: int = N_SAMPLES, seed: int = SAMPLE_SEED,
                      steps: int = STEPS, progress: bool = True):
    """Returns (calibration, per-layer rows)."""
    mem, gen, how = reference_sets(model, n, seed, steps, progress)
    rows = layer_auroc(model, mem, gen, t) if len(mem) else []
    if layer is None:
        layer = best_layer(rows) if rows else best_layer(reference_layer_rows or [])
    sm = spikiness(representations(model, mem, layer, t), "std").numpy() if len(mem) else np.array([])
    sg = spikiness(representations(model, gen, layer, t), "std").numpy()
    notes = (f"{how}; {len(mem)} memorized, {len(gen)} generalized; samples: {n} DDIM ({steps} steps, "
             f"seed {seed}); layer chosen by per-layer AUROC"
             + ("" if len(mem) else " on digits-dup (this model memorizes nothing: no near-copies among its samples)"))
    cal = calibrate(sm, sg, model.model_id, layer, t, "std", target_fpr, notes=notes)
    return cal, rows
