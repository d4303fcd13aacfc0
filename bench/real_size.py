"""Every action on the exact real-size architectures (random weights), with small budgets.

Builds ``google/ddpm-cifar10-32`` and ``google/ddpm-ema-celebahq-256`` (both published layouts:
subfolders and the flat root layout the Google repos use) and ``CompVis/stable-diffusion-v1-4``
from their configs (:mod:`lowdim_app.diffusion.architectures`) as local diffusers folders, then
runs each action as its own CLI process -- sample, edit (global, local with a mask, transfer of a
saved direction), rank, score, calibrate, steer (an image concept, and a prompt concept for SD) --
and writes ``bench/results/real_size.csv``: action, model, layout, width divisor, U-Net sample size
(SD: latent side; ``--sample-size`` builds the exact modules at a smaller resolution -- such rows are not
the published resolution and say so in that column), ok/fail with the error line, wall and CPU
seconds, peak resident memory of the process and its increase over loading the model, and the
network passes the edit search (edit.json) and rank (rank.json, per point) report.

Budgets: each action gets the smallest budget its own checks accept -- a global edit with k = 1 needs
2 passes (one Krylov iteration), a masked edit ``2k + 4 max(k + 1, 6)`` = 26, rank with k = 2 needs
``2 (k + 1) + 16`` = 22 per point (one Krylov iteration + the Hutchinson probes).

Memory is the process's peak RSS (``getrusage``); on CUDA it would be
``torch.cuda.max_memory_allocated`` (``--device cuda`` records both). CPU RSS includes the Python
runtime and the float32 weights; activations and AD tapes show as the increase over the load.

Usage::

    python bench/real_size.py                       # all three, exact size (SD: ~1 h on 2 cores)
    python bench/real_size.py --models cifar10 --width 8 --out /tmp/rs.csv   # a quick check
    python bench/real_size.py --models sd-v1-4 --sample-size 16 --append    # SD's modules at 128 px
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lowdim_app.diffusion import architectures as A  # noqa: E402

CHILD = r"""
import json, os, resource, sys, time
t0 = time.perf_counter(); c0 = time.process_time()
from lowdim_app.cli import main
rc = main(sys.argv[2:])
out = {"rc": rc, "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
       "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
try:
    import torch
    if torch.cuda.is_available():
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
except Exception:
    pass
open(sys.argv[1], "w").write(json.dumps(out))
"""


def run_cli(argv: list[str], cwd: Path, timeout: int) -> dict:
    stats = cwd / f"stats_{time.time_ns()}.json"
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    try:
        r = subprocess.run([sys.executable, "-c", CHILD, str(stats), *argv], cwd=cwd, env=env, capture_output=True,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timeout after {timeout} s"}
    out = json.loads(stats.read_text()) if stats.is_file() else {"rc": r.returncode}
    out["ok"] = out.get("rc") == 0
    if not out["ok"]:
        last = (r.stderr.strip().splitlines() or [""])[-1][:300]
        out["error"] = last or (f"killed by signal {-r.returncode}" if r.returncode < 0 else f"exit {r.returncode}")
    return out


def example_images(folder: Path, shape: tuple[int, int, int], n: int = 2) -> list[Path]:
    """Smooth random RGB images of the model's image size (content, not noise)."""
    from PIL import Image

    c, h, w = shape
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        img = np.stack([np.sin(6 * xx + i + k) * np.cos(4 * yy - k) for k in range(3)], -1)
        img = ((img + rng.normal(0, 0.05, img.shape)) * 0.5 + 0.5).clip(0, 1) * 255
        p = folder / f"img{i}.png"
        Image.fromarray(img.astype(np.uint8)).save(p)
        paths.append(p)
    mask = np.zeros((h, w), np.uint8)
    mask[: h // 2, : w // 2] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    return paths


EDIT_K = 1
EDIT_PASSES = 6                                        # global edit: one Krylov iteration needs 2 (k + p) = 2
LOCAL_PASSES = 2 * EDIT_K + 4 * max(EDIT_K + 1, 6)     # masked edit's minimum (features.edit.EditSettings.min_passes)
RANK_K = 2
RANK_PASSES = 22                                       # = lowrank.min_passes(2) = 2 * 3 + 16


def actions(model: str, is_text: bool, imgs: list[Path], work: Path) -> list[tuple[str, list[str]]]:
    img, other = str(imgs[0]), str(imgs[1])
    edit = ["--model", model, "--t", "0.5", "--k", str(EDIT_K), "--steps", "4", "--alpha", "-2,2"]
    out = [
        ("load", ["sample", "--model", model, "--n", "1", "--steps", "1", "--out", str(work / "load.png")]),
        ("sample", ["sample", "--model", model, "--n", "1", "--steps", "2", "--out", str(work / "s.png")]),
        ("edit", ["edit", img, *edit, "--max-passes", str(EDIT_PASSES), "--out", str(work / "edit"),
                  "--save-direction", str(work / "v1.safetensors")]),
        ("edit-local", ["edit", img, *edit, "--max-passes", str(LOCAL_PASSES), "--mask", str(work / "img" / "mask.png"),
                        "--out", str(work / "edit_local")]),
        ("edit-transfer", ["edit", other, "--model", model, "--steps", "4", "--alpha", "-2,2",
                           "--load-direction", str(work / "v1.safetensors"), "--out", str(work / "edit_transfer")]),
        ("rank", ["rank", "--model", model, "--steps", "2", "--points", "2", "--k", str(RANK_K),
                  "--max-passes", str(RANK_PASSES), "--out", str(work / "rank"), "--json", str(work / "rank.json")]),
        ("score", ["score", img, other, "--model", model, "--csv", str(work / "scores.csv")]),
        ("calibrate", ["calibrate", "--model", model, "--memorized", img, "--generalized", img, other,
                       "--out", str(work / "cal.json")]),
        ("steer-image", ["steer", "--model", model, "--concept", img, other, "--source", "seed:0", "--steps", "4",
                         "--window", "2", "--strengths", "0,2", "--out", str(work / "steer_img")]),
    ]
    if is_text:
        out.append(("steer-prompt", ["steer", "--model", model, "--concept", "prompt:a red house", "--concept-n", "2",
                                     "--concept-steps", "2", "--source", "seed:0", "--steps", "4", "--window", "2",
                                     "--strengths", "0,2", "--out", str(work / "steer_prompt")]))
    return out


def passes_of(name: str, work: Path) -> str:
    """Network passes the action reports: the edit search's (edit.json), or per point of rank (rank.json)."""
    try:
        if name in ("edit", "edit-local"):
            folder = "edit" if name == "edit" else "edit_local"
            search = json.loads((work / folder / "edit.json").read_text()).get("search", {})
            return f"{search.get('passes', '')}" + (" (stopped at budget)" if search.get("stopped_at_budget") else "")
        if name == "rank":
            pts = json.loads((work / "rank.json").read_text())["points"]
            return "+".join(str(p["passes"]) for p in pts)
    except Exception:
        pass
    return ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="cifar10,celebahq,sd-v1-4")
    ap.add_argument("--width", type=int, default=1, help="divide every channel count (1 = the exact architecture)")
    ap.add_argument("--sample-size", type=int, default=None,
                    help="U-Net sample size (SD: latent side; default: the published one). Smaller sizes keep the "
                         "exact modules and weights' shapes but not the published resolution")
    ap.add_argument("--actions", default="", help="only these actions (comma-separated; load always runs first)")
    ap.add_argument("--layouts", default="subfolder,flat")
    ap.add_argument("--append", action="store_true", help="add rows to --out instead of replacing it")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--timeout", type=int, default=5400, help="seconds per action")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "real_size.csv"))
    args = ap.parse_args()
    root = Path(args.workdir or tempfile.mkdtemp(prefix="lowdim-real-size-"))
    rows = []
    if args.append and Path(args.out).is_file():
        with open(args.out) as f:
            rows = list(csv.DictReader(f))
    only = [a for a in args.actions.split(",") if a]
    for arch in args.models.split(","):
        layouts = [x for x in args.layouts.split(",") if x and (arch != "sd-v1-4" or x == "subfolder")]
        for layout in layouts:
            ss = args.sample_size
            folder = root / (f"{arch}-{layout}-w{args.width}" + (f"-s{ss}" if ss else ""))
            if not (folder / "model_index.json").is_file():
                t0 = time.perf_counter()
                A.build(arch, folder, layout=layout, width=args.width, sample_size=ss)
                print(f"built {folder.name} in {time.perf_counter() - t0:.0f} s", flush=True)
            params = A.parameter_counts(arch, args.width)
            is_text = arch == "sd-v1-4"
            unet_size = ss or (64 if is_text else A.pixel_unet_config(arch)["sample_size"])
            image_size = 8 * unet_size if is_text else unet_size
            work = root / f"work-{arch}-{layout}-s{unet_size}"
            imgs = example_images(work / "img", (3, image_size, image_size))
            todo = actions(str(folder), is_text, imgs, work)
            if layout == "flat":     # the flat layout only needs to load and sample like the subfolder one
                todo = todo[:2]
            if only:
                todo = [a for a in todo if a[0] == "load" or a[0] in only]
            base = None
            for name, argv in todo:
                argv = [*argv, "--device", args.device, "--quiet"]
                res = run_cli(argv, work, args.timeout)
                if name == "load":
                    base = res.get("peak_rss_mb")
                row = {"action": name, "model": A.HUB_IDS[arch], "layout": layout, "width_divisor": args.width,
                       "sample_size": unet_size, "image_px": image_size,
                       "params_m": round(sum(params.values()) / 1e6, 1), "ok": "ok" if res["ok"] else "fail",
                       "wall_s": round(res["wall_s"], 1) if "wall_s" in res else "",
                       "cpu_s": round(res["cpu_s"], 1) if "cpu_s" in res else "",
                       "peak_rss_mb": round(res["peak_rss_mb"]) if "peak_rss_mb" in res else "",
                       "rss_over_load_mb": round(res["peak_rss_mb"] - base) if base and "peak_rss_mb" in res else "",
                       "cuda_max_allocated_mb": round(res["cuda_max_allocated_mb"]) if "cuda_max_allocated_mb" in res else "",
                       "passes": passes_of(name, work), "error": res.get("error", "")}
                rows.append(row)
                print(" ".join(f"{k}={v}" for k, v in row.items() if v != ""), flush=True)
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                with open(args.out, "w", newline="") as f:
                    w = csv.DictWriter(f, fieldnames=list(row))
                    w.writeheader()
                    w.writerows(rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
