"""Benchmark: full Fig. 4 grid (n=48, d 2..8, N_k 2..15, 20 trials) per method and K, batched
(one tensor program per N column, or the whole grid) vs one problem at a time (same method and
iteration counts). Prints a table with the ratio; writes bench/results/phase.csv.

    python bench/phase.py [--methods svd,cluster,dae] [--K 1,2] [--dae-iters 300] [--dae-trials 20]
                          [--dae-preset fast|paper]

The App. E.1 DAE-SGD settings (``--dae-preset paper``: K = 1 1e4 iterations, K = 2 1e5 iterations at
batch 1024) take hours for the full grid on 2 CPU cores; time them with ``--dae-iters`` set lower and
scale by iterations (the cost is linear in iterations; the CSV states the iterations used).
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lowdim_app.features.phase import FEATURE as PHASE, PhaseSettings  # noqa: E402


def timed(st):
    t0 = time.perf_counter()
    res = PHASE.run(st).grid
    return time.perf_counter() - t0, res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default="svd,cluster")
    ap.add_argument("--K", default="1,2")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--dae-iters", type=int, default=None, help="default: the lab's fast preset (300)")
    ap.add_argument("--dae-trials", type=int, default=None)
    ap.add_argument("--dae-preset", choices=("fast", "paper"), default="fast")
    ap.add_argument("--loop-trials", type=int, default=None,
                    help="time the loop on this many trials per cell and scale linearly (its cost is per problem)")
    ap.add_argument("--loop", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the one-problem-at-a-time loop")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "phase.csv"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    print(f"{'method':8s} {'K':>2s} {'trials':>6s} {'batched':>8s} {'batched_s':>9s} {'loop_s':>8s} {'ratio':>6s} same",
          flush=True)
    for method in a.methods.split(","):
        for K in [int(k) for k in a.K.split(",")]:
            if method == "svd" and K != 1:
                continue
            trials = a.dae_trials if (method == "dae" and a.dae_trials) else a.trials
            base = dict(K=K, method=method, trials=trials, seed=0, dae_iters=a.dae_iters, dae_preset=a.dae_preset)
            chunk = "column" if method == "dae" else "grid"
            tb, rb = timed(PhaseSettings(chunk=chunk, **base))
            tl, same = float("nan"), ""
            if a.loop and a.loop_trials and a.loop_trials < trials:
                tl, _ = timed(PhaseSettings(chunk="problem", **{**base, "trials": a.loop_trials}))
                tl *= trials / a.loop_trials
                same = f"loop timed on {a.loop_trials} trials/cell, scaled x{trials / a.loop_trials:g}"
            elif a.loop:
                tl, rl = timed(PhaseSettings(chunk="problem", **base))
                same = "yes" if rl.success == rb.success else "differs (solver RNG per batch)"
            ratio = tl / tb
            full_iters = PhaseSettings(**{**base, "dae_iters": None}).dae_config().iters if method == "dae" else 0
            used_iters = PhaseSettings(**base).dae_config().iters if method == "dae" else 0
            scale = full_iters / used_iters if method == "dae" else 1.0
            if scale != 1.0:   # cost is linear in iterations: the preset's full grid, extrapolated
                print(f"   {a.dae_preset} preset ({full_iters} iterations) extrapolated from {used_iters}: "
                      f"batched {tb * scale:.0f} s, loop {tl * scale:.0f} s", flush=True)
            print(f"{method:8s} {K:2d} {trials:6d} {chunk:>8s} {tb:9.2f} {tl:8.2f} {ratio:6.1f} {same}", flush=True)
            rows.append(dict(method=method if method != "dae" else f"dae-{a.dae_preset}", K=K, trials=trials, cells=rb.cells_total, batched=chunk,
                             batched_s=round(tb, 3), loop_s=round(tl, 3), ratio=round(ratio, 2),
                             threads=a.threads, grid_same=same,
                             preset_iters=full_iters, iters_used=used_iters,
                             batched_s_at_preset=round(tb * scale, 1), loop_s_at_preset=round(tl * scale, 1),
                             dae_settings=str(PhaseSettings(**base).dae_config().to_dict()) if method == "dae" else ""))
            print(rb.table())
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    keep = []   # rows of other methods/presets already in the CSV stay
    if Path(a.out).is_file():
        done = {(r["method"], str(r["K"])) for r in rows}
        with open(a.out, newline="") as f:
            keep = [r for r in csv.DictReader(f) if (r["method"], r["K"]) not in done]
    with open(a.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), restval="")
        w.writeheader()
        w.writerows(keep + rows)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
