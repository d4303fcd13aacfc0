"""The paper's memorization detector, layer by layer: the standard deviation of the global-max-pooled
representation (Zhang et al. 2025, arXiv:2512.20963, Alg. 1; t = 50 of 1000, mean over 4 noise draws) at
every ResNet and mid block of the built-in memorizing models.

Sets (the labelling rule of ``bench/detectors.py``): *calibration* = the model's seed-7 DDIM samples
(what ``calibrate-builtin`` fits on); *hidden* = fresh seed-8 samples, memorized when their nearest
training image is at RMS < 0.07 and generalized when > 0.10. ``digits-mem`` makes almost no novel
samples, so its generalized sets are held-out real test digits (first 180: calibration, the rest: hidden).

Per (model, layer): AUROC and TPR at 1 % FPR on both sets, in the paper's direction (memorized = higher
std) and whether the other direction separates better; ``chosen`` marks the std layer of the shipped
calibration (``calibrate-builtin``: best single-draw std AUROC on the calibration sets).

With ``--variants`` it also tries what Alg. 1 and App. B.2 leave open, per ResNet block, on the same sets
(2 noise draws): the timestep (t = 10 .. 500; the paper's t = 50 is sigma 0.17 on SD's schedule, 0.09 on
the digits' cosine one), the hooked activation (the block's output, or the SiLU before its second
convolution -- the paper's ``resnets.N.nonlinearity`` on SD), global max pooling or none (the paper: "detection
also works even if not"), and the l4/l2 ratio instead of the std (App. B.2's alternative), in both directions.

    python bench/std_layers.py [--models digits-mem,digits-dup] [--variants]
Writes bench/results/std_layers.csv (and std_variants.csv).
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lowdim_app.config import DEFAULT_ASSETS  # noqa: E402
from lowdim_app.data.digits import load_digits_split  # noqa: E402
from lowdim_app.diffusion import load_model  # noqa: E402
from lowdim_app.diffusion.hooks import list_layers, run_until  # noqa: E402
from lowdim_app.features.calibrate_builtin import HELD_OUT, OOD_REFERENCE  # noqa: E402
from lowdim_app.methods import memorization as mz  # noqa: E402
from lowdim_app.methods.memorization_builtin import best_layer, reference_sets  # noqa: E402
from lowdim_app.metrics import auroc, tpr_at_fpr  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "std_layers.csv"
VARIANTS = OUT.with_name("std_variants.csv")
VARIANT_TIMES = (10, 50, 100, 200, 500)


def quality(sm, sg) -> dict:
    a = auroc(sm, sg)
    return {"auroc": round(a, 4), "tpr_at_1pct_fpr": round(float(tpr_at_fpr(sm, sg, 0.01)), 4),
            "auroc_reversed": round(1 - a, 4), "tpr_at_1pct_fpr_reversed": round(float(tpr_at_fpr(-sm, -sg, 0.01)), 4)}


def shipped_std_layer(model_id: str) -> str | None:
    """The layer of the std detector in the shipped calibration (``calibrate-builtin``), whichever detector
    it made the default."""
    cal = mz.default_calibration(model_id, DEFAULT_ASSETS)
    if cal is None:
        return None
    if cal.metric == "std":
        return cal.layer
    return next((d["layer"] for d in cal.detectors or [] if d["metric"] == "std"), None)


def variant_scores(model, images, layer: str, t: int, activation: str, pool: str, statistic: str,
                   draws: int = 2) -> np.ndarray:
    """Alg. 1's score with the choices App. B.2 leaves open (mean over ``draws`` shared noise draws)."""
    import torch

    from lowdim_app.metrics import spikiness

    name, call = (layer, 0) if activation == "output" else (layer + ".nonlinearity", 2)   # 2: the SiLU before conv2
    out = []
    for k in range(draws):
        noise = mz.noise_draw(model, 0, k)
        x = model.add_noise(images.float(), t, noise.expand(len(images), *noise.shape[1:]))
        with torch.no_grad():
            h = run_until(model.unet, name, x, torch.full((len(x),), t), call_index=call).float()
        h = h.amax(dim=(2, 3)) if pool == "max" else h.flatten(1)
        out.append(spikiness(h, statistic).numpy())
    return np.mean(out, 0)


def variants(model, mid: str, sets: dict) -> list[dict]:
    combos = [(t, "output", "max", "std") for t in VARIANT_TIMES] + [
        (50, "silu before conv2", "max", "std"), (50, "output", "none", "std"),
        (50, "silu before conv2", "none", "std"), (50, "output", "max", "l4_l2")]
    rows = []
    for t, activation, pool, statistic in combos:
        for layer in list_layers(model.unet, ("ResnetBlock2D",)):
            row = {"model": mid, "layer": layer, "t": t, "activation": activation, "pool": pool, "statistic": statistic}
            for name, (mem, gen) in sets.items():
                q = quality(variant_scores(model, mem, layer, t, activation, pool, statistic),
                            variant_scores(model, gen, layer, t, activation, pool, statistic))
                row.update({f"{name}_{k}": v for k, v in q.items()})
            rows.append(row)
        best = max(rows[-len(list_layers(model.unet, ("ResnetBlock2D",))):],
                   key=lambda r: max(r["calibration_auroc"], r["calibration_auroc_reversed"]))
        print(mid, t, activation, pool, statistic, "best:", best["layer"],
              {k: v for k, v in best.items() if k.startswith("hidden_")}, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="digits-mem,digits-dup")
    ap.add_argument("--n", type=int, default=384)
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--variants", action="store_true", help=f"also write {VARIANTS.name}")
    a = ap.parse_args()
    split = load_digits_split()
    rows, variant_rows = [], []
    for mid in a.models.split(","):
        model = load_model(mid, "cpu")
        sets = {}
        for name, seed in (("calibration", 7), ("hidden", 8)):
            mem, gen, _ = reference_sets(model, a.n, seed, 50, progress=False)
            if mid == "digits-mem":
                gen = split.test_images[OOD_REFERENCE if name == "calibration" else HELD_OUT]
            sets[name] = (mem, gen)
        layer_rows = []
        for layer in list_layers(model.unet, ("ResnetBlock2D", "UNetMidBlock2D")):
            row = {"model": mid, "layer": layer}
            for name, (mem, gen) in sets.items():
                sm = mz.scores(model, mem, layer, 50, "std", a.draws, 0)
                sg = mz.scores(model, gen, layer, 50, "std", a.draws, 0)
                row.update({f"{name}_n_memorized": len(mem), f"{name}_n_generalized": len(gen)})
                row.update({f"{name}_{k}": v for k, v in quality(sm, sg).items()})
            layer_rows.append(row)
            print(mid, layer, {k: v for k, v in row.items() if "auroc" in k or "tpr" in k}, flush=True)
        chosen = shipped_std_layer(mid) or best_layer([{"layer": r["layer"], "auroc_std": r["calibration_auroc"]}
                                                      for r in layer_rows])
        for r in layer_rows:
            r["chosen"] = int(r["layer"] == chosen)
        rows += layer_rows
        if a.variants:
            variant_rows += variants(model, mid, sets)
        print(f"{mid}: calibration picks {chosen}", flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {a.out}")
    if variant_rows:
        with open(VARIANTS, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(variant_rows[0]))
            w.writeheader()
            w.writerows(variant_rows)
        print(f"wrote {VARIANTS}")


if __name__ == "__main__":
    main()
