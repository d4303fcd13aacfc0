"""Benchmark: memory per JVP/VJP direction of J_t = d x0_hat / d x_t on the exact architectures, the
central-difference JVP's accuracy, and the projected CUDA peak of SD v1.4 at 512 px with k = 5.

Parts (all on the CPU, random weights; ``--parts`` picks some):

* ``memory``: one child process per configuration (architecture, width, sample size, kind, directions
  ``b``) builds the U-Net from its exact config (``lowdim_app.diffusion.architectures``), makes one
  batched call of the library's :class:`~lowdim_app.methods.jacobian.JacobianOperator` and reports
  ``ru_maxrss - RSS before the call`` (glibc with ``MALLOC_MMAP_THRESHOLD_=65536``, so freed blocks go
  back to the OS at once and the peak RSS is the peak of live tensors, which is what
  ``torch.cuda.max_memory_allocated`` measures on CUDA). Per-direction bytes = delta(b=2) - delta(b=1).
  Kinds: ``forward`` (no-grad forward, reference), ``jvp_forward`` (exact forward-mode AD, classic
  attention -- the old path), ``jvp_central`` (central difference, fused attention), ``vjp`` (reverse
  mode, fused SDPA), ``vjp_math`` (reverse mode under classic attention -- the old path), ``vjp_ckpt``
  (reverse mode with diffusers gradient checkpointing), ``vae_decode`` / ``vae_encode`` (SD's VAE at
  512 px, per image).
* ``fit``: per kind, ``bytes per direction = a * A + q * Q`` (``A``, ``Q``: the model's activation
  profile -- leaf-module output bytes and attention-map bytes of one float32 forward, from a meta-device
  trace) by least squares over every measured (architecture, size); prints measured / predicted.
* ``central``: ``(f(x + h v) - f(x - h v)) / 2h`` against ``torch.func.jvp`` on the tiny SD and a
  reduced-width SD v1.4 U-Net (``width=4``: channels / 4, the real module names; ``width=8`` does not
  build, its text encoder's width 64 is not the U-Net's cross-attention width 96; latent 32 and 64) at t = 100, 500, 900 over a grid of
  relative steps ``h``; and the top-5 Krylov SVD of the tiny SD with either JVP.
* ``projection``: the CUDA peak of ``edit`` on SD v1.4 at 512 px (64x64 latents) with k = 5 under the
  default budget rule of a 24 GB card.

Usage: python bench/jacobian_memory.py [--parts memory,fit,central,projection] [--quick] [--threads 1]
Writes bench/results/jacobian_memory.csv (memory rows are kept from earlier runs unless re-measured).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
OUT = REPO / "bench" / "results" / "jacobian_memory.csv"
GIB = 2 ** 30
FIELDS = ["part", "arch", "width", "size", "n", "kind", "b", "t", "h", "value", "unit", "seconds", "note"]

# (arch, width, size, kinds, directions): the law is fitted on reduced sizes and checked at full size
KINDS_ALL = ("forward", "jvp_forward", "jvp_central", "vjp", "vjp_math", "vjp_ckpt")
CONFIGS = [
    ("cifar10", 1, 32, KINDS_ALL, (1, 2)),
    ("celebahq", 1, 64, KINDS_ALL, (1, 2)),
    ("celebahq", 1, 128, ("jvp_central", "vjp", "vjp_ckpt"), (1, 2)),
    ("celebahq", 1, 256, ("jvp_central", "vjp"), (1, 2)),
    ("sd-v1-4", 1, 16, KINDS_ALL, (1, 2)),
    ("sd-v1-4", 1, 32, KINDS_ALL, (1, 2)),
    ("sd-v1-4", 1, 64, ("jvp_central", "vjp"), (1, 2)),
    ("sd-v1-4", 1, 64, ("jvp_forward", "vjp_math"), (1,)),
    ("sd-vae", 1, 512, ("vae_decode", "vae_encode"), (1, 2)),
]
CHILD_TIMEOUT = 1800
CENTRAL_WIDTH = 4
QUICK = [c for c in CONFIGS if c[0] == "cifar10" or (c[0] == "sd-v1-4" and c[2] == 16)]


# ------------------------------------------------------------------------------ child process
def _rss() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0


def build_model(arch: str, width: int, size: int):
    """A DiffusionModel (float32, CPU, random weights) of the exact architecture, and its conditioning."""
    import torch
    from diffusers import UNet2DConditionModel, UNet2DModel

    from lowdim_app.diffusion import architectures as A
    from lowdim_app.diffusion.model import Conditioning, DiffusionModel

    torch.manual_seed(0)
    if arch == "sd-v1-4":
        unet = UNet2DConditionModel(**A.sd_unet_config(width, size))
        sched = dict(A.SD_SCHEDULER)
        g = torch.Generator().manual_seed(0)
        cond = Conditioning(torch.randn(1, 77, unet.config.cross_attention_dim, generator=g))
    else:
        unet = UNet2DModel(**A.pixel_unet_config(arch, width, size))
        sched, cond = dict(A.DDPM_SCHEDULER), None
    return DiffusionModel(f"{arch}-w{width}-s{size}", unet, sched), cond


def child(arch: str, width: int, size: int, kind: str, b: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from lowdim_app.methods import jacobian as jac

    if kind.startswith("vae_"):
        from diffusers import AutoencoderKL

        from lowdim_app.diffusion import architectures as A

        torch.manual_seed(0)
        vae = AutoencoderKL(**A.sd_vae_config(width, size)).eval().requires_grad_(False)
        x = torch.randn(b, 4, size // 8, size // 8) if kind == "vae_decode" else torch.randn(b, 3, size, size)
        before = _rss()
        t0 = time.perf_counter()
        with torch.no_grad():
            _ = vae.decode(x).sample if kind == "vae_decode" else vae.encode(x).latent_dist.mean
        return {"before": before, "peak": _maxrss(), "seconds": time.perf_counter() - t0, "n": 3 * size * size}
    model, cond = build_model(arch, width, size)
    prof = model.activation_profile()
    t = 699
    g = torch.Generator().manual_seed(1)
    x_t = torch.randn(model.sample_shape, generator=g)
    V = torch.randn(b, *model.sample_shape, generator=g)
    mode = "central" if kind == "jvp_central" else "forward"
    op = jac.x0_hat_operator(model, x_t, t, cond, jvp_mode=mode, chunk_size=None)
    before = _rss()
    t0 = time.perf_counter()
    if kind == "forward":
        with torch.no_grad():
            model.x0_hat(x_t.expand(b, *model.sample_shape).contiguous(), t, cond, dtype=torch.float32)
    elif kind.startswith("jvp_"):
        op.jvp(V)
    elif kind == "vjp":
        op.vjp(V)
    elif kind == "vjp_math":
        with model.forward_ad_safe():
            op.vjp(V)
    elif kind == "vjp_ckpt":
        model.unet.enable_gradient_checkpointing()
        xb = x_t.expand(b, *model.sample_shape).clone().requires_grad_(True)
        with torch.enable_grad():
            y = model.x0_hat(xb, t, cond, dtype=torch.float32)
            torch.autograd.grad(y, xb, V)
    else:
        raise SystemExit(f"unknown kind {kind}")
    return {"before": before, "peak": _maxrss(), "seconds": time.perf_counter() - t0, "n": model.n,
            "activations": prof["activations"], "attention": prof["attention"], "largest": prof["largest"]}


def run_child(arch, width, size, kind, b, threads) -> dict:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO),
               HF_HUB_OFFLINE="1")
    cmd = [sys.executable, __file__, "--child", json.dumps([arch, width, size, kind, b, threads])]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT)
    if r.returncode != 0:
        raise RuntimeError(f"{arch} {size} {kind} b={b} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ parts
def part_memory(configs, threads, rows: list) -> None:
    done = {(r["arch"], int(r["width"]), int(r["size"]), r["kind"]) for r in rows if r["part"] == "per_direction"}
    done |= {(r["arch"], int(r["width"]), int(r["size"]), r["kind"], int(r["b"])) for r in rows if r["part"] == "memory"}
    for arch, width, size, kinds, bs in configs:
        for kind in kinds:
            if (arch, width, size, kind) in done or all((arch, width, size, kind, b) in done for b in bs):
                print(f"memory {arch} w{width} {size} {kind}: kept from the CSV", flush=True)
                continue
            deltas = {}
            for b in bs:
                try:
                    r = run_child(arch, width, size, kind, b, threads)
                except (RuntimeError, subprocess.TimeoutExpired) as err:
                    msg = str(err).strip().splitlines()[-1][:300]
                    rows.append(dict(part="memory", arch=arch, width=width, size=size, kind=kind, b=b, value="",
                                     unit="failed", note=msg))
                    print(f"memory {arch} w{width} {size} {kind} b={b}: FAILED {msg}", flush=True)
                    break
                delta = max(0.0, r["peak"] - r["before"])
                deltas[b] = delta
                rows.append(dict(part="memory", arch=arch, width=width, size=size, n=r["n"], kind=kind, b=b,
                                 value=round(delta / GIB, 4), unit="GiB peak RSS delta",
                                 seconds=round(r["seconds"], 2),
                                 note=json.dumps({k: round(r[k] / GIB, 4) for k in ("activations", "attention", "largest")
                                                  if k in r})))
                print(f"memory {arch:9s} w{width} {size:4d} {kind:12s} b={b}: {delta / GIB:7.3f} GiB "
                      f"({r['seconds']:.1f} s)", flush=True)
            if 1 in deltas and 2 in deltas:
                per = deltas[2] - deltas[1]
                rows.append(dict(part="per_direction", arch=arch, width=width, size=size, n=r["n"], kind=kind,
                                 value=round(per / GIB, 4), unit="GiB per direction",
                                 note=json.dumps({"intercept_gib": round((deltas[1] - per) / GIB, 4),
                                                  **({k: round(r[k] / GIB, 4) for k in ("activations", "attention")
                                                      if k in r})})))
                print(f"  -> per direction {per / GIB:.3f} GiB, intercept {(deltas[1] - per) / GIB:.3f} GiB", flush=True)


def _per_direction(rows):
    out = []
    for r in rows:
        if r["part"] == "per_direction" and not r["kind"].startswith("vae"):
            note = json.loads(r["note"])
            out.append((r, float(r["value"]), note["activations"], note["attention"]))
    return out


def part_fit(rows: list) -> dict:
    """Per kind: least squares (relative error) of per-direction GiB on (A, Q), and the upper envelope.

    The envelope is the law ``a * A + q * Q`` with the least total relative over-prediction that is at
    or above every measured point (a linear programme; ``a = max(m / A)`` for the kinds without an
    attention term). Reverse mode (``vjp*``) stores the activations, so its bytes are a sum and follow
    ``A`` closely; a no-grad or forward-mode call only holds a peak of live tensors, which depends on
    how the architecture spreads its activations, so for those kinds the least-squares line is a poor
    predictor across architectures and the plan uses the envelope (never below a measurement).
    """
    import numpy as np
    from scipy.optimize import linprog

    data = _per_direction(rows)
    fits = {}
    for kind in sorted({r["kind"] for r, *_ in data}):
        pts = [(m, a, q) for r, m, a, q in data if r["kind"] == kind]
        M = np.array([[a, q] for _, a, q in pts]) / np.array([[m] for m, _, _ in pts])
        y = np.ones(len(pts))
        two = kind in ("jvp_forward", "vjp_math")          # classic attention materialises the maps
        if not two:   # fused attention: no attention-map term
            coef = np.array([float(np.linalg.lstsq(M[:, :1], y, rcond=None)[0][0]), 0.0])
            env = np.array([float(max(m / a for m, a, _ in pts)), 0.0])
        else:
            coef = np.clip(np.linalg.lstsq(M, y, rcond=None)[0], 0, None)
            lp = linprog(c=M.sum(axis=0), A_ub=-M, b_ub=-y, bounds=[(0, None), (0, None)])
            env = lp.x if lp.success else coef * max(m / (coef[0] * a + coef[1] * q) for m, a, q in pts)
        ratios = [m / (coef[0] * a + coef[1] * q) for m, a, q in pts]
        env_ratios = [m / (env[0] * a + env[1] * q) for m, a, q in pts]
        fits[kind] = {"a": float(coef[0]), "q": float(coef[1]), "max_ratio": float(max(ratios)),
                      "min_ratio": float(min(ratios)), "envelope_a": float(env[0]), "envelope_q": float(env[1]),
                      "envelope_min_ratio": float(min(env_ratios)), "envelope_max_ratio": float(max(env_ratios))}
        rows.append(dict(part="fit", kind=kind, value=json.dumps({k: round(v, 4) for k, v in fits[kind].items()}),
                         unit="bytes/direction = a*A + q*Q; least squares and upper envelope; measured/predicted range",
                         note=f"{len(pts)} points"))
        print(f"fit {kind:12s} least squares a = {coef[0]:.4f}, q = {coef[1]:.4f}: measured/predicted "
              f"{min(ratios):.2f} .. {max(ratios):.2f}; envelope a = {env[0]:.4f}, q = {env[1]:.4f}: "
              f"{min(env_ratios):.2f} .. {max(env_ratios):.2f} over {len(pts)} points", flush=True)
        for (r, m, a, q), ratio, er in zip([d for d in data if d[0]["kind"] == kind], ratios, env_ratios):
            print(f"    {r['arch']:9s} {int(r['size']):4d}: measured {m:.4f} GiB, least squares {m / ratio:.4f}, "
                  f"envelope {m / er:.4f}", flush=True)
    return fits


def part_central(rows: list, threads: int, quick: bool) -> None:
    import torch

    torch.set_num_threads(threads)
    from lowdim_app.diffusion import architectures as A
    from lowdim_app.diffusion import load_model
    from lowdim_app.diffusion.model import Conditioning
    from lowdim_app.diffusion.tiny import build_tiny_sd_pipeline
    from lowdim_app.methods import jacobian as jac
    from lowdim_app.metrics import subspace_cosine

    hs = (3e-2, 1e-2, 5e-3, 3e-3, 2e-3, 1e-3, 3e-4)
    tmp = Path(tempfile.mkdtemp())
    tiny = load_model(str(build_tiny_sd_pipeline(tmp / "tiny")), "cpu")
    cases = [("tiny-sd", 1, 16, tiny, tiny.encode_prompt("a cat"), (100, 500, 900))]
    for size, ts in ((32, (100, 500, 900)), (64, (500,))):
        if quick and size == 64:
            continue
        m = load_model(str(A.build("sd-v1-4", tmp / f"w{CENTRAL_WIDTH}-{size}", width=CENTRAL_WIDTH, sample_size=size)),
                       "cpu")
        g = torch.Generator().manual_seed(0)
        cond = Conditioning(torch.randn(1, 77, m.unet.config.cross_attention_dim, generator=g))
        cases.append(("sd-v1-4", CENTRAL_WIDTH, size, m, cond, ts))
    for arch, width, size, m, cond, ts in cases:
        for t in ts:
            g = torch.Generator().manual_seed(t)
            x = torch.randn(m.sample_shape, generator=g)
            V = torch.randn(3, *m.sample_shape, generator=g)
            V = V / V.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            exact = jac.x0_hat_operator(m, x, t, cond, jvp_mode="forward", chunk_size=None)
            t0 = time.perf_counter()
            jv = exact.jvp(V)
            s_exact = time.perf_counter() - t0
            for h in hs:
                op = jac.x0_hat_operator(m, x, t, cond, jvp_mode="central", fd_step=h, chunk_size=None)
                t0 = time.perf_counter()
                fd = op.jvp(V)
                s_fd = time.perf_counter() - t0
                rel = float(((fd - jv).flatten(1).norm(dim=1) / jv.flatten(1).norm(dim=1)).max())
                rows.append(dict(part="central", arch=arch, width=width, size=size, n=m.n, kind="rel_error", b=3, t=t,
                                 h=h, value=f"{rel:.3e}", unit="max relative error vs torch.func.jvp",
                                 seconds=round(s_fd, 3), note=f"torch.func.jvp {s_exact:.3f} s"))
                print(f"central {arch} w{width} {size} t={t} h={h:g}: rel. error {rel:.2e}  "
                      f"(central {s_fd:.2f} s, forward AD {s_exact:.2f} s, 3 directions)", flush=True)
    # the Krylov top-5 with either JVP (tiny SD, same seed and budget)
    m, cond = tiny, tiny.encode_prompt("a cat")
    x = tiny.randn(1, 1)[0]
    res = {}
    for mode in ("forward", "central"):
        t0 = time.perf_counter()
        # 240 directions (120 JVP + 120 VJP): 240 network evaluations with forward AD, 360 with central differences
        res[mode] = jac.jacobian_of_x0_hat(m, x, 699, cond, k=5, method="krylov", jvp_mode=mode, seed=0, block=6,
                                           max_passes=120 * (jac.JVP_EVALUATIONS[mode] + 1), tol=1e-9)
        res[mode].wall = time.perf_counter() - t0
    a, c = res["forward"], res["central"]
    rel = float(((a.singular_values - c.singular_values).abs() / a.singular_values).max())
    cos = subspace_cosine(a.V, c.V)
    rows.append(dict(part="central_krylov", arch="tiny-sd", size=16, n=m.n, kind="top5", b=6, t=699, h=jac.CENTRAL_STEP,
                     value=json.dumps({"sv_rel_diff": float(f"{rel:.3e}"), "subspace_cosine": round(cos, 6),
                                       "passes": [a.passes, c.passes]}),
                     unit="central vs forward-AD Krylov, 240 directions", seconds=round(c.wall, 2),
                     note=f"forward AD {a.wall:.2f} s"))
    print(f"krylov top-5 tiny SD, 240 directions: central vs forward AD: singular values rel. diff {rel:.2e}, "
          f"subspace cosine {cos:.6f}; wall {c.wall:.1f} s vs {a.wall:.1f} s", flush=True)


def part_projection(rows: list) -> None:
    """CUDA peak of ``edit`` (SD v1.4, 512 px, k = 5) on a 24 GB card, from the fitted law."""
    from lowdim_app.diffusion import architectures as A
    from lowdim_app.diffusion.model import DiffusionModel
    from lowdim_app.methods import jacobian as jac

    counts = A.parameter_counts("sd-v1-4")
    weights_fp16 = 2.0 * (counts["unet"] + counts["vae"] + counts["text_encoder"])
    copy_fp32 = 4.0 * counts["unet"]
    context = 0.5 * GIB      # CUDA context + kernels, outside the caching allocator
    card = 24 * GIB
    from diffusers import UNet2DConditionModel

    import torch

    with torch.device("meta"):
        unet = UNet2DConditionModel(**A.sd_unet_config(1, 64))
    model = DiffusionModel("sd-v1-4", unet, dict(A.SD_SCHEDULER))
    prof = model.activation_profile()
    free = card - context - weights_fp16 - copy_fp32
    plan = jac.plan_for_model(model, 5, jvp_mode="central", memory_gb=jac.CUDA_BUDGET_FRACTION * free / GIB).memory
    b = 6
    peaks = {}
    for kind in ("jvp", "vjp"):
        per_call = plan.directions(kind)
        chunk = min(b, per_call)
        peaks[kind] = context + weights_fp16 + copy_fp32 + plan.fixed_bytes + chunk * plan.per_direction[kind]
        rows.append(dict(part="projection", arch="sd-v1-4", size=64, n=model.n, kind=kind, b=chunk,
                         value=round(peaks[kind] / GIB, 3), unit="GiB projected CUDA peak (24 GB card)",
                         note=json.dumps({"per_direction_gib": round(plan.per_direction[kind] / GIB, 3),
                                          "directions_per_call": per_call, "budget_gib": round(plan.budget_bytes / GIB, 3),
                                          "weights_fp16_gib": round(weights_fp16 / GIB, 3),
                                          "fp32_copy_gib": round(copy_fp32 / GIB, 3),
                                          "activations_gib": round(prof["activations"] / GIB, 3),
                                          "attention_gib": round(prof["attention"] / GIB, 3)})))
        print(f"projection SD v1.4 512 px k=5 {kind}: {chunk} of {b} directions per call "
              f"(rule allows {per_call}), {plan.per_direction[kind] / GIB:.2f} GiB each -> peak "
              f"{peaks[kind] / GIB:.2f} GiB of 24", flush=True)
    old = context + weights_fp16 + copy_fp32 + b * max(jac.per_direction_bytes(prof, "jvp_forward"),
                                                       jac.per_direction_bytes(prof, "vjp_math"))
    rows.append(dict(part="projection", arch="sd-v1-4", size=64, n=model.n, kind="old_path", b=b,
                     value=round(old / GIB, 3), unit="GiB projected CUDA peak of the old path (forward AD + math VJP)"))
    print(f"projection old path (b = 6 forward-AD JVPs / math-attention VJPs in one call): {old / GIB:.1f} GiB", flush=True)
    # the VAE phase of the edit (decoding the strip): VAE_PIXELS_PER_CALL pixels per call, per-image
    # bytes measured above (sd-vae per_direction rows); the float32 U-Net copy is not held then
    from lowdim_app.diffusion.model import VAE_PIXELS_PER_CALL

    for kind in ("vae_decode", "vae_encode"):
        per = [float(r["value"]) for r in rows if r["part"] == "per_direction" and r["kind"] == kind]
        if not per:
            continue
        images = max(1, VAE_PIXELS_PER_CALL // (512 * 512))
        peak = context + weights_fp16 + images * per[-1] * GIB / 2   # measured in float32, run in float16
        rows.append(dict(part="projection", arch="sd-vae", size=512, kind=kind, b=images, value=round(peak / GIB, 3),
                         unit="GiB projected CUDA peak of the VAE phase (24 GB card)",
                         note=json.dumps({"per_image_fp32_gib": per[-1], "images_per_call": images,
                                          "assumed": "float16 halves the float32 CPU measurement"})))
        print(f"projection SD VAE {kind} at 512 px: {images} images per call x {per[-1]:.2f} GiB (fp32; /2 for fp16) "
              f"-> peak {peak / GIB:.2f} GiB of 24", flush=True)


# ------------------------------------------------------------------------------ main
def _load(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _write(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in FIELDS})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--parts", default="memory,fit,central,projection")
    ap.add_argument("--quick", action="store_true", help="CIFAR-10 and SD at latent 16 only; no 64 central case")
    ap.add_argument("--only", default="", help="memory: only these architectures (comma-separated)")
    ap.add_argument("--select", default="", help="memory: only these ARCH:SIZE[:KIND] (comma-separated)")
    ap.add_argument("--remeasure", action="store_true", help="memory: measure again what the CSV already has")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(*json.loads(a.child))))
        return
    parts = set(a.parts.split(","))
    out = Path(a.out)
    # memory rows of earlier runs are kept; part_memory measures only what is missing (--remeasure: all)
    regenerated = {"fit": {"fit"}, "central": {"central", "central_krylov"}, "projection": {"projection"}}
    drop = set().union(*(regenerated[x] for x in parts if x in regenerated))
    rows = [r for r in _load(out) if r["part"] not in drop]
    if a.remeasure:
        rows = [r for r in rows if r["part"] not in ("memory", "per_direction")
                or (a.only and r["arch"] not in a.only.split(","))]
    for r in rows:
        for k in ("value",):
            try:
                r[k] = float(r[k])
            except (TypeError, ValueError):
                pass
        for k in ("width", "size", "b"):
            try:
                r[k] = int(r[k])
            except (TypeError, ValueError):
                pass
    if "memory" in parts:
        configs = QUICK if a.quick else CONFIGS
        if a.only:
            configs = [c for c in configs if c[0] in a.only.split(",")]
        if a.select:   # arch:size[:kind] entries
            sel = [x.split(":") for x in a.select.split(",") if x]
            configs = [(arch, w, size, tuple(k for k in kinds if any(len(e) < 3 or e[2] == k for e in sel
                                                                   if e[0] == arch and int(e[1]) == size)), bs)
                       for arch, w, size, kinds, bs in configs]
            configs = [c for c in configs if c[3]]
        part_memory(configs, a.threads, rows)
        _write(out, rows)
    if "fit" in parts:
        part_fit(rows)
    if "central" in parts:
        part_central(rows, a.threads, a.quick)
    if "projection" in parts:
        part_projection(rows)
    _write(out, rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
