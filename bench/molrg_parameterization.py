"""Fig. 3b (Wang et al. 2024, arXiv:2409.02426, App. D.2): which parameterization of the MoLRG lab's
network keeps its Jacobian inside Lemma 2's band at every SNR?

Runs ``molrg-rank`` (n = 48, two 6-dim subspaces, N = 1000, 15 EDM trajectories of 18 Heun steps, SNR
0.0125 .. 500) with the MLP denoiser parameterized by EDM preconditioning (``--mlp-param edm``) and as a
clean-sample predictor (``--mlp-param sample``), at the lab's default (3000 Adam steps) and the CLI's
default (6000) budget, side by side in one run. A point is inside the band when its rank / n lies in
Lemma 2's [min d_k, sum d_k] / n = [0.125, 0.25] widened by 0.03.

    python bench/molrg_parameterization.py        # ~10 min on 2 cores
Writes bench/results/molrg_parameterization.{csv,json,png}.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lowdim_app.features.molrg_rank import FEATURE as RANK, RankSettings  # noqa: E402
from lowdim_app.plots.common import save_figure  # noqa: E402
from lowdim_app.plots.molrg import rank_vs_snr_figure  # noqa: E402

SLACK = 0.03


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="edm,sample")
    ap.add_argument("--steps", default="3000,6000")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "molrg_parameterization"))
    a = ap.parse_args()
    rows, curves, out = [], {}, None
    for steps in (int(v) for v in a.steps.split(",")):
        for param in a.params.split(","):
            st = RankSettings(mlp_steps=steps, mlp_param=param, dae_iters=0)
            t0 = time.perf_counter()
            res = None
            for res in RANK.stream(st):
                pass
            wall = time.perf_counter() - t0
            name = [k for k in res.models if k.startswith("MLP")][0]
            vals = res.models[name]
            lo, hi = res.bounds
            inside = [lo - SLACK <= v <= hi + SLACK for v in vals]
            curves[name] = vals
            out = res
            rows.append({"param": param, "mlp_steps": steps, "kimg": steps * st.mlp_batch / 1000,
                         "inside_band": sum(inside), "points": len(vals), "min_rank_over_n": round(min(vals), 4),
                         "max_rank_over_n": round(max(vals), 4), "wall_s": round(wall, 1),
                         **{f"snr_{s:.4g}": round(v, 4) for s, v in zip(res.snr, vals)}})
            print(f"{name}: {sum(inside)}/{len(vals)} inside [{lo - SLACK:.3f}, {hi + SLACK:.3f}]; "
                  f"rank/n {min(vals):.3f} .. {max(vals):.3f} ({wall:.0f} s)", flush=True)
    curves = {"posterior mean (Lemma 1)": out.models["posterior mean (Lemma 1)"], **curves}
    base = Path(a.out)
    base.parent.mkdir(parents=True, exist_ok=True)
    with open(base.with_suffix(".csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    base.with_suffix(".json").write_text(json.dumps({"snr": out.snr, "bounds": out.bounds, "slack": SLACK,
                                                     "models": curves, "rows": rows}, indent=1))
    save_figure(rank_vs_snr_figure(out.snr, curves, out.bounds, title="n=48, d_k=[6, 6]: MLP parameterizations"),
                base.with_suffix(".png"))
    print(f"wrote {base}.csv/.json/.png")


if __name__ == "__main__":
    main()
