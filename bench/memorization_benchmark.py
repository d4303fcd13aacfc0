"""Benchmark: ``benchmark memorization`` -- every detector side by side -- on the models this machine can
run, its reproducibility, and the cost of the SD v1.4 run a GPU user makes.

1. Tables (AUROC, TPR@1%FPR, TPR@3%FPR, seconds per image, images) from the command's own code path:
   * the tiny SD pipeline (SD v1.4's block layout at toy width, RANDOM weights: it memorizes nothing, so
     its AUROCs measure chance; it shows the pipeline end to end and the relative cost of the detectors)
     on the first ``--limit`` prompts of each shipped set, ``--images-per-prompt`` images each, 50 steps;
   * the built-in digit models (``digits-dup``, ``digits-mem``, ``digits-gen``): ``--samples`` fresh
     samples (seed ``--seed``; the shipped calibrations used seed 7) labelled by their nearest training
     image, every prompt-free detector (spikiness at the model's calibrated layer, denoising error, FLIPD).
2. Reproducibility on the tiny SD pipeline (3 prompts per set, 2 images, 10 steps): the same seed twice
   in this process and once under ``torchrun --nproc_per_node 2`` (gloo, CPU) -> per-image values and the
   table's quality columns compared exactly (seconds differ by nature and are left out).
3. SD v1.4 cost per image (``--sd``): FLOPs of one U-Net forward (64 x 64 latents), one VAE encode and
   one VAE decode at 512 px, counted by ``torch.utils.flop_counter`` on the exact architecture (meta
   device: nothing allocated), per detector and for the generation (50 steps x 2 for guidance), turned
   into H100 seconds with the throughput the same architecture reached there in fp16 at batch 32
   (``bench/results/gpu.csv``: U-Net forward 0.00361 s, VAE encode 0.0063 s per image) and, for the
   float32 passes of FLIPD and sharpness, the measured float32 JVP of that run (0.545 s for 5 directions,
   counted as 2.5 forwards each). These are estimates, not a run with the SD v1.4 weights.

Usage: python bench/memorization_benchmark.py [--limit 10] [--samples 384] [--seed 8] [--threads 2]
       [--skip tiny digits repro sd]   (rows of the skipped parts already in the results file are kept)
Writes bench/results/memorization_benchmark.csv (all parts) and one ROC figure per model
(bench/results/memorization_benchmark_<model>.png).
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lowdim_app.config import from_environment  # noqa: E402
from lowdim_app.features.benchmark_memorization import FEATURE, BenchmarkSettings  # noqa: E402

RESULTS = REPO / "bench" / "results"
MODELS = ["tiny-sd (random weights)", "digits-dup", "digits-mem", "digits-gen"]
FIELDS = ["part", "model", "detector", "auroc", "tpr_at_1pct_fpr", "tpr_at_3pct_fpr", "auroc_per_image",
          "s_per_image", "images", "units_memorized", "units_generalized", "direction", "note"]
# bench/results/gpu.csv (NVIDIA H100 80GB HBM3, fp16, SD v1.4 architecture with random weights, batch 32)
H100_UNET_FP16_S = 0.00361           # full U-Net forward from latents, s per image
H100_VAE_ENCODE_S = 0.00798 - 0.00167   # score incl. VAE encode - score from latents (early stop), s per image
H100_UNET_FP32_S = 0.5448 / (5 * 2.5)   # x0_hat JVP, 5 directions, fp32: one direction ~ 2.5 forwards


def run(model, out, **kw):
    return FEATURE.run(BenchmarkSettings.from_raw(model=str(model), out=str(out), **kw), runtime=from_environment())


def _round(v):
    """Numbers to 4 decimals (the files are read by people); text as it is."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return v if isinstance(v, (bool, int)) or float(f).is_integer() else round(f, 4)


def table_rows(res, part: str, label: str, note: str = "") -> list[dict]:
    return [{"part": part, "model": label, **{k: r[k] for k in FIELDS if k in r}, "note": note} for r in res.table]


def read(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def strip_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("_seconds") and k != "s_per_image"} for r in rows]


def reproducibility(tiny: Path, tmp: Path) -> list[dict]:
    small = dict(limit=3, images_per_prompt=2, steps=10)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                      # the torchrun processes run one thread each
    try:
        run(tiny, tmp / "a", **small)
        run(tiny, tmp / "b", **small)
    finally:
        torch.set_num_threads(threads)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), LOWDIM_DEVICE="cpu")
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                    "-m", "lowdim_app", "benchmark", "memorization", "--model", str(tiny), "--out", str(tmp / "c"),
                    "--limit", "3", "--images-per-prompt", "2", "--steps", "10", "--quiet"], env=env, check=True,
                   cwd=REPO, capture_output=True)
    out = []
    for name, other in (("same seed, second run", "b"), ("2 torchrun processes vs 1", "c")):
        same_rows = strip_timing(read(tmp / "a" / "scores.csv")) == strip_timing(read(tmp / other / "scores.csv"))
        same_table = strip_timing(read(tmp / "a" / "table.csv")) == strip_timing(read(tmp / other / "table.csv"))
        out.append({"part": "reproducibility", "model": "tiny-sd (random weights)", "detector": "all",
                    "images": len(read(tmp / other / "scores.csv")),
                    "note": f"{name}: per-image values identical {same_rows}; table identical {same_table}"})
        print(out[-1]["note"])
    return out


def sd14_estimate() -> list[dict]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    from lowdim_app.diffusion import architectures as A

    with torch.device("meta"):
        unet = UNet2DConditionModel(**A.sd_unet_config())
        vae = AutoencoderKL(**A.sd_vae_config())

    def flops(fn) -> float:
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            fn()
        return fc.get_total_flops() / 1e12

    z = torch.zeros(1, 4, 64, 64, device="meta")
    u = flops(lambda: unet(z, torch.tensor([50], device="meta"),
                           encoder_hidden_states=torch.zeros(1, 77, 768, device="meta")))
    enc = flops(lambda: vae.encode(torch.zeros(1, 3, 512, 512, device="meta")))
    dec = flops(lambda: vae.decode(z))
    tf_fp16 = u / H100_UNET_FP16_S          # TFLOP/s reached in fp16 (U-Net, batch 32)
    tf_enc = enc / H100_VAE_ENCODE_S
    tf_fp32 = u / H100_UNET_FP32_S
    steps, probes, first = 50, 1, 1
    rows = [
        ("generation (50 guided DDIM steps + VAE decode)", 2 * steps * u + dec, 2 * steps * u / tf_fp16 + dec / tf_enc),
        ("std / l4_l2 / entropy / max_min (VAE encode + early-stopped pass, counted as a full one)", enc + u,
         H100_VAE_ENCODE_S + 0.00167),
        ("denoising_error (VAE encode + 1 pass)", enc + u, H100_VAE_ENCODE_S + u / tf_fp16),
        ("flipd (VAE encode + 1 + 2 per probe float32 passes; 1 probe)", enc + (1 + 2 * probes) * u,
         H100_VAE_ENCODE_S + (1 + 2 * probes) * u / tf_fp32),
        ("text_noise_norm (2 passes per first step; 1 step)", 2 * first * u, 2 * first * u / tf_fp16),
        ("sharpness (6 float32 passes per first step; 1 step)", 6 * first * u, 6 * first * u / tf_fp32),
    ]
    out = [{"part": "sd-v1-4 estimate", "model": "CompVis/stable-diffusion-v1-4", "detector": what,
            "s_per_image": round(sec, 4), "note": f"{tf:.1f} TFLOP per image (counted); H100 seconds estimated"}
           for what, tf, sec in rows]
    total = sum(r[2] for r in rows)
    out.append({"part": "sd-v1-4 estimate", "model": "CompVis/stable-diffusion-v1-4", "detector": "everything",
                "s_per_image": round(total, 3), "images": 4000,
                "note": f"x 4000 images (500 + 500 prompts, n = 4) = {total * 4000 / 3600:.2f} GPU hours on one H100; "
                        f"U-Net forward {u:.3f} TFLOP, VAE encode {enc:.3f}, decode {dec:.3f}; fp16 {tf_fp16:.0f} TFLOP/s "
                        f"(measured at batch 32, generation runs at batch 8), float32 {tf_fp32:.0f} TFLOP/s"})
    for r in out:
        print(f"  {r['detector']:<70s} {r['s_per_image']:>8} s  {r['note']}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=10, help="tiny SD: prompts per set")
    ap.add_argument("--images-per-prompt", type=int, default=4)
    ap.add_argument("--samples", type=int, default=384, help="digit models: samples")
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip", nargs="*", default=[], choices=["tiny", "digits", "repro", "sd"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(exist_ok=True)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        from lowdim_app.diffusion.tiny import build_tiny_sd_pipeline

        tiny = build_tiny_sd_pipeline(tmp / "tiny-sd")
        if "tiny" not in args.skip:
            res = run(tiny, tmp / "tiny-run", limit=args.limit, images_per_prompt=args.images_per_prompt, steps=50,
                      seed=args.seed)
            print(res.summary())
            rows += table_rows(res, "table", "tiny-sd (random weights)",
                               f"{args.limit}+{args.limit} prompts, n = {args.images_per_prompt}, 50 steps, guidance 7.5; "
                               f"generation {res.gen_s_per_image:.3g} s/image")
            shutil.copy(tmp / "tiny-run" / "roc.png", RESULTS / "memorization_benchmark_tiny-sd.png")
        if "digits" not in args.skip:
            for mid in ("digits-dup", "digits-mem", "digits-gen"):
                res = run(mid, tmp / mid, samples=args.samples, images_per_prompt=32, steps=50, seed=args.seed,
                          noise_draws=4)
                print(res.summary())
                rows += table_rows(res, "table", mid, f"{args.samples} samples (seed {args.seed}), 4 draws, 50 steps; "
                                                      f"generation {res.gen_s_per_image:.3g} s/image")
                if (tmp / mid / "roc.png").is_file():
                    shutil.copy(tmp / mid / "roc.png", RESULTS / f"memorization_benchmark_{mid}.png")
        if "repro" not in args.skip:
            rows += reproducibility(tiny, tmp)
    if "sd" not in args.skip:
        rows += sd14_estimate()
    path = RESULTS / "memorization_benchmark.csv"
    redone = {(r["part"], r["model"]) for r in rows}           # rows of the parts skipped now are kept
    kept = [r for r in read(path) if (r["part"], r["model"]) not in redone] if path.is_file() else []
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS, extrasaction="ignore")
        w.writeheader()
        parts = ["table", "reproducibility", "sd-v1-4 estimate"]
        order = sorted(kept + rows, key=lambda r: (parts.index(r["part"]), MODELS.index(r["model"])
                                                   if r["model"] in MODELS else len(MODELS)))
        w.writerows([{k: _round(v) for k, v in r.items()} for r in order])
    print(f"wrote {RESULTS / 'memorization_benchmark.csv'} (threads {args.threads}, load "
          f"{os.getloadavg()[0]:.1f} at the end)")


if __name__ == "__main__":
    main()
