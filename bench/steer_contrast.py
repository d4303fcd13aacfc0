"""Do memorized samples resist steering? (Zhang et al. 2025, arXiv:2512.20963, §4.2, Fig. 8: generalized
samples change smoothly and monotonically with the steering strength, memorized ones are threshold-like.)

Two sources of samples, each steered with the app's recipe (``steer --concept digit:K``: spatial
concept-minus-all-digits vector computed on the model that samples, four up-block layers, t~ = 10, the
last 20 of 40 DDIM steps):

  * the contrast pair (``steering.CONTRAST_MODELS``, what the Steer tab's contrast rows show): memorized samples
    of ``digits-mem`` (16 training digits) and generalized samples of ``digits-gen`` (all 1438);
  * ``digits-dup``: its memorized samples (near-copies of its 8 duplicated digits) and its generalized ones.

Per model, target digit (4, 7) and label, the first ``--per-label`` of the model's seeded samples (noise
seed 0) whose nearest training image is closer than 0.07 RMS (memorized) / farther than 0.10 (generalized),
skipping samples already of the target class, each steered at the 61 strengths a = 0, 1/24, ..., 2.5.
Per sample (``steering.curve_measures``), with p(a) the classifier's P(target) and x(a) the steered image:

  * ``a_cross``: where p first crosses 0.5 (linear interpolation; blank if never);
  * ``width``: the span of a over which p goes 0.1 -> 0.9 (blank if it never reaches 0.9);
  * ``jump_share``: the largest rise of p between neighbouring strengths over max(p) - p(0) (1: one step);
  * ``pixel_jump_share``: the same for ||x(a) - x(0)|| / ||x(2.5) - x(0)||, free of the classifier's
    sharpness (a logistic regression on pixels: any class change is steep in p);
  * ``monotone``: Spearman correlation of p with a; ``p_at_max_a``: p at a = 2.5.

Writes bench/results/steer_contrast.csv (one row per sample), .json (per model, target and label: the
medians, and the median / quartile curves of p(a) and of the pixel progress), .png, and with ``--reference``
the curves the Steer tab draws behind its contrast plot (assets/calibrations/steer_contrast.json).
bench/steer_contrast_setups.py compares this setup with the others tried (vector kind, layers, window,
concept set).

    python bench/steer_contrast.py [--models digits-mem,digits-gen,digits-dup] [--per-label 20] [--reference]
"""
from __future__ import annotations

import argparse
import csv
import json
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
from lowdim_app.features.steer import FEATURE, SteerSettings  # noqa: E402
from lowdim_app.methods import steering as st  # noqa: E402
from lowdim_app.metrics import nearest  # noqa: E402
from lowdim_app.plots.common import save_figure  # noqa: E402

STRENGTHS = [round(i / 24, 6) for i in range(61)]   # 0 .. 2.5
LABELS = {m: [lab for lab, mid in st.CONTRAST_MODELS.items() if mid == m] or ["memorized", "generalized"]
          for m in ("digits-mem", "digits-gen", "digits-dup")}
MEASURES = ("jump_share", "width", "pixel_jump_share", "a_cross", "monotone", "p_at_max_a")
OUT = REPO / "bench" / "results" / "steer_contrast"
REFERENCE = REPO / "assets" / "calibrations" / "steer_contrast.json"


def sources(model, target: int, labels, per_label: int, n: int = 1024, steps: int = 40, chunk: int = 64):
    """label -> the first ``per_label`` (index, noise) of the model's seeded samples with that label."""
    train = load_digits_split().train_images[np.asarray(model.card["train_index"], dtype=int)]
    noise = model.randn(n, 0)
    found = {label: [] for label in labels}
    for lo in range(0, n, chunk):
        samples = model.decode(model.ddim_sample(noise[lo:lo + chunk], model.num_train_timesteps - 1, steps)).cpu()
        d = nearest(samples, train).nearest.numpy()
        pred = predict_proba(samples).argmax(1)
        for j in range(len(samples)):
            label = "memorized" if d[j] < COPY_THRESHOLD else "generalized" if d[j] > NOVEL_THRESHOLD else None
            if label in found and pred[j] != target and len(found[label]) < per_label:
                found[label].append((lo + j, noise[lo + j:lo + j + 1]))
        if all(len(v) >= per_label for v in found.values()):
            break
    return found


def steer_all(model, noise, sv) -> torch.Tensor:
    return torch.cat([st.steered_samples(model, noise, sv, STRENGTHS[i:i + 16], model.num_train_timesteps - 1, 40, 20)
                      for i in range(0, len(STRENGTHS), 16)])


def median(values):
    v = [x for x in values if x is not None]
    return round(float(np.median(v)), 4) if v else None


def summarize(rows, curves) -> dict:
    out = {}
    for (model_id, target, label), (ps, progress) in curves.items():
        sel = [r for r in rows if (r["model"], r["target"], r["label"]) == (model_id, target, label)]
        P, G = np.array(ps), np.array(progress)
        out.setdefault(model_id, {}).setdefault(str(target), {})[label] = {
            "n": len(sel), "crossed": sum(r["a_cross"] is not None for r in sel),
            "reached_0.9": sum(r["width"] is not None for r in sel),
            **{f"{k}_median": median([r[k] for r in sel]) for k in MEASURES},
            "strengths": STRENGTHS, "p_median": np.round(np.median(P, 0), 4).tolist(),
            "p_q25": np.round(np.quantile(P, 0.25, 0), 4).tolist(),
            "p_q75": np.round(np.quantile(P, 0.75, 0), 4).tolist(),
            "progress_median": np.round(np.median(G, 0), 4).tolist()}
    return out


def figure(curves, summary):
    from matplotlib.figure import Figure

    targets = sorted({t for (_, t, _) in curves})
    fig = Figure(figsize=(4.4 * len(targets), 6.4), dpi=110)
    axes = fig.subplots(2, len(targets), squeeze=False)
    colors = {"memorized": "C3", "generalized": "C0"}
    for col, target in enumerate(targets):
        top, bottom = axes[0, col], axes[1, col]
        for (model_id, t, label), (ps, progress) in curves.items():
            if t != target:
                continue
            pair = st.CONTRAST_MODELS.get(label) == model_id
            ls, lw = ("-", 2.0) if pair else (":", 1.4)
            if pair:
                for p in ps:
                    top.plot(STRENGTHS, p, color=colors[label], lw=0.4, alpha=0.3)
            s = summary[model_id][str(target)][label]
            name = f"{model_id} {label} (median of {s['n']})"
            top.plot(STRENGTHS, s["p_median"], color=colors[label], lw=lw, ls=ls, label=name)
            bottom.plot(STRENGTHS, s["progress_median"], color=colors[label], lw=lw, ls=ls, label=name)
        top.set_ylabel(f"P(digit {target})")
        top.set_ylim(-0.02, 1.02)
        bottom.set_ylabel("pixel progress ||x(a)-x(0)|| / ||x(2.5)-x(0)||", fontsize=7)
        bottom.set_xlabel("steering strength a")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
        top.legend(fontsize=6)
    fig.tight_layout()
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="digits-mem,digits-gen,digits-dup")
    ap.add_argument("--targets", default="4,7")
    ap.add_argument("--per-label", type=int, default=20)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--reference", action="store_true", help=f"also write {REFERENCE.relative_to(REPO)}")
    args = ap.parse_args()
    rows, curves = [], {}
    t0 = time.time()
    for model_id in args.models.split(","):
        model = load_model(model_id, "cpu")
        for target in (int(t) for t in args.targets.split(",")):
            res = FEATURE.run(SteerSettings(model=model_id, concept=(f"digit:{target}",), source="seed:0",
                                            strengths=(0.0,)), model=model)
            sv = res.vector
            for label, items in sources(model, target, LABELS[model_id], args.per_label).items():
                for index, noise in items:
                    ims = steer_all(model, noise, sv)
                    p = st.concept_strength_digits(ims, target)
                    c = curves.setdefault((model_id, target, label), ([], []))
                    c[0].append(p)
                    c[1].append(st.pixel_progress(ims))
                    rows.append({"model": model_id, "target": target, "label": label, "sample_index": index,
                                 **st.curve_measures(STRENGTHS, p, ims), "p_at_0": round(float(p[0]), 4),
                                 "p_at_max_a": round(float(p[-1]), 4), "layers": " ".join(res.layers)})
                sel = [r for r in rows if (r["model"], r["target"], r["label"]) == (model_id, target, label)]
                print(f"{model_id} digit {target} {label}: n {len(sel)}; "
                      + "; ".join(f"{k} median {median([r[k] for r in sel])}" for k in MEASURES)
                      + f"; crossed 0.5 in {sum(r['a_cross'] is not None for r in sel)} ({time.time() - t0:.0f} s)",
                      flush=True)
    summary = summarize(rows, curves)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows([{k: "" if v is None else v for k, v in r.items()} for r in rows])
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    save_figure(figure(curves, summary), out.with_suffix(".png"))
    if args.reference:
        keep = ("n", "p_median", "p_q25", "p_q75", "progress_median", *(f"{k}_median" for k in MEASURES))
        ref = {"source": "bench/steer_contrast.py", "strengths": STRENGTHS, "contrast_models": st.CONTRAST_MODELS,
               "curves": {m: {t: {lab: {k: v[k] for k in keep} for lab, v in labs.items()} for t, labs in ts.items()}
                          for m, ts in summary.items()}}
        REFERENCE.write_text(json.dumps(ref, indent=1))
    print(f"wrote {out}.csv/.json/.png" + (f" and {REFERENCE}" if args.reference else "")
          + f" in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    torch.set_num_threads(1)
    main()
