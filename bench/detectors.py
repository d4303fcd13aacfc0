"""Benchmark: memorization detectors and the verdicts of ``score`` on held-out sets, per built-in model.

Labelling rule (the same sets for every detector): fresh DDIM samples of the model (``--seed``,
50 steps; not the calibration samples, which use seed 7) are *memorized* when their nearest
training image is at RMS < 0.07 (pixels in [-1, 1]) and *generalized* when it is > 0.10
(ambiguous ones are left out). ``digits-mem`` makes almost no novel samples, so its generalized
set is the second half of the held-out real test digits (the first half calibrates).

Detectors, each the mean over ``--draws`` noise draws (seed 0) at t = 50 unless named otherwise:
  * std / l4_l2 / entropy / max_min of the global-max-pooled representation at the calibrated layer
    (Zhang et al. 2025, arXiv:2512.20963, Alg. 1 and App. B.2);
  * std averaged over t = 50, 100, 200 (a multi-timestep variant);
  * denoising error ||eps_hat - eps||^2 / n (Carlini et al. 2023, arXiv:2301.13188).
For each: AUROC, TPR at 1% FPR, and the FPR / TPR at the threshold fitted by ``calibrate-builtin``
on the calibration sets (shipped JSON), and seconds per image (1 draw) at batch 1 and batch 64.

Also: out-of-domain rates (denoising error above the shipped out-of-domain threshold) on held-out
real digits, on the held-out samples, on inverted held-out digits and on scikit-learn's two sample
photos (grayscale); and the verdict flip rate (memorized vs not) of the default detector between
noise seeds 0 and 1 against the number of draws (1, 2, 4, 8), the share of images either seed calls
``uncertain``, and the flip rate among the images neither seed calls uncertain.

Usage: python bench/detectors.py [--n 384] [--seed 8] [--draws 4]
Writes bench/results/detectors.csv and bench/results/detectors.png (ROC curves).
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lowdim_app.config import Runtime  # noqa: E402
from lowdim_app.data.digits import load_digits_split  # noqa: E402
from lowdim_app.diffusion import load_model  # noqa: E402
from lowdim_app.methods import memorization as mz  # noqa: E402
from lowdim_app.methods.memorization_builtin import BUILTIN_MODELS, reference_sets  # noqa: E402
from lowdim_app.metrics import auroc, roc, tpr_at_fpr  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
HELD_OUT = slice(180, None)
FIELDS = ["part", "model", "detector", "default", "n_memorized", "n_generalized", "auroc", "tpr_at_1pct_fpr",
          "fpr_at_threshold", "tpr_at_threshold", "draws", "rate", "s_per_image_batch1", "s_per_image_batch64", "note"]


def detectors(cal, draws: int) -> dict:
    layer = next(d["layer"] for d in cal.detectors if d["metric"] == "std")
    out = {}
    for metric in ("std", "l4_l2", "entropy", "max_min"):
        out[f"{metric} @ {layer}"] = (metric, layer, lambda m, x, k=draws, s=0, metric=metric:
                                      mz.score_draws(m, x, layer, 50, metric, k, s))
    out[f"std @ {layer}, t = 50/100/200"] = (None, layer, lambda m, x, k=draws, s=0: np.mean(
        [mz.score_draws(m, x, layer, t, "std", k, s) for t in (50, 100, 200)], axis=0))
    out["denoising error, t = 50"] = ("denoising_error", "", lambda m, x, k=draws, s=0:
                                      mz.denoising_error_draws(m, x, 50, k, s))
    return out


def seconds_per_image(fn, model, x) -> tuple[float, float]:
    t0 = time.perf_counter()
    for i in range(16):
        fn(model, x[i:i + 1], 1)
    b1 = (time.perf_counter() - t0) / 16
    t0 = time.perf_counter()
    fn(model, x[:64], 1)
    return b1, (time.perf_counter() - t0) / 64


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=384)
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--draws", type=int, default=mz.DEFAULT_NOISE_DRAWS)
    args = ap.parse_args()
    torch.manual_seed(0)
    split = load_digits_split()
    real = split.test_images[HELD_OUT]
    from sklearn.datasets import load_sample_image

    from lowdim_app.data.images import load_image
    photos = torch.cat([load_image(load_sample_image(n), 16, channels=1) for n in ("china.jpg", "flower.jpg")])
    rows, curves = [], {}
    for mid in BUILTIN_MODELS:
        model = load_model(mid)
        cal = mz.default_calibration(mid, Runtime().assets)
        mem, gen, _ = reference_sets(model, args.n, args.seed, 50, progress=False)
        if mid == "digits-mem":
            gen = real
        print(f"{mid}: {len(mem)} memorized / {len(gen)} generalized held-out images; default: {cal.detector_name()}")
        fitted = {(d["metric"], d["layer"]): d for d in cal.detectors}
        x_time = torch.cat([gen, mem])[:64]
        for name, (metric, layer, fn) in detectors(cal, args.draws).items():
            sm = fn(model, mem).mean(1) if len(mem) else np.array([])
            sg = fn(model, gen).mean(1)
            is_default = (metric, layer) == (cal.metric, cal.layer)
            d = fitted.get((metric, layer))
            row = {"part": "quality", "model": mid, "detector": name, "default": int(is_default),
                   "n_memorized": len(mem), "n_generalized": len(gen), "draws": args.draws}
            if d is not None:
                thr, sign_d = d["threshold"], d["direction"]
                flag = lambda s, thr=thr, sign_d=sign_d: sign_d * (s - thr) > 0  # noqa: E731
                row["fpr_at_threshold"] = round(float(flag(sg).mean()), 4)
                if len(mem):
                    row["tpr_at_threshold"] = round(float(flag(sm).mean()), 4)
            if len(mem):
                a = auroc(sm, sg)
                sign = 1 if a >= 0.5 else -1
                row["auroc"] = round(max(a, 1 - a), 4)
                row["tpr_at_1pct_fpr"] = round(float(tpr_at_fpr(sign * sm, sign * sg, 0.01)), 4)
                curves.setdefault(mid, {})[name] = roc(sign * sm, sign * sg)
                row["note"] = "higher = memorized" if sign > 0 else "lower = memorized"
            row["s_per_image_batch1"], row["s_per_image_batch64"] = (round(v, 5) for v in
                                                                     seconds_per_image(fn, model, x_time))
            rows.append(row)
            print(f"  {name:40s} AUROC {row.get('auroc', 'n/a')}  TPR@1%FPR {row.get('tpr_at_1pct_fpr', 'n/a')}  "
                  f"FPR@thr {row.get('fpr_at_threshold', 'n/a')}  TPR@thr {row.get('tpr_at_threshold', 'n/a')}  "
                  f"s/img b1 {row['s_per_image_batch1']} b64 {row['s_per_image_batch64']}")
        # out-of-domain rates
        def err(x, model=model, cal=cal):
            return mz.denoising_error_draws(model, x, cal.ood_t, args.draws, 0).mean(1)

        samples = torch.cat([mem, gen]) if mid != "digits-mem" else mem
        for label, x, kind in (("held-out real digits", real, "FPR"), ("held-out samples", samples, "FPR"),
                               ("inverted held-out digits", -real, "TPR"), ("sample photos (gray)", photos, "TPR")):
            rate = float((err(x) > cal.ood_threshold).mean())
            rows.append({"part": "out-of-domain", "model": mid, "detector": f"denoising error, t = {cal.ood_t}",
                         "rate": round(rate, 4), "note": f"{kind} on {len(x)} {label}"})
            print(f"  out-of-domain {kind} on {label}: {rate:.4f}")
        # verdict stability against the number of draws (default detector, shipped threshold)
        x_all = torch.cat([mem, gen])
        for k in (1, 2, 4, 8):
            v = []
            for seed in (0, 1):
                mean, spread = mz.mean_and_spread(mz.score_draws(model, x_all, cal.layer, cal.t, cal.metric, k, seed))
                v.append((cal.is_memorized(mean), np.abs(mean - cal.threshold) <= spread))
            flip = float((v[0][0] != v[1][0]).mean())
            unc = v[0][1] | v[1][1]
            flip_sure = float((v[0][0] != v[1][0])[~unc].mean()) if (~unc).any() else 0.0
            rows.append({"part": "flip", "model": mid, "detector": cal.detector_name(), "default": 1, "draws": k,
                         "rate": round(flip, 4),
                         "note": f"uncertain (either seed): {unc.mean():.4f}; flip rate among the rest: {flip_sure:.4f}; "
                                 f"{len(x_all)} images"})
            print(f"  draws {k}: verdict flip rate between seeds {flip:.4f}, uncertain {unc.mean():.4f}, "
                  f"flip rate among memorized/generalized verdicts {flip_sure:.4f}")
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / "detectors.csv", "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        w.writerows(rows)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4.5), squeeze=False)
    for ax, (mid, cs) in zip(axes[0], curves.items()):
        for name, (fpr, tpr) in cs.items():
            ax.plot(np.maximum(fpr, 1e-3), tpr, label=name)
        ax.axvline(0.01, color="k", ls="--", lw=1)
        ax.set_xscale("log")
        ax.set_xlim(1e-3, 1)
        ax.set_title(f"{mid} (held-out sets)")
        ax.set_xlabel("false-positive rate (log; 0 drawn at 0.001)")
        ax.set_ylabel("true-positive rate")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(RESULTS / "detectors.png", dpi=110)
    print(f"wrote {RESULTS / 'detectors.csv'} and {RESULTS / 'detectors.png'}")


if __name__ == "__main__":
    main()
