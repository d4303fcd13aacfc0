"""Every main action through the real ZeroGPU wrapper, against the plain server, first and second request.

Starts ``app.py`` twice -- plain, and under :mod:`lowdim_app.zerogpu_emulator` (the real ``spaces``
fork / pickle / queue path, a local stand-in for the device API) -- and runs each tab's main action
twice through gradio_client: the first request pays for loading (models at start-up on ZeroGPU, on
first use elsewhere) and the worker fork, the second shows the steady state. Writes
``bench/results/zerogpu.csv`` and prints, per action: ok, seconds of the first and second request on
each server, and the ratio of the second requests (goal: ZeroGPU within 1.3x of plain).

    python bench/zerogpu.py [--reuse | --fresh]     # worker reused between calls (default) or forked per call
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "results" / "zerogpu.csv"
EX = sorted(str(p) for p in (REPO / "assets" / "examples").glob("digit_*.png"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(zerogpu: bool, reuse: bool, log: Path):
    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1", HF_HUB_OFFLINE="1",
               GRADIO_ANALYTICS_ENABLED="False", LOWDIM_DEVICE="cpu")
    cmd = [sys.executable, "app.py"]
    if zerogpu:
        cmd = [sys.executable, "-m", "lowdim_app.zerogpu_emulator", "app.py"] + (["--reuse"] if reuse else [])
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)   # its forked ZeroGPU workers end with it (killpg below)
    url = f"http://127.0.0.1:{port}/"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited; see {log}")
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except Exception:
            time.sleep(0.25)
    return proc, url, time.perf_counter() - t0


def actions():
    from gradio_client import handle_file

    def editor(p):
        return {"background": handle_file(p), "layers": [], "composite": handle_file(p), "id": None}

    return {
        "sample (16 images, 50 steps)": ("/sample", ("digits-gen", 16, 0, 50, "", 7.5)),
        "find directions (k = 3, 20 steps)": ("/find_directions", (editor(EX[0]), "digits-gen", 0.7, 3, 20, "", False,
                                                                    400, 0.05, "central")),
        "edit (direction 1, 5 alphas)": ("/edit", (editor(EX[0]), 1, 6, 5, 0, 0.8)),
        "score (2 uploads)": ("/score", ([handle_file(p) for p in EX[:2]], "digits-dup", "", 50, "", 4, 0, 0, None,
                                         False)),
        "calibrate (2 + 2 uploads)": ("/calibrate", ([handle_file(p) for p in EX[:2]],
                                                     [handle_file(p) for p in EX[2:4]], "digits-dup", "", 50, "std",
                                                     0.25)),
        "steer (digit 4, 3 strengths)": ("/steer", ("digits-dup", "digit class", 4, "", None, 1, None, 1.0, 3,
                                                     "recipe", "", False, 0, None)),
        "phase lab (K = 1, SVD)": ("/phase", (48, 1, 2, 6, 2, 10, 5, 0.0, "svd", "hardmax", 0)),
    }


def measure(url: str) -> dict:
    from gradio_client import Client

    client = Client(url, verbose=False)
    out = {}
    for name, (api, args) in actions().items():
        times, ok = [], True
        for _ in range(2):
            t0 = time.perf_counter()
            try:
                client.predict(*args, api_name=api)
            except Exception as err:
                ok = False
                print(f"  {name}: {type(err).__name__}: {str(err)[:200]}", flush=True)
            times.append(time.perf_counter() - t0)
        out[name] = (ok, *times)
        print(f"  {name}: ok={ok} first {times[0]:.2f} s, second {times[1]:.2f} s", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", action="store_true", help="fork a fresh worker for every call (no reuse)")
    args = parser.parse_args()
    results, starts, scheduled = {}, {}, None
    for mode in ("plain", "zerogpu"):
        log = REPO / "bench" / "results" / f"zerogpu_{mode}_server.log"
        proc, url, started = start(mode == "zerogpu", not args.fresh, log)
        starts[mode] = started
        print(f"{mode}: server up in {started:.1f} s", flush=True)
        try:
            results[mode] = measure(url)
            if mode == "zerogpu":
                api = re.search(r"stand-in at (http://\S+)", log.read_text()).group(1)
                scheduled = json.load(urllib.request.urlopen(f"{api}/calls"))["schedule"]
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
            try:
                os.killpg(proc.pid, signal.SIGKILL)   # a worker that outlived the server
            except ProcessLookupError:
                pass
    rows = []
    for name in results["plain"]:
        p, z = results["plain"][name], results["zerogpu"][name]
        rows.append({"action": name, "plain_ok": p[0], "plain_first_s": round(p[1], 2), "plain_second_s": round(p[2], 2),
                     "zerogpu_ok": z[0], "zerogpu_first_s": round(z[1], 2), "zerogpu_second_s": round(z[2], 2),
                     "second_ratio": round(z[2] / p[2], 2)})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"\nserver start: plain {starts['plain']:.1f} s, zerogpu {starts['zerogpu']:.1f} s "
          f"(worker {'forked per call' if args.fresh else 'reused'})")
    print(f"{'action':36s} {'ok':>5s} {'plain 1st':>9s} {'2nd':>6s} {'ZeroGPU 1st':>11s} {'2nd':>6s} {'2nd ratio':>9s}")
    for r in rows:
        print(f"{r['action']:36s} {str(r['plain_ok'] and r['zerogpu_ok']):>5s} {r['plain_first_s']:9.2f} "
              f"{r['plain_second_s']:6.2f} {r['zerogpu_first_s']:11.2f} {r['zerogpu_second_s']:6.2f} {r['second_ratio']:9.2f}")
    if scheduled is not None:
        print("GPU durations asked (s): " + ", ".join(str(c["duration_s"]) for c in scheduled))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
