"""Do the built-in models show the papers' low-dimensional structure? (Wang et al. 2024, arXiv:2409.02426,
§3, Fig. 3a and 6; numerical rank eq. 46, eta = 0.99.)

Per model, on ``--digits`` held-out test digits (seeded choice, never trained on):

* structure: exact 256 x 256 Jacobian of ``x0_hat`` at t in {0.3, 0.5, 0.7, 0.9}T, at the forward-noised
  digit (seeded noise) and at its DDIM inversion (the Edit tab's path, 50-step grid): numerical rank, share
  of ``||J||_F^2`` outside the 64-dim span S of the digits (``1 - ||P J P||^2 / ||J||^2``, 0 for the true
  posterior mean), split into output leaving S and output in S responding to noise outside S;
* edits: the project's edit (``find_directions`` + ``edit``: DDIM inversion, exact Jacobian, alpha =
  -6..6 in 7 steps, DDIM back, random control seeded per digit) at 0.5T and 0.7T: mean change along v1 over
  the random direction (the Edit tab's ratio), and the digit classifier along alpha = -6..6 in 25 steps (0.5 apart) for
  v1 and random: did the class change, and the largest total-variation step of the probabilities between
  neighbouring alphas;
* trajectory: rank / n along three seeded 50-step DDIM trajectories (12 points each), against the SNR.

``--models`` takes ids or folders (``name=folder`` to label a folder), so the models the project shipped
before can be measured side by side (``git show main:assets/models/...`` into a folder).

    python bench/builtin_structure.py [--models digits-gen,digits-mem,digits-dup] [--digits 20]

Writes bench/results/builtin_structure.csv (one row per model, part, t, digit), .json (medians) and .png.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lowdim_app as ld  # noqa: E402
from lowdim_app.data.classifier import predict_proba  # noqa: E402
from lowdim_app.diffusion import load_model  # noqa: E402
from lowdim_app.methods import structure as st  # noqa: E402
from lowdim_app.methods.editing import invert  # noqa: E402
from lowdim_app.methods.lowrank import rank_along_trajectory  # noqa: E402
from lowdim_app.plots.common import new_figure, save_figure  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
FIELDS = ["model", "part", "t_fraction", "t", "snr", "digit", "label", "x_t", "rank", "outside", "outside_output",
          "outside_input", "fro", "ratio", "class_changed_v1", "class_changed_random", "max_step_v1",
          "max_step_random", "classes_v1", "classes_random"]
PATH_ALPHAS = tuple(float(a) for a in np.linspace(-6, 6, 25))


def structure_rows(name, model, images, labels, seed):
    rows = []
    for frac in st.TIME_FRACTIONS:
        t = model.timestep_from_fraction(frac)
        abar = float(model.abar(t))
        for i in range(len(images)):
            for how in ("forward-noised", "DDIM-inverted"):
                x_t = (st.noised(model, images[i], t, seed + i) if how == "forward-noised"
                       else invert(model, images[i:i + 1], t).x_t)
                s, _ = st.jacobian_structure(st.exact_jacobian(model, x_t, t))
                rows.append({"model": name, "part": "structure", "t_fraction": frac, "t": t,
                             "snr": round((abar / (1 - abar)) ** 0.5, 5), "digit": i, "label": int(labels[i]),
                             "x_t": how, **{k: v for k, v in s.as_dict().items() if k in FIELDS}})
    return rows


def edit_rows(name, model, images, labels):
    rows = []
    for frac in (0.5, 0.7):
        t = model.timestep_from_fraction(frac)
        for i in range(len(images)):
            found = ld.find_directions(images[i], model, t=frac, k=1, steps=50)
            res = ld.edit(found, direction=1, seed=i)                           # the Edit tab's alphas
            path = ld.edit(found, direction=1, alpha=PATH_ALPHAS, seed=i)
            row = {"model": name, "part": "edit", "t_fraction": frac, "t": t, "digit": i, "label": int(labels[i]),
                   "x_t": "DDIM-inverted", "ratio": round(res.ratio, 4)}
            for key, ims in (("v1", path.along), ("random", path.control)):
                p = predict_proba(ims)
                cls = p.argmax(1)
                row[f"class_changed_{key}"] = int((cls != labels[i]).any())
                row[f"max_step_{key}"] = round(float(0.5 * np.abs(np.diff(p, axis=0)).sum(1).max()), 4)
                row[f"classes_{key}"] = "".join(str(c) for c in cls)
            rows.append(row)
    return rows


def trajectory(model, seeds=(0, 1, 2)):
    pts = [rank_along_trajectory(model, steps=50, points=12, seed=s, solver="exact") for s in seeds]
    return {"snr": [p.snr for p in pts[0]], "t": [p.t for p in pts[0]],
            "rank_over_n": [float(np.mean([run[j].rank_fraction for run in pts])) for j in range(len(pts[0]))]}


def summarize(rows, name):
    out = {"structure": {}, "edit": {}}
    for frac in st.TIME_FRACTIONS:
        for how in ("forward-noised", "DDIM-inverted"):
            sel = [r for r in rows if r["model"] == name and r["part"] == "structure" and r["t_fraction"] == frac
                   and r["x_t"] == how]
            if sel:
                out["structure"][f"{frac}T {how}"] = {
                    "snr": sel[0]["snr"], "rank_median": float(np.median([r["rank"] for r in sel])),
                    "rank_max": int(max(r["rank"] for r in sel)),
                    "outside_median": round(float(np.median([r["outside"] for r in sel])), 4),
                    "outside_max": round(float(max(r["outside"] for r in sel)), 4)}
    for frac in (0.5, 0.7):
        sel = [r for r in rows if r["model"] == name and r["part"] == "edit" and r["t_fraction"] == frac]
        if sel:
            out["edit"][f"{frac}T"] = {
                "n_digits": len(sel), "ratio_median": round(float(np.median([r["ratio"] for r in sel])), 3),
                "ratio_min": round(float(min(r["ratio"] for r in sel)), 3),
                "class_changed_v1": round(float(np.mean([r["class_changed_v1"] for r in sel])), 3),
                "class_changed_random": round(float(np.mean([r["class_changed_random"] for r in sel])), 3),
                "max_step_v1_median": round(float(np.median([r["max_step_v1"] for r in sel])), 3),
                "max_step_random_median": round(float(np.median([r["max_step_random"] for r in sel])), 3)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="digits-gen,digits-mem,digits-dup")
    ap.add_argument("--digits", type=int, default=20)
    ap.add_argument("--seed", type=int, default=2024, help="choice of the held-out digits and of the noise")
    ap.add_argument("--parts", default="structure,edit,trajectory")
    ap.add_argument("--out", default=str(RESULTS / "builtin_structure"))
    a = ap.parse_args()
    images, labels = st.held_out_digits(a.digits, a.seed)
    rows, summary, curves = [], {}, {}
    for spec in a.models.split(","):
        name, _, folder = spec.partition("=")
        model = load_model(folder or name, "cpu")
        t0 = time.perf_counter()
        if "structure" in a.parts:
            rows += structure_rows(name, model, images, labels, a.seed)
        if "edit" in a.parts:
            rows += edit_rows(name, model, images, labels)
        summary[name] = summarize(rows, name)
        if "trajectory" in a.parts:
            curves[name] = summary[name]["trajectory"] = trajectory(model)
            summary[name]["trajectory"]["data_dim"] = st.data_span_dim(model)
        summary[name]["wall_s"] = round(time.perf_counter() - t0, 1)
        print(name, json.dumps(summary[name], indent=1), flush=True)
    base = Path(a.out)
    base.parent.mkdir(parents=True, exist_ok=True)
    with open(base.with_suffix(".csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    base.with_suffix(".json").write_text(json.dumps({"digits": a.digits, "seed": a.seed, "models": summary}, indent=1))
    if curves:
        fig, ax = new_figure(6.0, 3.6)
        for i, (name, c) in enumerate(curves.items()):
            ax.semilogx(c["snr"], c["rank_over_n"], "o-", ms=3, color=f"C{i}", label=name)
        ax.axhline(64 / 256, color="k", ls="--", lw=1, label="64 / 256: span of the 8x8 digits")
        ax.set_xlabel("SNR = 1 / sigma_t")
        ax.set_ylabel("rank(J_t) / n (mean of 3 trajectories)")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
        ax.set_title("Built-in models: rank of J_t along DDIM trajectories (Wang et al. 2024, Fig. 3a)", fontsize=9)
        save_figure(fig, base.with_suffix(".png"))
    print(f"wrote {base}.csv/.json" + ("/.png" if curves else ""))


if __name__ == "__main__":
    main()
