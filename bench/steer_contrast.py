"""Do memorized samples resist steering? (Zhang et al. 2025, arXiv:2512.20963, §4.2, Fig. 8)

For each built-in model with a training index (digits-dup, digits-mem) and target digits 4 and 7:
the recipe's steering vector (spatial concept-minus-all-digits, four up-block layers, t~ = 10, the
last 20 of 40 DDIM steps, ``steer --concept digit:K``), then up to ``--per-label`` memorized and
generalized samples (the first of the model's seeded samples, noise seed 0, whose nearest training
image is closer than 0.07 RMS / farther than 0.10; samples already of the target class skipped), each
steered at strengths a = 0, 0.125, ..., 1.875. Per sample: the strength where the classifier's
P(target) first exceeds 0.5 (``a_cross``; blank if never) and the largest RMS pixel change between
two neighbouring strengths (``max_step_change``, pixels in [-1, 1]).

Writes bench/results/steer_contrast.csv (one row per sample) and prints the medians and ranges per
model, target and label. ``python bench/steer_contrast.py`` (about a minute on 2 cores).
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lowdim_app.data.classifier import predict_proba  # noqa: E402
from lowdim_app.data.digits import load_digits_split  # noqa: E402
from lowdim_app.data.neighbours import COPY_THRESHOLD, NOVEL_THRESHOLD  # noqa: E402
from lowdim_app.diffusion.registry import load_model  # noqa: E402
from lowdim_app.features.steer import FEATURE, SteerSettings  # noqa: E402
from lowdim_app.metrics import nearest  # noqa: E402
from lowdim_app.methods import steering as st  # noqa: E402

STRENGTHS = [i / 8 for i in range(16)]   # 0 .. 1.875 (at most 16 per call)
OUT = REPO / "bench" / "results" / "steer_contrast.csv"


def sources(model, target: int, per_label: int, n: int = 256, steps: int = 40):
    train = load_digits_split().train_images[np.asarray(model.card["train_index"], dtype=int)]
    noise = model.randn(n, 0)
    found = {"memorized": [], "generalized": []}
    for lo in range(0, n, 32):
        samples = model.decode(model.ddim_sample(noise[lo:lo + 32], model.num_train_timesteps - 1, steps)).cpu()
        d = nearest(samples, train).nearest.numpy()
        pred = predict_proba(samples).argmax(1)
        for j in range(len(samples)):
            label = "memorized" if d[j] < COPY_THRESHOLD else "generalized" if d[j] > NOVEL_THRESHOLD else None
            if label and pred[j] != target and len(found[label]) < per_label:
                found[label].append((lo + j, noise[lo + j:lo + j + 1]))
        if all(len(v) >= per_label for v in found.values()):
            break
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="digits-dup,digits-mem")
    ap.add_argument("--targets", default="4,7")
    ap.add_argument("--per-label", type=int, default=10)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    rows = []
    for model_id in args.models.split(","):
        model = load_model(model_id, "cpu")
        for target in (int(t) for t in args.targets.split(",")):
            res = FEATURE.run(SteerSettings(model=model_id, concept=f"digit:{target}", source="seed:0",
                                            strengths=(0.0,)), model=model)
            sv, layers = res.vector, res.layers
            for label, items in sources(model, target, args.per_label).items():
                for index, noise in items:
                    ims = st.steered_samples(model, noise, sv, STRENGTHS, model.num_train_timesteps - 1, 40, 20)
                    p = st.concept_strength_digits(ims, target)
                    above = np.nonzero(p > 0.5)[0]
                    step = (ims[1:] - ims[:-1]).pow(2).flatten(1).mean(1).sqrt().max().item()
                    rows.append({"model": model_id, "target": target, "label": label, "sample_index": index,
                                 "a_cross": STRENGTHS[above[0]] if len(above) else "",
                                 "max_step_change": round(step, 4), "p_at_max_a": round(float(p[-1]), 4),
                                 "layers": " ".join(layers)})
            for label in ("memorized", "generalized"):
                sel = [r for r in rows if r["model"] == model_id and r["target"] == target and r["label"] == label]
                cross = [r["a_cross"] for r in sel if r["a_cross"] != ""]
                steps_ = [r["max_step_change"] for r in sel]
                if sel:
                    print(f"{model_id} digit {target} {label}: {len(sel)} samples, crossed P=0.5 in {len(cross)}; "
                          f"a_cross median {np.median(cross) if cross else float('nan'):.3g} "
                          f"[{min(cross, default=float('nan')):.3g}, {max(cross, default=float('nan')):.3g}]; "
                          f"max one-step change median {np.median(steps_):.3f} [{min(steps_):.3f}, {max(steps_):.3f}]",
                          flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
