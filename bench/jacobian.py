"""Benchmark: top-k singular subspace of J_t = d x0_hat / d x_t (Wang et al. 2024, §4.2; Chen et al. 2024, LOCO Edit).

For each model and k, side by side in one run:
  * krylov   -- ``methods.jacobian.top_k_svd`` (block Krylov / Ritz expansion, Wedin stop rule, tol 0.05)
  * power    -- LOCO-Edit-style baseline: k JVPs + k VJPs per iteration, SVD, stop when successive
                bases agree to 1e-4 (sine of the largest principal angle), at most 50 iterations
  * exact    -- n VJPs (full Jacobian) + torch.linalg.svd, where feasible (n <= --exact-max-n)
Accuracy = smallest principal-angle cosine to the reference top-k right singular subspace
(exact SVD where computed, else a long Krylov run to tol 0.01 -- stated in the CSV). Columns give
passes (JVP + VJP directions) and wall time at each method's own stop rule, and the passes at which
the iterate first reached cosine >= 0.99 (an oracle count, needs the reference).

Models: ``digits-gen`` (trained, 1x16x16, n = 256), ``cifar-unet`` (a CIFAR-shaped pixel
UNet2DModel 3x32x32, n = 3072, RANDOM WEIGHTS), ``tiny-sd`` (the tiny text-conditioned latent
U-Net 4x16x16, n = 1024, RANDOM WEIGHTS, prompt "a cat"). Random-weight U-Nets have flat spectra
(tiny-sd: s_1..s_12 = 5.87..5.51), so their top-k subspaces are ill-conditioned and every method
needs many passes; the trained model is the meaningful case.

Usage: python bench/jacobian.py [--models digits-gen,cifar-unet,tiny-sd] [--ks 1,5,10] [--seed 0]
Writes bench/results/jacobian.csv.
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lowdim_app.methods import jacobian as jac  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "jacobian.csv"


class _CifarModel:
    """Minimal stand-in with the DiffusionModel bits the Jacobian code uses (x0_hat, shapes)."""

    def __init__(self, seed: int):
        from diffusers import DDPMScheduler, UNet2DModel

        torch.manual_seed(seed)
        self.unet = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=1,
                                block_out_channels=(32, 64, 64),
                                down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D")).eval()
        self.abar = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod
        self.sample_shape = (3, 32, 32)
        self.n = 3072
        self.device = torch.device("cpu")
        self.num_train_timesteps = 1000

    def check_timestep(self, t):
        return int(t)

    def timestep_from_fraction(self, f):
        return int(round(f * 999))

    def randn(self, n, seed):
        return torch.randn((n, *self.sample_shape), generator=torch.Generator().manual_seed(seed))

    def x0_hat(self, x, t, cond=None, dtype=None):
        a = float(self.abar[t])
        eps = self.unet(x, torch.full((x.shape[0],), t)).sample
        return (x - math.sqrt(1 - a) * eps) / math.sqrt(a)

    def forward_ad_safe(self):
        from lowdim_app.diffusion import attention

        return attention.forward_ad_safe(self.unet)


def load(name: str, seed: int):
    from lowdim_app.diffusion import load_model

    if name == "digits-gen":
        return load_model("digits-gen", "cpu"), None
    if name == "cifar-unet":
        return _CifarModel(seed), None
    if name == "tiny-sd":
        from lowdim_app.diffusion.tiny import build_tiny_sd_pipeline

        d = build_tiny_sd_pipeline(Path(tempfile.mkdtemp()) / "pipe", seed=seed)
        m = load_model(str(d), "cpu")
        return m, m.encode_prompt("a cat")
    raise SystemExit(f"unknown model {name}")


def first_reaching(history_cos, level=0.99):
    return next((p for p, c in history_cos if c >= level), None)


def _write(path, rows):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="digits-gen,cifar-unet,tiny-sd")
    ap.add_argument("--ks", default="1,5,10")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--t-frac", type=float, default=0.7)
    ap.add_argument("--exact-max-n", type=int, default=1024)
    ap.add_argument("--max-passes", type=int, default=600, help="budget for the Krylov runs")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    rows = []
    for name in args.models.split(","):
        m, cond = load(name, args.seed)
        t = m.timestep_from_fraction(args.t_frac)
        x_t = m.randn(1, seed=args.seed)[0]
        op = jac.x0_hat_operator(m, x_t, t, cond) if hasattr(m, "predict") else \
            jac.JacobianOperator(lambda xb: m.x0_hat(xb, t), x_t)
        with m.forward_ad_safe():
            op.jvp(torch.randn(1, *m.sample_shape))  # warm-up (first call pays one-off init)
            op.vjp(torch.randn(1, *m.sample_shape))
            ref_kind, exact_row = None, None
            if m.n <= args.exact_max_n:
                ex = jac.exact_svd(op, k=max(ks))
                ref_V, ref_kind = ex.V, "exact"
                exact_row = ex
                print(f"{name}: exact Jacobian + SVD: {ex.passes} passes, {ex.wall_time_s:.1f} s, "
                      f"numerical rank {ex.numerical_rank()} of {m.n}, s_1..5 = {[round(float(s), 3) for s in ex.singular_values[:5]]}")
            else:
                ref = jac.top_k_svd(op, k=max(ks), tol=0.01, max_passes=2 * args.max_passes, seed=args.seed + 99)
                ref_V, ref_kind = ref.V, f"krylov tol 0.01 ({'converged' if ref.converged else 'NOT converged'})"
                print(f"{name}: reference {ref_kind}, {ref.passes} passes")
            for k in ks:
                refk = ref_V[:k]
                out = {}
                for meth in ("krylov", "power"):
                    hist = []
                    cb = lambda d, h=hist: h.append((d["passes"], jac.subspace_cosine(d["V"].T, refk)))  # noqa: E731
                    if meth == "krylov":
                        r = jac.top_k_svd(op, k=k, seed=args.seed, callback=cb, max_passes=args.max_passes)
                    else:
                        r = jac.subspace_iteration(op, k=k, seed=args.seed, tol=1e-4, max_iters=50, callback=cb)
                    out[meth] = (r, jac.subspace_cosine(r.V, refk), first_reaching(hist))
                kr, kc, kf = out["krylov"]
                pw, pc, pf = out["power"]
                row = {"model": name, "n": m.n, "k": k, "t": t, "reference": ref_kind,
                       "krylov_passes": kr.passes, "krylov_calls": kr.batched_calls, "krylov_time_s": round(kr.wall_time_s, 3),
                       "krylov_cos": round(kc, 5), "krylov_converged": kr.converged, "krylov_passes_to_0.99": kf,
                       "power_passes": pw.passes, "power_time_s": round(pw.wall_time_s, 3), "power_cos": round(pc, 5),
                       "power_converged": pw.converged, "power_passes_to_0.99": pf,
                       "exact_passes": exact_row.passes if exact_row else None,
                       "exact_time_s": round(exact_row.wall_time_s, 3) if exact_row else None,
                       "pass_ratio_power_over_krylov": round(pw.passes / kr.passes, 2),
                       "time_ratio_power_over_krylov": round(pw.wall_time_s / max(kr.wall_time_s, 1e-9), 2),
                       "pass_ratio_exact_over_krylov": round(exact_row.passes / kr.passes, 2) if exact_row else None}
                rows.append(row)
                _write(args.out, rows)
                print(f"  k={k:2d}  krylov {kr.passes:5d} passes {kr.wall_time_s:7.2f} s cos {kc:.4f} (>=0.99 at {kf})"
                      f" | power {pw.passes:5d} passes {pw.wall_time_s:7.2f} s cos {pc:.4f} conv {pw.converged} (>=0.99 at {pf})"
                      f" | ratio passes {row['pass_ratio_power_over_krylov']}x time {row['time_ratio_power_over_krylov']}x"
                      + (f" | exact/krylov passes {row['pass_ratio_exact_over_krylov']}x" if exact_row else ""), flush=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
