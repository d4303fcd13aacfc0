"""Fig. 3b / 7a: numerical rank / n of the denoiser Jacobian vs SNR for the closed-form posterior mean,
the SGD-trained low-rank DAE (eq. 9) and MLP denoisers with growing training budgets (kimg = steps x
batch / 1000). Writes bench/results/molrg_rank_budget.{json,png} and prints the table.

    python bench/rank_budget.py [--threads 2] [--budgets 6000:256:128:2e-3,20000:256:128:2e-3,20000:512:256:1e-3]

Each budget is ``steps:width:batch:lr``. ~15 min on 2 cores with the defaults.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lowdim_app.features.molrg_rank import FEATURE as RANK, RankSettings  # noqa: E402
from lowdim_app.plots.common import save_figure  # noqa: E402
from lowdim_app.plots.molrg import rank_vs_snr_figure  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budgets", default="6000:256:128:2e-3,20000:256:128:2e-3,20000:512:256:1e-3")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "molrg_rank_budget"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    base = RankSettings()
    out, train_s = None, {}
    for i, b in enumerate(a.budgets.split(",")):
        steps, width, batch, lr = b.split(":")
        st = base.replace(mlp_steps=int(steps), mlp_width=int(width), mlp_batch=int(batch), mlp_lr=float(lr),
                          dae_iters=base.dae_iters if i == 0 else 0)
        t0 = time.perf_counter()
        o = RANK.run(st).to_json()
        name = [k for k in o["models"] if k.startswith("MLP")][0]
        train_s[name] = round(time.perf_counter() - t0, 1)
        print(f"{name}: {train_s[name]} s", flush=True)
        if out is None:
            out = o
            out["settings"] = {**o["settings"], "budgets": a.budgets}
        else:
            out["models"][name] = o["models"][name]
    out["wall_s"] = train_s
    print("SNR".ljust(44) + " ".join(f"{v:6.3g}" for v in out["snr"]))
    for name, vals in out["models"].items():
        print(name[:43].ljust(44) + " ".join(f"{v:6.3f}" for v in vals))
    print(f"Lemma 2 bounds (rank/n): {out['bounds'][0]:.3f} .. {out['bounds'][1]:.3f}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out + ".json").write_text(json.dumps(out, indent=1))
    save_figure(rank_vs_snr_figure(out["snr"], out["models"], out["bounds"], title=f"n={base.n}, d_k={list(base.dims)}"),
                a.out + ".png")
    print(f"wrote {a.out}.json/.png")


if __name__ == "__main__":
    main()
