"""Which training recipe makes a small digits DDPM show the papers' low-dimensional structure?

Trains one recipe with ``lowdim_app.diffusion.training.train`` and, every ``--every`` steps, measures the
EMA weights on held-out digits (forward-noised, seeded): numerical rank of the exact 256 x 256 Jacobian
of ``x0_hat`` (Wang et al. 2024, eq. 46, eta = 0.99), the share of ``||J||_F^2`` outside the 64-dim data
subspace, and the change of a DDIM edit along ``v1`` over a random unit direction (alpha = +-4), at
t in {0.3, 0.5, 0.7, 0.9}T. One CSV row per (step, t) in ``bench/results/builtin_recipe.csv``.

    OMP_NUM_THREADS=1 nice -n 10 python bench/builtin_recipe.py --name v-cos --prediction v_prediction \
        --schedule squaredcos_cap_v2 --steps 8000 --every 2000
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch

from lowdim_app.diffusion.model import DiffusionModel
from lowdim_app.diffusion.training import TrainConfig, train
from lowdim_app.methods.structure import (TIME_FRACTIONS, digit_subspace, edit_ratio, exact_jacobian, held_out_digits,
                                          jacobian_structure, noised)

RESULTS = Path(__file__).parent / "results" / "builtin_recipe.csv"
HEADER = ["recipe", "step", "t_fraction", "snr", "rank_median", "rank_max", "outside_median", "outside_max",
          "outside_output_median", "outside_input_median", "edit_ratio_median", "edit_ratio_min", "n_digits",
          "train_s", "config"]


def measure(model, n_digits: int, seed: int, edit_steps: int) -> list[dict]:
    images, _ = held_out_digits(n_digits, seed)
    Q = digit_subspace()
    rows = []
    for frac in TIME_FRACTIONS:
        t = model.timestep_from_fraction(frac)
        abar = float(model.abar(t))
        st, ratios = [], []
        for i in range(n_digits):
            x_t = noised(model, images[i], t, seed + 100 * i)
            s, Vh = jacobian_structure(exact_jacobian(model, x_t, t), Q)
            st.append(s)
            if frac in (0.5, 0.7):
                ratios.append(edit_ratio(model, x_t, t, Vh[0], seed=seed + 1000 + i, steps=edit_steps)["ratio"])
        rows.append({"t_fraction": frac, "snr": f"{(abar / (1 - abar)) ** 0.5:.4g}",
                     "rank_median": float(np.median([s.rank for s in st])), "rank_max": max(s.rank for s in st),
                     "outside_median": f"{np.median([s.outside for s in st]):.4f}",
                     "outside_max": f"{max(s.outside for s in st):.4f}",
                     "outside_output_median": f"{np.median([s.outside_output for s in st]):.4f}",
                     "outside_input_median": f"{np.median([s.outside_input for s in st]):.4f}",
                     "edit_ratio_median": f"{np.median(ratios):.3f}" if ratios else "",
                     "edit_ratio_min": f"{min(ratios):.3f}" if ratios else "", "n_digits": n_digits})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True)
    p.add_argument("--prediction", default="v_prediction")
    p.add_argument("--schedule", default="squaredcos_cap_v2")
    p.add_argument("--antithetic", action="store_true")
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--every", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--width", default="32,64,64")
    p.add_argument("--no-attention", action="store_true")
    p.add_argument("--subset", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--digits", type=int, default=6, help="held-out digits per checkpoint")
    p.add_argument("--edit-steps", type=int, default=20, help="DDIM steps over [0, T] of the edit check")
    p.add_argument("--save", default="", help="folder for the final model")
    p.add_argument("--out", default=str(RESULTS))
    a = p.parse_args()
    torch.manual_seed(a.seed)
    cfg = TrainConfig(subset=a.subset, steps=a.steps, batch_size=a.batch_size, lr=a.lr, ema_decay=a.ema,
                      prediction_type=a.prediction, beta_schedule=a.schedule, antithetic=a.antithetic, seed=a.seed,
                      block_out_channels=tuple(int(w) for w in a.width.split(",")), attention=not a.no_attention,
                      out=a.save or f"/tmp/builtin_recipe/{a.name}")
    out = Path(a.out)
    new = not out.exists()
    start = time.perf_counter()
    paused = [0.0]
    config = (f"{a.prediction} {a.schedule} batch {a.batch_size} lr {a.lr} ema {a.ema} width {a.width}"
              f"{'' if not a.no_attention else ' no-attn'}{' antithetic' if a.antithetic else ''}"
              f"{f' subset {a.subset}' if a.subset else ''} seed {a.seed}")

    def on_checkpoint(step, unet, sched_cfg):
        t0 = time.perf_counter()
        model = DiffusionModel(a.name, unet, sched_cfg)
        rows = measure(model, a.digits, seed=12345, edit_steps=a.edit_steps)
        with out.open("a", newline="") as fh:
            w = csv.DictWriter(fh, HEADER)
            for r in rows:
                w.writerow({"recipe": a.name, "step": step, "train_s": round(t0 - start - paused[0]),
                            "config": config, **r})
                print(a.name, step, r, flush=True)
        paused[0] += time.perf_counter() - t0

    if new:
        with out.open("w", newline="") as fh:
            csv.DictWriter(fh, HEADER).writeheader()
    train(cfg, progress=True, checkpoint_every=a.every, on_checkpoint=on_checkpoint)


if __name__ == "__main__":
    main()
