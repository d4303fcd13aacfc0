"""Scale-out throughput of ``audit``: images/s with 1 vs N ``torchrun`` processes, in one run.

CPU (default): the same folder audited by 1 process x 1 thread, 2 processes x 1 thread (gloo) and
1 process x 2 threads; the throughput is all processes' images over the main process's
scoring loop (model loading, merge and report excluded); the whole run's wall time is printed too.
On a CUDA machine ``--device cuda --model PATH_TO_SD_FOLDER`` measures seconds per image per GPU
(Stable Diffusion v1.4 at 512 px: Zhang et al. 2025, Table 1, report 0.067 s per image).

    python bench/scale.py                                   # digits-dup, 1 vs 2 processes
    python bench/scale.py --images 512 --configs 1x1,2x1,1x2 --batch-size 32
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "scale.csv"


def audit(folder: Path, out: Path, model: str, procs: int, threads: int, batch: int, device: str, port: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO), LOWDIM_DEVICE=device)
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
                 "--master_port", str(port)] if procs > 1 else [sys.executable])
    t0 = time.perf_counter()
    r = subprocess.run([*launcher, "-m", "lowdim_app", "audit", str(folder), "--model", model, "--out", str(out),
                        "--batch-size", str(batch), "--top", "0", "--quiet"], env=env, cwd=REPO, capture_output=True,
                       text=True)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(r.stderr[-2000:])
    return {"wall_s": wall, "line": r.stdout.strip().splitlines()[-1]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="digits-dup")
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--configs", default="1x1,2x1,1x2",
                   help="PROCESSESxTHREADS per process, comma-separated; the first is the baseline")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lowdim-scale-"))
    folder = work / "images"
    subprocess.run([sys.executable, "-m", "lowdim_app", "sample", "--model", args.model, "--n", str(args.images),
                    "--seed", "11", "--steps", "20", "--out", str(folder) + "/", "--quiet"], cwd=REPO, check=True,
                   env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True)
    rows, tables = [], {}
    for config in args.configs.split(","):
        procs, threads = (int(x) for x in config.split("x"))
        out = work / f"out-{config}"
        load_before = os.getloadavg()[0]
        res = audit(folder, out, args.model, procs, threads, args.batch_size, args.device, 29500 + len(rows))
        scoring = float(res["line"].split("(")[-1].split(" images/s")[0])
        tables[config] = (out / "scores.csv").read_text()
        rows.append({"config": config, "model": args.model, "device": args.device, "images": args.images,
                     "processes": procs,
                     "threads_per_process": threads, "batch_size": args.batch_size,
                     "scoring_images_per_s": round(scoring, 2), "wall_s": round(res["wall_s"], 2),
                     "wall_images_per_s": round(args.images / res["wall_s"], 2),
                     "load_avg_before": round(load_before, 2), "cpu_count": os.cpu_count()})
        print(rows[-1], flush=True)
    base = rows[0]
    for r in rows:
        r["scoring_speedup"] = round(r["scoring_images_per_s"] / base["scoring_images_per_s"], 3)
        r["wall_speedup"] = round(base["wall_s"] / r["wall_s"], 3)
        r["same_rows_as_baseline"] = tables[r["config"]] == tables[base["config"]]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    for r in rows:
        print(f"{r['processes']} process(es) x {r['threads_per_process']} thread(s): {r['scoring_images_per_s']} img/s "
              f"scoring ({r['scoring_speedup']}x), {r['wall_s']} s wall ({r['wall_speedup']}x), rows byte-identical "
              f"to {base['config']}: {r['same_rows_as_baseline']} (load average before: {r['load_avg_before']})")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
