"""Benchmark: memorization detection from representation spikiness (Zhang et al. 2025, §4.1, Table 1).

Two parts, side by side in one run:

1. Detection quality (AUROC, TPR at 1% FPR) on the built-in models with known ground truth, using
   the seeded reference sets of ``methods.memorization_builtin.reference_sets`` (memorized /
   generalized by nearest-training-image RMS distance < 0.07 / > 0.10):
     * spikiness -- std of the global-max-pooled activation at the calibrated layer, t = 50
       (the paper's score; its Table 1 CIFAR10-EDM row is 0.998 / 0.984, printed alongside);
     * denoising error -- ``||eps_hat(x_t, t) - eps||^2`` (loss-threshold baseline) at t = 50 and
       t = 200, 4 noise draws;
     * Wen et al. 2024 (cond - uncond noise-prediction norm) is a text-model detector: timed on the
       tiny SD pipeline (random weights, so no ground truth there and no AUROC).
2. Throughput (images/s, CPU, this process's threads) at batch 1 and batch 256 of the spikiness
   score with the forward stopped after the hooked layer vs the full U-Net forward (ratio), for
   digits-gen (1x16x16), a CIFAR-shaped U-Net (3x32x32, random weights) and the tiny SD pipeline
   (128 px images through its VAE to 4x16x16 latents, random weights). Each timing is the best of
   ``--repeats`` runs.

Usage: python bench/memorization.py [--quick] [--threads 2]
Writes bench/results/memorization.csv (one row per measurement) and prints the tables.
"""
from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lowdim_app.config import Runtime  # noqa: E402
from lowdim_app.metrics import spikiness  # noqa: E402
from lowdim_app.diffusion import load_model  # noqa: E402
from lowdim_app.diffusion.hooks import capture  # noqa: E402
from lowdim_app.methods import memorization as mz  # noqa: E402
from lowdim_app.methods.memorization_baselines import denoising_error, text_guidance_norm  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "memorization.csv"
PAPER = {"detector": "spikiness std (paper Table 1, CIFAR10-EDM)", "auroc": 0.998, "tpr_at_1pct_fpr": 0.984}


def _quality(model_id: str, rows: list, quick: bool) -> None:
    from lowdim_app.methods.memorization_builtin import reference_sets

    model = load_model(model_id)
    cal = mz.default_calibration(model_id, Runtime().assets)
    mem, gen, how = reference_sets(model, n=128 if quick else 384)
    print(f"{model_id}: {len(mem)} memorized / {len(gen)} generalized ({how})")
    layer = next((d["layer"] for d in cal.detectors if d["metric"] == "std"), cal.layer)   # the std detector's layer
    detectors = {f"spikiness std @ {layer}, t=50": lambda x: mz.scores(model, x, layer, 50, "std")}
    for t in (50, 200):
        detectors[f"denoising error, t={t}, 4 draws"] = lambda x, t=t: denoising_error(model, x, t, n_noise=4)
    for name, fn in detectors.items():
        c = mz.calibrate(fn(mem), fn(gen), model_id, "-", 50, "-")
        rows.append({"part": "quality", "model": model_id, "detector": name, "n_memorized": len(mem),
                     "n_generalized": len(gen), "auroc": round(c.auroc, 4), "tpr_at_1pct_fpr": round(c.tpr_at_1pct_fpr, 4),
                     "direction": "higher = memorized" if c.direction > 0 else "lower = memorized"})


class _Cifar:
    """A CIFAR-shaped pixel U-Net (3x32x32, random weights) behind the DiffusionModel interface."""

    @staticmethod
    def build(seed: int = 0):
        from diffusers import DDPMScheduler, UNet2DModel

        from lowdim_app.diffusion.model import DiffusionModel

        torch.manual_seed(seed)
        unet = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
                           block_out_channels=(64, 128, 128),
                           down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                           up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))
        return DiffusionModel("cifar-unet (random weights)", unet, dict(DDPMScheduler(num_train_timesteps=1000).config))


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


@torch.no_grad()
def _full_forward_scores(model, images, layer: str, t: int = 50) -> np.ndarray:
    """The same score with the whole U-Net run (the hook captures the layer, the rest is wasted)."""
    x0 = model.encode(images)
    xt = model.add_noise(x0, t, model.randn(len(x0), 0))
    c = model.default_conditioning()
    with capture(model.unet, [layer]) as cap:
        model.unet_call(xt, t, None if c is None else c.cond.expand(len(xt), -1, -1))
    return spikiness(cap.outputs[layer][0].float().amax(dim=(2, 3)), "std").numpy()


def _throughput(label: str, model, layer: str, batches: list[int], repeats: int, rows: list) -> None:
    c, h, w = model.image_shape
    for b in batches:
        imgs = torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(b)) * 2 - 1
        # early stop and full forward must agree before we compare their speed
        a, f = mz.scores(model, imgs[:4], layer, 50, "std", batch_size=256), _full_forward_scores(model, imgs[:4], layer)
        assert np.allclose(a, f, rtol=1e-4, atol=1e-6), (a, f)
        t_stop = _best(lambda: mz.scores(model, imgs, layer, 50, "std", batch_size=256), repeats)
        t_full = _best(lambda: _full_forward_scores(model, imgs, layer), repeats)
        t_err = _best(lambda: denoising_error(model, imgs, 50, batch_size=256), repeats)
        rows.append({"part": "throughput", "model": label, "layer": layer, "batch": b,
                     "early_stop_img_s": round(b / t_stop, 2), "full_forward_img_s": round(b / t_full, 2),
                     "speedup": round(t_full / t_stop, 2), "denoising_error_img_s": round(b / t_err, 2),
                     "s_per_image_early_stop": round(t_stop / b, 5)})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="128 reference samples, batch 1 and 32, 1 repeat")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows: list[dict] = []

    for mid in ("digits-dup", "digits-mem"):
        _quality(mid, rows, args.quick)

    from lowdim_app.diffusion.tiny import build_tiny_sd_pipeline

    batches = [1, 32] if args.quick else [1, 256]
    repeats = 1 if args.quick else args.repeats
    with tempfile.TemporaryDirectory() as tmp:
        sd = load_model(str(build_tiny_sd_pipeline(Path(tmp) / "tiny-sd")))
        digits = load_model("digits-gen")
        _throughput("digits-gen", digits, mz.default_layer(digits, Runtime().assets), batches, repeats, rows)
        _throughput("cifar-unet (random weights)", _Cifar.build(), "up_blocks.1.resnets.0", batches, repeats, rows)
        _throughput("tiny-sd (random weights)", sd, mz.SD_DEFAULT_LAYER, batches, repeats, rows)
        prompts = [f"a photo of object {i}" for i in range(8)]
        t_wen = _best(lambda: text_guidance_norm(sd, prompts, steps=50, first=1), repeats)
        rows.append({"part": "throughput", "model": "tiny-sd (random weights)", "layer": "-", "batch": 1,
                     "detector": "Wen et al. 2024 cond-uncond norm (first step)",
                     "s_per_image_early_stop": round(t_wen / len(prompts), 5)})

    keys = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)

    print("\nDetection quality (AUROC, TPR@1%FPR)")
    print(f"  {'model':<12} {'detector':<48} {'AUROC':>7} {'TPR@1%':>7}  direction")
    print(f"  {'CIFAR10-EDM':<12} {PAPER['detector']:<48} {PAPER['auroc']:>7.3f} {PAPER['tpr_at_1pct_fpr']:>7.3f}  (paper)")
    for r in rows:
        if r["part"] == "quality":
            print(f"  {r['model']:<12} {r['detector']:<48} {r['auroc']:>7.3f} {r['tpr_at_1pct_fpr']:>7.3f}  {r['direction']}")
    print(f"\nThroughput, CPU, {args.threads} threads (images/s; best of {repeats})")
    print(f"  {'model':<28} {'batch':>5} {'early stop':>11} {'full fwd':>9} {'ratio':>6} {'denoise err':>11}")
    for r in rows:
        if r["part"] == "throughput" and "speedup" in r:
            print(f"  {r['model']:<28} {r['batch']:>5} {r['early_stop_img_s']:>11.1f} {r['full_forward_img_s']:>9.1f} "
                  f"{r['speedup']:>6.2f} {r['denoising_error_img_s']:>11.1f}")
        elif r["part"] == "throughput":
            print(f"  {r['model']:<28} Wen et al. norm: {r['s_per_image_early_stop']:.4f} s/prompt")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
