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

    python bench/std_layers.py [--models digits-mem,digits-dup]
Writes bench/results/std_layers.csv.
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
from lowdim_app.diffusion.hooks import list_layers  # noqa: E402
from lowdim_app.features.calibrate_builtin import HELD_OUT, OOD_REFERENCE  # noqa: E402
from lowdim_app.methods import memorization as mz  # noqa: E402
from lowdim_app.methods.memorization_builtin import best_layer, reference_sets  # noqa: E402
from lowdim_app.metrics import auroc, tpr_at_fpr  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "std_layers.csv"


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="digits-mem,digits-dup")
    ap.add_argument("--n", type=int, default=384)
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args()
    split = load_digits_split()
    rows = []
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
        print(f"{mid}: calibration picks {chosen}", flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    with open(a.out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
