"""Is an edit along v1 semantic and continuous? The digit classifier along the Edit tab's path (Wang et al.
2024, arXiv:2409.02426, §4.2 and Fig. 6: DDIM inversion to t, ``x_t + alpha v1``, DDIM back).

Per held-out digit (the seeded choice of ``bench/builtin_structure.py --digits 20``) and per shipped example
image (``assets/examples/digit_*.png``), at t in {0.5, 0.7}T: the project's edit (``find_directions`` +
``edit``: 50-step DDIM grid, exact Jacobian, v1, and a random unit direction seeded per digit) on a fine alpha
grid (``--count`` values in [-A, A]), classified with the digit classifier (``lowdim_app.data.classifier``):

* ``changed``: the argmax class leaves the class at alpha = 0 somewhere on the path;
* ``max_step``: the largest total-variation distance between the probability vectors at neighbouring alphas;
* ``width``: the alpha span over which the probability of the alpha = 0 class falls from 0.9 to 0.1 (the
  narrowest side, crossings interpolated; ``methods.structure.transition_width``);
* ``continuity``: the largest RMS pixel step between neighbouring images over the path's length (``1/(n-1)``
  for an evenly moving path; ``methods.structure.path_continuity``);
* the classifier's own sharpness, as references on straight pixel-space lines: ``ends_max_step`` along the line
  between the path's two end images (as many points as alphas), ``line_*`` along the line from the alpha = 0
  image to the first image, on the side of the measured transition, where the probability of its class is below
  0.1 (without a transition: the first image of another class; ``first_other_*``): ``line_max_step`` at the edit's alpha
  spacing, ``line_width`` with as many points as alphas over that span. An edit whose width matches
  ``line_width`` moves the image as evenly as the straight line and the classifier makes the step.

    python bench/edit_path.py [--digits 20] [--count 97] [--amax 6]

Writes bench/results/edit_path.csv (one row per image, t and direction), .json (medians) and .png.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lowdim_app as ld  # noqa: E402
from lowdim_app.data.classifier import predict_proba  # noqa: E402
from lowdim_app.data.images import load_image  # noqa: E402
from lowdim_app.diffusion import load_model  # noqa: E402
from lowdim_app.methods import structure as st  # noqa: E402
from lowdim_app.methods.editing import MAX_ALPHAS  # noqa: E402
from lowdim_app.plots.common import save_figure  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
FIELDS = ["image", "label", "t_fraction", "t", "direction", "ratio", "class0", "p0", "changed", "max_step", "width",
          "width_side", "width_at", "continuity", "first_other_alpha", "first_other_class", "ends_max_step",
          "line_max_step", "line_width", "classes"]
SHOWN = 4          # held-out digits drawn in the figure (besides the examples)


def path_images(found, alphas, seed):
    """The edit and its random control on ``alphas``, in calls of at most MAX_ALPHAS strengths."""
    along, control = [], []
    for i in range(0, len(alphas), MAX_ALPHAS):
        res = ld.edit(found, direction=1, alpha=alphas[i:i + MAX_ALPHAS], seed=seed)
        along.append(res.along)
        control.append(res.control)
    return torch.cat(along), torch.cat(control)


def line(a, b, n):
    s = torch.linspace(0, 1, n, dtype=a.dtype).view(-1, *[1] * a.dim())
    return (1 - s) * a + s * b


def measure(images, alphas):
    """The path's measures and its straight-line references (see the module docstring)."""
    alphas = np.asarray(alphas)
    p = predict_proba(images)
    cls = p.argmax(1)
    i0 = int(np.argmin(np.abs(alphas)))
    c0 = int(cls[i0])
    w = st.transition_width(alphas, p[:, c0])
    row = {"class0": c0, "p0": round(float(p[i0, c0]), 4), "changed": int((cls != c0).any()),
           "max_step": round(float(st.tv_steps(p).max()), 4), "width": round(w["width"], 4),
           "width_side": w["side"], "width_at": round(w["at"], 4),
           "continuity": round(st.path_continuity(images), 4), "classes": "".join(str(c) for c in cls)}
    ends = predict_proba(line(images[0], images[-1], len(alphas)))
    row["ends_max_step"] = round(float(st.tv_steps(ends).max()), 4)
    # the reference's far end: on the side of the measured transition, the image nearest alpha = 0 where
    # p(class at 0) < 0.1; without one, the image nearest alpha = 0 of another class
    order = [int(i) for i in np.argsort(np.abs(alphas - alphas[i0]), kind="stable")]
    other = ([i for i in order if p[i, c0] < 0.1 and (i - i0) * w["side"] > 0] if w["side"] else []) \
        or [i for i in order if cls[i] != c0]
    row.update(first_other_alpha=float("nan"), first_other_class=-1, line_max_step=float("nan"),
               line_width=float("nan"))
    if other:
        j = int(other[0])
        seg = np.linspace(0.0, alphas[j], len(alphas))
        q = predict_proba(line(images[i0], images[j], len(alphas)))
        lw = st.transition_width(seg, q[:, c0])
        on_grid = predict_proba(line(images[i0], images[j], abs(j - i0) + 1))     # the edit's own alpha spacing
        row.update(first_other_alpha=round(float(alphas[j]), 4), first_other_class=int(cls[j]),
                   line_max_step=round(float(st.tv_steps(on_grid).max()), 4), line_width=round(lw["width"], 4))
    return row, p


def median(rows, key):
    v = np.array([r[key] for r in rows], dtype=float)
    v = v[~np.isnan(v)]
    return (round(float(np.median(v)), 4) if len(v) else None), int(len(v))


def summarize(rows):
    out = {}
    for frac in sorted({r["t_fraction"] for r in rows}):
        out[f"{frac}T"] = {}
        for d in ("v1", "random"):
            sel = [r for r in rows if r["t_fraction"] == frac and r["direction"] == d and r["image"].startswith("held-out")]
            s = {"n": len(sel), "changed_share": round(float(np.mean([r["changed"] for r in sel])), 3)}
            for key in ("max_step", "width", "continuity", "ends_max_step", "line_max_step", "line_width", "ratio"):
                s[f"{key}_median"], s[f"{key}_n"] = median(sel, key)
            changed = [r for r in sel if r["changed"]]      # the paths that change class: is the change gradual?
            for key in ("max_step", "width", "continuity", "line_max_step", "line_width"):
                s[f"changed_{key}_median"], s[f"changed_{key}_n"] = median(changed, key) if changed else (None, 0)
            out[f"{frac}T"][d] = s
    return out


def figure(paths, alphas, path_out, ncols=4):
    """Per shown path: p(start class) and p(most likely other class) vs alpha (v1 solid, random dashed,
    straight line to the first other class dotted), and the image strips (v1 top, random bottom)."""
    from matplotlib.figure import Figure

    nrows = -(-len(paths) // ncols)
    fig = Figure(figsize=(4.2 * ncols, 4.6 * nrows), dpi=100)
    gs = fig.add_gridspec(2 * nrows, ncols, height_ratios=[2.4, 1.0] * nrows, hspace=0.45)
    every = max(1, (len(alphas) - 1) // 12)
    for k, (title, row_v, p_v, p_r, im_v, im_r) in enumerate(paths):
        ax = fig.add_subplot(gs[2 * (k // ncols), k % ncols])
        c0 = row_v["class0"]
        c1 = int(np.argmax(np.where(np.arange(10) != c0, p_v.max(0), -1)))
        ax.plot(alphas, p_v[:, c0], "-", color="C0", label=f"v1: p({c0})")
        ax.plot(alphas, p_v[:, c1], "-", color="C3", label=f"v1: p({c1})")
        ax.plot(alphas, p_r[:, c0], "--", color="C0", label=f"random: p({c0})")
        ax.plot(alphas, p_r[:, c1], "--", color="C3", label=f"random: p({c1})")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("alpha")
        ax.set_ylabel("classifier probability")
        ax.grid(alpha=0.3)
        ax.set_title(f"{title}\nTV step {row_v['max_step']:.2f}, width {row_v['width']:.2f}, "
                     f"line width {row_v['line_width']:.2f}", fontsize=8)
        ax.legend(fontsize=6, loc="center right")
        sel = list(range(0, len(alphas), every))
        strip = torch.cat([torch.cat(list(im[sel, 0]), dim=1) for im in (im_v, im_r)], dim=0)
        ax2 = fig.add_subplot(gs[2 * (k // ncols) + 1, k % ncols])
        ax2.imshow(strip.numpy(), cmap="gray", vmin=-1, vmax=1)
        side = im_v.shape[-1]
        ticks = list(range(0, len(sel), 2))
        ax2.set_xticks([side * (i + 0.5) for i in ticks], [f"{alphas[sel[i]]:g}" for i in ticks], fontsize=7)
        ax2.set_yticks([side * 0.5, side * 1.5], ["v1", "rand"], fontsize=7)
        ax2.set_xlabel("alpha", fontsize=7)
    save_figure(fig, path_out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="digits-gen")
    ap.add_argument("--digits", type=int, default=20)
    ap.add_argument("--seed", type=int, default=2024, help="choice of the held-out digits (as builtin_structure)")
    ap.add_argument("--count", type=int, default=97)
    ap.add_argument("--amax", type=float, default=6.0)
    ap.add_argument("--fractions", default="0.5,0.7")
    ap.add_argument("--out", default=str(RESULTS / "edit_path"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    model = load_model(a.model, "cpu")
    alphas = [float(x) for x in np.linspace(-a.amax, a.amax, a.count)]
    images, labels = st.held_out_digits(a.digits, a.seed)
    inputs = [(f"held-out {i}", images[i], int(labels[i]), i) for i in range(len(images))]
    for path in sorted((ROOT / "assets" / "examples").glob("digit_*.png")):
        inputs.append((f"assets/examples/{path.name}", load_image(path, model.image_shape[1:], channels=1)[0],
                       int(path.name.split("_")[1]), 0))          # seed 0: the Edit tab's default seed
    rows, shown = [], []
    t0 = time.perf_counter()
    for frac in (float(f) for f in a.fractions.split(",")):
        t = model.timestep_from_fraction(frac)
        for name, image, label, seed in inputs:
            found = ld.find_directions(image, model, t=frac, k=1, steps=50)
            ratio = ld.edit(found, direction=1, seed=seed).ratio      # the Edit tab's default alphas
            im_v, im_r = path_images(found, alphas, seed)
            out = {}
            for d, ims in (("v1", im_v), ("random", im_r)):
                row, p = measure(ims, alphas)
                rows.append({"image": name, "label": label, "t_fraction": frac, "t": t, "direction": d,
                             "ratio": round(ratio, 3), **row})
                out[d] = (row, p)
            print(f"{frac}T {name:40s} v1 {out['v1'][0]['classes']}  width {out['v1'][0]['width']}  "
                  f"line {out['v1'][0]['line_width']}  TV {out['v1'][0]['max_step']}  "
                  f"cont {out['v1'][0]['continuity']}  | random changed {out['random'][0]['changed']} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
            if name.startswith("assets") or seed < SHOWN:
                shown.append((f"{name.replace('assets/examples/', '')} at {frac}T", out["v1"][0], out["v1"][1],
                              out["random"][1], im_v, im_r))
    summary = {"model": a.model, "digits": a.digits, "seed": a.seed, "alphas": [alphas[0], alphas[-1], len(alphas)],
               "wall_s": round(time.perf_counter() - t0, 1), "held_out": summarize(rows)}
    print(json.dumps(summary, indent=1))
    base = Path(a.out)
    base.parent.mkdir(parents=True, exist_ok=True)
    with open(base.with_suffix(".csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    base.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    figure([s for s in shown if s[0].startswith("held-out")], alphas, base.with_suffix(".png"), ncols=SHOWN)
    figure([s for s in shown if s[0].startswith("digit")], alphas, Path(f"{base}_examples.png"),
           ncols=max(1, len(inputs) - len(images)))
    print(f"wrote {base}.csv/.json/.png, {base}_examples.png")


if __name__ == "__main__":
    main()
