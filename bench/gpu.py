"""GPU smoke test and timings (run on a CUDA machine; CI never runs this).

1. Smoke: the library on CUDA against CPU on the built-in digit models -- DDIM samples, memorization
   scores, steering, the top-5 Jacobian singular values -- and the tiny SD pipeline in fp16 (sample,
   score, steer, Wen et al. norm). Prints the largest CPU/GPU differences.
2. Timings on a Stable-Diffusion-v1.4-shaped pipeline (real UNet/VAE/CLIP-L-text shapes, RANDOM
   WEIGHTS, fp16) at 512 px (64x64 latents): the memorization score per image with the forward stopped
   after ``up_blocks.0.resnets.2`` vs the full U-Net forward (with and without the VAE encode), at
   batch 1 and 32, next to Zhang et al. 2025's 0.067 s per image (Table 1); the Wen et al. 2024 norm per prompt; one
   batched JVP + VJP pass of ``x0_hat`` (k = 5 directions, float32, math attention) and a top-5
   Jacobian SVD. CUDA events after warm-up; the median of ``--repeats``.

Usage: python bench/gpu.py [--repeats 10] [--out bench/results/gpu.csv]
"""
from __future__ import annotations

import argparse
import csv
import statistics
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
from lowdim_app.methods import jacobian as jac  # noqa: E402
from lowdim_app.methods import memorization as mz  # noqa: E402
from lowdim_app.methods import steering as st  # noqa: E402
from lowdim_app.methods.memorization_baselines import denoising_error, text_guidance_norm  # noqa: E402

PAPER_S_PER_IMAGE = 0.067


class _Rows(list):
    """Rows printed as they come (a failure later still leaves the earlier results in the log)."""

    def append(self, r):
        super().append(r)
        print(f"{r['part']:6s} {r['what']:<70s} {r['value']}" + (f"  ({r['vs_paper_0.067s']}x paper)" if "vs_paper_0.067s" in r else ""),
              flush=True)


def _smoke(rows: list) -> None:
    for mid in ("digits-gen", "digits-dup"):
        cpu, gpu = load_model(mid, "cpu"), load_model(mid, "cuda")
        a, b = cpu.generate(8, seed=0, steps=50), gpu.generate(8, seed=0, steps=50).cpu()
        rows.append({"part": "smoke", "what": f"{mid} DDIM samples, max |cpu - gpu|", "value": float((a - b).abs().max())})
        layer = mz.default_layer(cpu, Runtime().assets)
        sa, sb = mz.scores(cpu, a, layer), mz.scores(gpu, a, layer)
        rows.append({"part": "smoke", "what": f"{mid} spikiness, max rel. diff", "value": float(np.max(np.abs(sa - sb) / np.abs(sa)))})
        x = cpu.randn(1, 3)
        t = cpu.timestep_from_fraction(0.7)
        ja = jac.jacobian_of_x0_hat(cpu, cpu.add_noise(a[:1], t, x), t, k=5, method="krylov")
        jb = jac.jacobian_of_x0_hat(gpu, gpu.add_noise(a[:1].cuda(), t, x.cuda()), t, k=5, method="krylov")
        rel = (ja.singular_values.cpu() - jb.singular_values.cpu()).abs() / ja.singular_values.cpu()
        rows.append({"part": "smoke", "what": f"{mid} top-5 Jacobian singular values, max rel. diff", "value": float(rel.max())})
    concept, base = st.digit_concept(4, 100)
    model = load_model("digits-dup", "cuda")
    sv = st.steering_vector(model, concept, st.DIGITS_LAYERS, 10, "spatial", None, base)
    imgs = st.steered_samples(model, model.randn(1, 1), sv, [0.0, 1.5], steps=40, window=20)
    p = st.concept_strength_digits(imgs.cpu(), 4)
    rows.append({"part": "smoke", "what": "digits-dup steering to digit 4 on GPU: P(4) at a = 0 -> 1.5",
                 "value": f"{p[0]:.3f} -> {p[1]:.3f}"})
    from lowdim_app.diffusion.tiny import build_tiny_sd_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        sd = load_model(str(build_tiny_sd_pipeline(Path(tmp) / "sd")), "cuda")
        img = sd.generate(2, seed=0, steps=10, cond=sd.encode_prompt("a cat", guidance_scale=3.5))
        s = mz.scores(sd, img, mz.SD_DEFAULT_LAYER)
        svt = st.steering_vector(sd, img, cond=sd.encode_prompt("a cat"))
        out = st.steered_samples(sd, sd.randn(1, 1), svt, [0.0, 4.0], steps=10, window=5,
                                 cond=sd.encode_prompt("", guidance_scale=3.5))
        w = text_guidance_norm(sd, ["a cat"], steps=10)
        rows.append({"part": "smoke", "what": "tiny SD fp16 on GPU: sample/score/steer/Wen finite",
                     "value": bool(torch.isfinite(img).all() and np.isfinite(s).all() and torch.isfinite(out).all()
                                   and np.isfinite(w).all())})


def sd_v14_shaped(device="cuda", dtype=torch.float16):
    """A pipeline with SD v1.4's UNet, VAE and CLIP-L text-encoder shapes and random weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from lowdim_app.diffusion.model import DiffusionModel
    from lowdim_app.diffusion.tiny import SD_SCHEDULER, SD_V14_DOWN, SD_V14_UP, TOKENIZER_FIXTURE

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                                block_out_channels=(320, 640, 1280, 1280), down_block_types=SD_V14_DOWN,
                                up_block_types=SD_V14_UP, cross_attention_dim=768, attention_head_dim=8)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=2, sample_size=512)
    tok = CLIPTokenizer(vocab=str(TOKENIZER_FIXTURE / "vocab.json"), merges=str(TOKENIZER_FIXTURE / "merges.txt"),
                        model_max_length=77)
    te = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=3072,
                                      num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
                                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                      pad_token_id=tok.pad_token_id))
    n_params = sum(p.numel() for p in unet.parameters())
    model = DiffusionModel("sd-v1.4-shaped (random weights)", unet.to(device, dtype), dict(SD_SCHEDULER),
                           vae=vae.to(device, dtype), text_encoder=te.to(device, dtype), tokenizer=tok,
                           device=device, dtype=dtype)
    return model, n_params


def _cuda_time(fn, repeats: int) -> float:
    fn()
    fn()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / 1000)
    return statistics.median(times)


@torch.no_grad()
def _full(model, x0, layer, t=50):
    xt = model.add_noise(x0, t, model.randn(len(x0), 0)).to(model.dtype)
    c = model.default_conditioning()
    with capture(model.unet, [layer]) as cap:
        model.unet_call(xt, t, c.cond.expand(len(xt), -1, -1))
    return spikiness(cap.outputs[layer][0].float().amax(dim=(2, 3)), "std")


def _timings(rows: list, repeats: int) -> None:
    model, n_params = sd_v14_shaped()
    rows.append({"part": "sd", "what": "UNet parameters", "value": n_params})
    layer = mz.SD_DEFAULT_LAYER
    for b in (1, 32):
        imgs = (torch.rand(b, 3, 512, 512, generator=torch.Generator().manual_seed(b)) * 2 - 1).cuda()
        x0 = model.encode(imgs)
        with torch.no_grad():
            early = lambda: mz.representations(model, imgs, layer, batch_size=b)  # noqa: E731
            early_lat = lambda: _early_latent(model, x0, layer)  # noqa: E731
            full_lat = lambda: _full(model, x0, layer)  # noqa: E731
            err = lambda: denoising_error(model, imgs, 50, batch_size=b)  # noqa: E731
            for what, fn in (("score incl. VAE encode, early stop", early), ("score from latents, early stop", early_lat),
                             ("score from latents, full forward", full_lat), ("denoising error incl. VAE encode", err)):
                s = _cuda_time(fn, repeats) / b
                rows.append({"part": "sd", "what": f"{what}, batch {b}, s/image", "value": round(s, 5),
                             "vs_paper_0.067s": round(s / PAPER_S_PER_IMAGE, 3)})
    s = _cuda_time(lambda: text_guidance_norm(model, ["a photo of a cat"], steps=50, first=1), repeats)
    rows.append({"part": "sd", "what": "Wen et al. norm (first step), s/prompt", "value": round(s, 5)})
    # Jacobian: one batched JVP + VJP pass of x0_hat in float32 (k = 5), and a top-5 SVD
    t = model.timestep_from_fraction(0.7)
    x_t = model.randn(1, 0)
    cond = model.encode_prompt("a photo of a cat")
    op = jac.x0_hat_operator(model, x_t, t, cond, math_attention=True)
    V = torch.randn(5, *model.sample_shape, device="cuda")
    with model.forward_ad_safe():
        s_jvp = _cuda_time(lambda: op.jvp(V), max(3, repeats // 3))
        s_vjp = _cuda_time(lambda: op.vjp(V), max(3, repeats // 3))
        t0 = time.perf_counter()
        r = jac.jacobian_svd(op, k=5, method="krylov", max_passes=400)
        torch.cuda.synchronize()
        s_svd = time.perf_counter() - t0
    rows.append({"part": "sd", "what": "x0_hat JVP, 5 directions (fp32), s", "value": round(s_jvp, 4)})
    rows.append({"part": "sd", "what": "x0_hat VJP, 5 directions (fp32), s", "value": round(s_vjp, 4)})
    rows.append({"part": "sd", "what": f"top-5 Jacobian SVD (Krylov, {r.passes} network evaluations), s",
                 "value": round(s_svd, 2)})


@torch.no_grad()
def _early_latent(model, x0, layer, t=50):
    from lowdim_app.diffusion.hooks import run_until

    xt = model.add_noise(x0, t, model.randn(len(x0), 0)).to(model.dtype)
    c = model.default_conditioning()
    h = run_until(model.unet, layer, xt, torch.full((len(xt),), t, device=xt.device),
                  encoder_hidden_states=c.cond.expand(len(xt), -1, -1))
    return spikiness(h.float().amax(dim=(2, 3)), "std")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--skip-smoke", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "gpu.csv"))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    rows = _Rows()
    rows.append({"part": "device", "what": torch.cuda.get_device_name(), "value": torch.__version__})
    if not args.skip_smoke:
        _smoke(rows)
    _timings(rows, args.repeats)
    keys = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
