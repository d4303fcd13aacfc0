"""Benchmark: one-class calibration on the built-in models -- does the threshold fitted from held-out real
digits alone keep its false-positive-rate promise on *other* held-out digits, and does it catch the
memorized samples?

Per built-in model, with the detector of its shipped calibration (metric, layer, t; ``--draws`` noise
draws, seed 0):

* references: the first 180 held-out real test digits (images the model never saw), no memorized set;
* hidden negatives: the other 179 held-out test digits -> measured FPR, next to the promise (mean and
  95 % interval of ``Beta(n + 1 - k, k)``, :mod:`lowdim_app.methods.one_class`);
* hidden positives: the model's own near-copy samples (fresh DDIM samples, ``--seed``, nearest training
  image at RMS < 0.07) -> TPR; its novel samples (RMS > 0.10) -> the flag rate on generated non-copies
  (not covered by the promise: they are not exchangeable with real digits; reported as measured);
* resplits: the 359 held-out digits split at random ``--resplits`` times into 180 references / 179
  hidden -> the mean hidden FPR (against the promised mean) and the share of splits whose hidden FPR
  falls inside the 95 % range the promise predicts for a *measured* rate on 179 images: the number of
  hidden false positives is ``BetaBinomial(179, n + 1 - k, k)`` (the Beta-distributed rate plus the
  binomial noise of a finite hidden set), a range that holds 95 % or more (discrete counts).

Usage: python bench/one_class.py [--targets 0.01 0.05 0.1] [--draws 4] [--seed 8] [--resplits 500]
Writes bench/results/one_class.csv.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import betabinom

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lowdim_app.config import Runtime  # noqa: E402
from lowdim_app.data.digits import load_digits_split  # noqa: E402
from lowdim_app.diffusion import load_model  # noqa: E402
from lowdim_app.methods import memorization as mz  # noqa: E402
from lowdim_app.methods.memorization_builtin import BUILTIN_MODELS, copy_labels, nearest_training  # noqa: E402
from lowdim_app.methods.one_class import fit_one_class  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "one_class.csv"
N_REF = 180


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=float, nargs="+", default=[0.01, 0.05, 0.1])
    ap.add_argument("--draws", type=int, default=mz.DEFAULT_NOISE_DRAWS)
    ap.add_argument("--seed", type=int, default=8, help="seed of the fresh samples (the calibrations used 7)")
    ap.add_argument("--samples", type=int, default=384)
    ap.add_argument("--resplits", type=int, default=500)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    torch.set_num_threads(2)
    test = load_digits_split().test_images
    rows = []
    for mid in BUILTIN_MODELS:
        model = load_model(mid)
        cal = mz.default_calibration(mid, Runtime().assets)
        def score(x, cal=cal, model=model):
            return mz.scores(model, x, cal.layer, cal.t, cal.metric, args.draws, 0) if len(x) else np.array([])

        s_test = score(test)
        samples = model.generate(args.samples, seed=args.seed, steps=50)
        lab = copy_labels(nearest_training(model, samples)[0].nearest)
        s_mem, s_nov = score(samples[lab == "memorized"]), score(samples[lab == "generalized"])
        direction = cal.direction           # the shipped calibration's sign for this detector
        print(f"{mid}: {cal.detector_name()}, direction {direction:+d}; {len(s_mem)} memorized / {len(s_nov)} novel "
              f"samples of {args.samples}")
        rng = np.random.default_rng(0)
        for alpha in args.targets:
            thr, p = fit_one_class(s_test[:N_REF], direction, alpha)
            flag = lambda s, thr=thr: direction * (np.asarray(s) - thr) > 0  # noqa: E731
            hidden = s_test[N_REF:]
            m = len(s_test) - N_REF
            a, b = p.n_reference + 1 - p.rank, p.rank
            lo_count, hi_count = betabinom.ppf(0.025, m, a, b), betabinom.ppf(0.975, m, a, b)
            inside, fprs = 0, []
            for _ in range(args.resplits):
                perm = rng.permutation(len(s_test))
                t2, _ = fit_one_class(s_test[perm[:N_REF]], direction, alpha)
                count = int((direction * (s_test[perm[N_REF:]] - t2) > 0).sum())
                fprs.append(count / m)
                inside += lo_count <= count <= hi_count
            row = {"model": mid, "detector": cal.detector_name(), "direction": direction, "target_fpr": alpha,
                   "n_reference": p.n_reference, "promised_fpr": round(p.expected_fpr, 4),
                   "promised_low_95": round(p.fpr_low, 4), "promised_high_95": round(p.fpr_high, 4),
                   "hidden_digits": len(hidden), "measured_fpr_hidden_digits": round(float(flag(hidden).mean()), 4),
                   "predicted_measured_low_95": round(lo_count / m, 4), "predicted_measured_high_95": round(hi_count / m, 4),
                   "memorized_samples": len(s_mem),
                   "tpr_memorized_samples": round(float(flag(s_mem).mean()), 4) if len(s_mem) else None,
                   "novel_samples": len(s_nov),
                   "flag_rate_novel_samples": round(float(flag(s_nov).mean()), 4) if len(s_nov) else None,
                   "resplits": args.resplits, "resplit_mean_fpr": round(float(np.mean(fprs)), 4),
                   "resplit_share_inside_95": round(inside / args.resplits, 4), "draws": args.draws,
                   "threshold": thr}
            rows.append(row)
            print(f"  target {alpha:.2f}: promised {p.expected_fpr:.4f} [{p.fpr_low:.4f}, {p.fpr_high:.4f}]; hidden "
                  f"digits FPR {row['measured_fpr_hidden_digits']:.4f}; TPR memorized {row['tpr_memorized_samples']}; "
                  f"novel samples flagged {row['flag_rate_novel_samples']}; resplits: mean FPR "
                  f"{row['resplit_mean_fpr']:.4f}, inside the predicted 95% range [{lo_count / m:.4f}, {hi_count / m:.4f}] "
                  f"{row['resplit_share_inside_95']:.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
