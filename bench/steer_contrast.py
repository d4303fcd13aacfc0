"""Do memorized samples resist steering? (Zhang et al. 2025, arXiv:2512.20963, §4.2, Fig. 8: generalized
samples change smoothly and monotonically with the steering strength, memorized ones are threshold-like.)

For each built-in model with a training index and target digits 4 and 7: the recipe's steering vector
(spatial concept-minus-all-digits, four up-block layers, t~ = 10, the last 20 of 40 DDIM steps,
``steer --concept digit:K``), then ``--per-label`` memorized and generalized samples (the first of the
model's seeded samples, noise seed 0, whose nearest training image is closer than 0.07 RMS / farther than
0.10; samples already of the target class skipped), each steered at strengths a = 0, 0.125, ..., 1.875.

Per sample, with p(a) the classifier's P(target):
  * ``a_cross``: the strength where p first exceeds 0.5 (blank if never);
  * ``jump_share``: the largest rise of p between neighbouring strengths over the whole rise
    max(p) - p(0) (1: all of the change in one step, threshold-like; 1/15: evenly spread);
  * ``monotone``: Spearman correlation of p with a;
  * ``max_step_change``: the largest RMS pixel change between neighbouring strengths (pixels in [-1, 1]).

Writes bench/results/steer_contrast.csv (one row per sample), .json (per model, target and label: medians
and the median / quartile curves of p(a)), .png, and with ``--reference`` the curves the Steer tab draws
behind its contrast plot (assets/calibrations/steer_contrast.json).

    python bench/steer_contrast.py [--models digits-dup,digits-mem,digits-gen] [--per-label 20]
"""
from __future__ import annotations

import argparse
import csv
import json
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
from lowdim_app.methods import steering as st  # noqa: E402
from lowdim_app.metrics import nearest  # noqa: E402
from lowdim_app.plots.common import save_figure  # noqa: E402

STRENGTHS = [i / 8 for i in range(16)]   # 0 .. 1.875 (at most 16 per call)
OUT = REPO / "bench" / "results" / "steer_contrast"
REFERENCE = REPO / "assets" / "calibrations" / "steer_contrast.json"


def sources(model, target: int, per_label: int, n: int = 512, steps: int = 40):
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


def curve_measures(p: np.ndarray, ims: torch.Tensor) -> dict:
    from scipy.stats import spearmanr

    above = np.nonzero(p > 0.5)[0]
    rise = float(p.max() - p[0])
    jumps = np.diff(p)
    rho = spearmanr(STRENGTHS, p).statistic if np.ptp(p) > 0 else 0.0
    return {"a_cross": STRENGTHS[above[0]] if len(above) else "",
            "jump_share": round(float(jumps.max()) / rise, 4) if rise > 0.05 else "",
            "monotone": round(float(rho), 4),
            "max_step_change": round((ims[1:] - ims[:-1]).pow(2).flatten(1).mean(1).sqrt().max().item(), 4),
            "p_at_0": round(float(p[0]), 4), "p_at_max_a": round(float(p[-1]), 4)}


def summarize(rows, curves) -> dict:
    out = {}
    for (model_id, target, label), ps in curves.items():
        sel = [r for r in rows if (r["model"], r["target"], r["label"]) == (model_id, target, label)]
        num = lambda k: [r[k] for r in sel if r[k] != ""]  # noqa: E731
        P = np.array(ps)
        out.setdefault(model_id, {}).setdefault(str(target), {})[label] = {
            "n": len(sel), "crossed": len(num("a_cross")),
            "a_cross_median": float(np.median(num("a_cross"))) if num("a_cross") else None,
            "jump_share_median": float(np.median(num("jump_share"))) if num("jump_share") else None,
            "threshold_like_share": (round(float(np.mean(np.array(num("jump_share")) > 0.5)), 3)
                                     if num("jump_share") else None),
            "monotone_median": float(np.median(num("monotone"))),
            "max_step_change_median": float(np.median(num("max_step_change"))),
            "strengths": STRENGTHS, "p_median": np.round(np.median(P, 0), 4).tolist(),
            "p_q25": np.round(np.quantile(P, 0.25, 0), 4).tolist(),
            "p_q75": np.round(np.quantile(P, 0.75, 0), 4).tolist()}
    return out


def figure(curves, summary):
    from matplotlib.figure import Figure

    targets = sorted({t for (_, t, _) in curves})
    fig = Figure(figsize=(4.2 * len(targets), 3.4), dpi=110)
    axes = fig.subplots(1, len(targets), squeeze=False)[0]
    colors = {"memorized": "C3", "generalized": "C0"}
    for ax, target in zip(axes, targets):
        for (model_id, t, label), ps in curves.items():
            if t != target:
                continue
            for p in ps:
                ax.plot(STRENGTHS, p, color=colors[label], lw=0.4, alpha=0.35,
                        ls="-" if model_id == "digits-dup" else ":")
            s = summary[model_id][str(target)][label]
            ax.plot(STRENGTHS, s["p_median"], color=colors[label], lw=2, ls="-" if model_id == "digits-dup" else ":",
                    label=f"{model_id} {label} (median of {s['n']})")
        ax.set_xlabel("steering strength a")
        ax.set_ylabel(f"P(digit {target})")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="digits-dup,digits-mem,digits-gen")
    ap.add_argument("--targets", default="4,7")
    ap.add_argument("--per-label", type=int, default=20)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--reference", action="store_true", help=f"also write {REFERENCE.relative_to(REPO)}")
    args = ap.parse_args()
    rows, curves = [], {}
    for model_id in args.models.split(","):
        model = load_model(model_id, "cpu")
        for target in (int(t) for t in args.targets.split(",")):
            res = FEATURE.run(SteerSettings(model=model_id, concept=(f"digit:{target}",), source="seed:0",
                                            strengths=(0.0,)), model=model)
            sv, layers = res.vector, res.layers
            for label, items in sources(model, target, args.per_label).items():
                for index, noise in items:
                    ims = st.steered_samples(model, noise, sv, STRENGTHS, model.num_train_timesteps - 1, 40, 20)
                    p = st.concept_strength_digits(ims, target)
                    curves.setdefault((model_id, target, label), []).append(p)
                    rows.append({"model": model_id, "target": target, "label": label, "sample_index": index,
                                 **curve_measures(p, ims), "layers": " ".join(layers)})
            for label in ("memorized", "generalized"):
                sel = [r for r in rows if (r["model"], r["target"], r["label"]) == (model_id, target, label)]
                if sel:
                    js = [r["jump_share"] for r in sel if r["jump_share"] != ""]
                    print(f"{model_id} digit {target} {label}: {len(sel)} samples; crossed P=0.5 in "
                          f"{sum(r['a_cross'] != '' for r in sel)}; jump share median "
                          f"{np.median(js) if js else float('nan'):.3f}, > 0.5 in {np.mean(np.array(js) > 0.5) if js else float('nan'):.2f}; "
                          f"monotone median {np.median([r['monotone'] for r in sel]):.3f}; max one-step change "
                          f"median {np.median([r['max_step_change'] for r in sel]):.3f}", flush=True)
    summary = summarize(rows, curves)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    save_figure(figure(curves, summary), out.with_suffix(".png"))
    if args.reference:
        ref = {"source": "bench/steer_contrast.py", "strengths": STRENGTHS,
               "curves": {m: {t: {lab: {k: v[k] for k in ("n", "p_median", "p_q25", "p_q75", "jump_share_median",
                                                            "monotone_median")}
                                  for lab, v in labs.items()} for t, labs in ts.items()} for m, ts in summary.items()}}
        REFERENCE.write_text(json.dumps(ref, indent=1))
    print(f"wrote {out}.csv/.json/.png" + (f" and {REFERENCE}" if args.reference else ""))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
