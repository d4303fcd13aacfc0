"""Which steering setup shows the paper's contrast? (Zhang et al. 2025, arXiv:2512.20963, §4.2, eq. 11,
Fig. 8, App. B.3-B.4: generalized samples change smoothly and monotonically with the strength a, memorized
ones are threshold-like.)

Every setup stays within eq. 11 and varies one thing against the built-in digits recipe: the vector kind
(spatial / the paper's channel mean), the layers (the recipe's four up-block layers / the paper's single
``up_blocks.1.resnets.1``), the steering window (the last 20 of 40 DDIM steps as the paper, or others), the
concept set (concept minus all digits / the concept mean alone, as eq. 11 is written), and which models give
the samples (memorized and generalized samples of ``digits-dup``; memorized samples of ``digits-mem`` against
generalized ones of ``digits-gen``, each steered with its own model's vector).

Per setup and target, each sample is first steered on a coarse log grid (0 and 2^-4 .. 2^6) to find where
P(target) reaches 0.9; the setup's range is ``a_max`` = 1.25 x the 90th percentile of that strength over its
samples, and every sample is then steered on one fine grid of 48 strengths 0 .. a_max. Measures per sample
(``steering.curve_measures``), with p(a) the classifier's P(target) and x(a) the steered image:

  * ``a_cross``: where p first crosses 0.5 (linear interpolation; blank if never);
  * ``width``: the span of a over which p goes 0.1 -> 0.9 (first crossings), and ``rel_width`` = width / a_cross;
  * ``jump_share``: the largest rise of p between neighbouring strengths over max(p) - p(0);
  * ``pixel_jump_share``: the same for the classifier-free progress curve ||x(a) - x(0)|| / ||x(a_max) - x(0)||;
  * ``monotone``: Spearman correlation of p with a.

Writes one row per sample to ``<out>_samples.csv`` and the medians per setup, model, target and label to
``<out>.csv`` (default bench/results/steer_contrast_setups). The committed results come from four runs
(a 2-core machine shared with other jobs, about 4 min per setup and target): ``--setups pair --targets 4,7``
and ``--setups channel --targets 4`` at 20 samples per label, ``--setups recipe,one-layer,window-40,
window-10,no-baseline,pair-one-layer,pair-window-40,pair-channel --targets 4 --per-label 10``.

Measured (target 4, medians memorized / generalized, jump share of P; of the pixel progress): only the pair
separates them -- recipe 0.83 / 0.16; 0.40 / 0.040, with the window on all 40 steps 0.98 / 0.24; 0.71 / 0.057,
with the single layer 0.32 / 0.18; 0.23 / 0.035. Within digits-dup no setup does (recipe 0.34 / 0.21;
0.052 / 0.044; all 40 steps makes both steeper: 0.65 / 0.38; 0.29 / 0.12). The channel vector needs a ~ 25-77
and leaves most samples short of P = 0.9 on both sources.

    python bench/steer_contrast_setups.py [--setups recipe,channel,...] [--targets 4,7] [--per-label 20]
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lowdim_app.data.classifier import predict_proba  # noqa: E402
from lowdim_app.data.digits import load_digits_split  # noqa: E402
from lowdim_app.data.neighbours import COPY_THRESHOLD, NOVEL_THRESHOLD  # noqa: E402
from lowdim_app.diffusion.registry import load_model  # noqa: E402
from lowdim_app.methods import steering as st  # noqa: E402
from lowdim_app.metrics import first_crossing  # noqa: E402

OUT = REPO / "bench" / "results" / "steer_contrast_setups"
COARSE = [0.0] + [float(2.0 ** e) for e in np.linspace(-4, 6, 15)]
FINE_N = 48
ONE_LAYER = ["up_blocks.1.resnets.1"]     # the paper's single-layer ablation (App. B.4)
DUP = {"memorized": "digits-dup", "generalized": "digits-dup"}
PAIR = {"memorized": "digits-mem", "generalized": "digits-gen"}
BASE = dict(layers=st.DIGITS_LAYERS, kind="spatial", window=20, baseline=True, models=DUP)
SETUPS = {
    "recipe": {},
    "channel": dict(kind="channel"),
    "one-layer": dict(layers=ONE_LAYER),
    "one-layer-channel": dict(layers=ONE_LAYER, kind="channel"),
    "window-40": dict(window=40),
    "window-10": dict(window=10),
    "no-baseline": dict(baseline=False),
    "pair": dict(models=PAIR),
    "pair-one-layer": dict(models=PAIR, layers=ONE_LAYER),
    "pair-channel": dict(models=PAIR, kind="channel"),
    "pair-window-40": dict(models=PAIR, window=40),
}


def sources(model, target: int, label: str, per_label: int, n: int = 1024, steps: int = 40):
    """The first ``per_label`` seeded samples (noise seed 0) of ``label`` not already of class ``target``."""
    train = load_digits_split().train_images[np.asarray(model.card["train_index"], dtype=int)]
    noise = model.randn(n, 0)
    found = []
    for lo in range(0, n, 64):
        samples = model.decode(model.ddim_sample(noise[lo:lo + 64], model.num_train_timesteps - 1, steps)).cpu()
        d = nearest(samples, train)
        pred = predict_proba(samples).argmax(1)
        ok = (d < COPY_THRESHOLD) if label == "memorized" else (d > NOVEL_THRESHOLD)
        found += [(lo + j, noise[lo + j:lo + j + 1]) for j in np.nonzero(ok & (pred != target))[0]]
        if len(found) >= per_label:
            return found[:per_label]
    return found


def nearest(samples, train):
    from lowdim_app.metrics import nearest as nn

    return nn(samples, train).nearest.numpy()


def steer(model, noise, sv, strengths, window: int) -> torch.Tensor:
    return torch.cat([st.steered_samples(model, noise, sv, strengths[i:i + 16], model.num_train_timesteps - 1, 40,
                                         window) for i in range(0, len(strengths), 16)])


def vector(model, target: int, cfg: dict):
    concept, base = st.digit_concept(target, 100)
    return st.steering_vector(model, concept, list(cfg["layers"]), 10, cfg["kind"],
                              baseline=base if cfg["baseline"] else None)


def median(rows, key):
    v = [r[key] for r in rows if r[key] is not None]
    return round(float(np.median(v)), 4) if v else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setups", default=",".join(SETUPS))
    ap.add_argument("--targets", default="4,7")
    ap.add_argument("--per-label", type=int, default=20)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    models, found = {}, {}
    rows, summary = [], []
    for name in args.setups.split(","):
        cfg = {**BASE, **SETUPS[name]}
        for target in (int(t) for t in args.targets.split(",")):
            t0 = time.time()
            per = {}
            for label, model_id in cfg["models"].items():
                model = models.setdefault(model_id, load_model(model_id, "cpu"))
                key = (model_id, target, label)
                if key not in found:
                    found[key] = sources(model, target, label, args.per_label)
                sv = vector(model, target, cfg)
                coarse = [steer(model, noise, sv, COARSE, cfg["window"]) for _, noise in found[key]]
                per[label] = (model, sv, coarse)
            a90 = [first_crossing(np.array(COARSE), st.concept_strength_digits(c, target), 0.9)
                   for _, _, cs in per.values() for c in cs]
            reached = [v for v in a90 if v is not None]
            a_max = float(1.25 * np.quantile(reached, 0.9)) if reached else COARSE[-1]
            a = np.linspace(0.0, a_max, FINE_N)
            for label, (model, sv, _) in per.items():
                sel = []
                for index, noise in found[(model.model_id, target, label)]:
                    ims = steer(model, noise, sv, a.tolist(), cfg["window"])
                    p = st.concept_strength_digits(ims, target)
                    sel.append({"setup": name, "model": model.model_id, "target": target, "label": label,
                                "sample_index": index, "a_max": round(a_max, 4), **st.curve_measures(a, p, ims),
                                "p0": round(float(p[0]), 4), "p_max_a": round(float(p[-1]), 4)})
                rows += sel
                summary.append({"setup": name, "model": model.model_id, "target": target, "label": label,
                                "n": len(sel), "a_max": round(a_max, 4),
                                "reached_0.9": sum(r["p_max_a"] >= 0.9 for r in sel),
                                **{f"{k}_median": median(sel, k) for k in
                                   ("jump_share", "width", "rel_width", "pixel_jump_share", "a_cross", "monotone")}})
                print(summary[-1], flush=True)
            print(f"{name} target {target}: {time.time() - t0:.0f} s", flush=True)
            for path, data in ((out.parent / (out.name + "_samples.csv"), rows), (out.with_suffix(".csv"), summary)):
                with open(path, "w", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=list(data[0]))
                    w.writeheader()
                    w.writerows(data)
    print(f"wrote {out}.csv and {out}_samples.csv")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    torch.set_num_threads(1)
    main()
