"""Torch's thread count on a CPU, idle and under a competing load: the project's rule against fixed settings.

Each case is the CLI command a user runs (``python -m lowdim_app ...``, wall time of the whole process,
imports included), under one thread setting, on an idle machine and while another process keeps
every core busy (a two-thread torch matmul loop, like a second user's job):

* ``rule``: nothing set -- the project's rule (``lowdim_app.threads``: free cores / concurrent runs,
  OpenMP idle threads sleep);
* ``one``: ``OMP_NUM_THREADS=1``;
* ``all``: every core, OpenMP's default waiting (torch's default before the rule existed).

Writes ``bench/results/threads.csv`` (one row per case and repetition) and prints the median seconds
and the rule's ratio to the best setting of each (command, condition). Goal: the rule is never
slower than 1.2x the best.

    python bench/threads.py [--reps 3] [--quick]
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "results" / "threads.csv"
EX = sorted(str(p) for p in (REPO / "assets" / "examples").glob("digit_*.png"))
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1

COMMANDS = {
    "sample": ["sample", "--model", "digits-gen", "--n", "16", "--steps", "50", "--seed", "0", "--out", "{tmp}/grid.png"],
    "find_directions": ["directions", EX[0], "--model", "digits-gen", "--k", "3", "--steps", "50", "--out", "{tmp}/dirs"],
    "score": ["score", *EX, "--model", "digits-dup", "--noise-draws", "4", "--csv", "{tmp}/scores.csv"],
}
SETTINGS = {
    "rule": {},
    "one": {"OMP_NUM_THREADS": "1"},
    "all": {"OMP_NUM_THREADS": str(CORES), "OMP_WAIT_POLICY": ""},
}
LOAD = ("import torch\ntorch.set_num_threads({n})\na = torch.randn(384, 384)\n"
        "while True:\n    a = torch.tanh(a @ a)\n")


def run_once(command: list[str], env_extra: dict) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
    env.update(env_extra, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", PYTHONPATH=str(REPO))
    with tempfile.TemporaryDirectory() as tmp:
        argv = [a.replace("{tmp}", tmp) for a in command]
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "lowdim_app", *argv, "--quiet"], env=env, cwd=REPO,
                           capture_output=True, text=True)
        seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {r.stderr[-500:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one repetition, sample and score only")
    args = parser.parse_args()
    reps = 1 if args.quick else args.reps
    commands = {k: v for k, v in COMMANDS.items() if not args.quick or k != "find_directions"}
    rows = []
    for condition in ("idle", "loaded"):
        load = None
        if condition == "loaded":
            load = subprocess.Popen([sys.executable, "-c", LOAD.format(n=CORES)],
                                    env=dict(os.environ, OMP_NUM_THREADS=str(CORES)))
            time.sleep(3)
        try:
            for name, command in commands.items():
                for rep in range(reps):
                    for setting, env_extra in SETTINGS.items():       # interleaved: drift hits all settings alike
                        s = run_once(command, env_extra)
                        rows.append({"command": name, "condition": condition, "setting": setting, "rep": rep,
                                     "seconds": round(s, 3), "cores": CORES})
                        print(f"{condition:6s} {name:15s} {setting:4s} rep {rep}: {s:6.2f} s", flush=True)
        finally:
            if load is not None:
                load.terminate()
                load.wait()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"\nmedian seconds ({CORES} cores); ratio = rule / best setting")
    print(f"{'command':15s} {'condition':9s} " + " ".join(f"{s:>7s}" for s in SETTINGS) + "  ratio")
    for name in commands:
        for condition in ("idle", "loaded"):
            med = {s: statistics.median(r["seconds"] for r in rows if r["command"] == name
                                        and r["condition"] == condition and r["setting"] == s) for s in SETTINGS}
            ratio = med["rule"] / min(med.values())
            print(f"{name:15s} {condition:9s} " + " ".join(f"{med[s]:7.2f}" for s in SETTINGS) + f"  {ratio:5.2f}")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
