"""Seconds to the first progress message and to the result of every tab's default run, in Chromium.

Starts ``python app.py`` on a free port and, one tab at a time in a fresh page, presses the tab's
main button with its default inputs (the Edit tab's preloaded example digit; the Memorization tab
gets one held-out example digit uploaded). It records when the first progress message a visitor can
read appeared (a progress bar with a description, or the tab's status line -- a bare timer or
gradio's generic "processing" does not count) and when the run ended (no progress bar or pending output left). Writes
``bench/results/ui_progress.csv``. Run it on an otherwise idle machine: the numbers are wall seconds.

Needs Debian's ``chromium`` and the ``playwright`` package (no browser download).
Usage: python bench/ui_progress.py [--only Steer,MoLR-MoG experts]
"""
from __future__ import annotations

import argparse
import csv
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
EXAMPLE = REPO / "assets" / "examples" / "digit_2_test0.png"

# tab, sub-tab, main button, status elements whose text counts as progress
TABS = [("Models", None, "#models-sample-btn", []),
        ("Edit", None, "#edit-find-btn", ["#edit-info"]),
        ("Memorization", None, "#mem-score-btn", ["#mem-summary"]),
        ("Steer", None, "#steer-btn", []),
        ("Theory labs", "Memorize vs generalize", "#theory-relu-run", ["#theory-relu-status"]),
        ("Theory labs", "Gaussian mixtures via DDPM", "#theory-mog-run", ["#theory-mog-status"]),
        ("Theory labs", "MoLR-MoG experts", "#theory-molr-run", ["#theory-molr-status"]),
        ("Theory labs", "Phase transition", "#molrg-phase-run", ["#molrg-phase-status"]),
        ("Theory labs", "Low-rank denoiser", "#molrg-rank-run", []),
        ("Theory labs", "Generalization score", "#molrg-gl-run", ["#molrg-gl-status"])]

FIRST_PROGRESS = """(statuses) => {
  const visible = e => e.offsetParent !== null;
  const words = t => /[a-z]{2}/i.test(t.replace(/[0-9.]+\\s*s\\b/g, '').replace(/processing|queue/gi, ''));
  for (const e of document.querySelectorAll('.progress-level-inner, .progress-text'))
    if (visible(e) && words(e.innerText)) return e.innerText.trim();
  for (const s of statuses) { const e = document.querySelector(s); if (e && words(e.innerText)) return e.innerText.trim(); }
  return false;
}"""
RUNNING = "() => document.querySelectorAll('.progress-text, .pending, .generating').length > 0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(page, tab, sub, button, statuses, timeout_s: float) -> dict:
    page.get_by_role("tab", name=tab).click()
    if sub:
        page.get_by_role("tab", name=sub).click()
    if tab == "Memorization":
        page.locator("#mem-files input[type=file]").set_input_files([str(EXAMPLE)])
        page.locator("#mem-files").get_by_text(EXAMPLE.name).first.wait_for(state="attached", timeout=60_000)
    before = {s: page.locator(s).inner_text() if page.locator(s).count() else "" for s in statuses}
    page.locator(button).first.click()
    t0 = time.perf_counter()
    # status lines that already had text before the click (an example, an earlier run) do not count
    fresh = [s for s in statuses if not before.get(s, "").strip()]
    first, text = "", ""
    try:
        handle = page.wait_for_function(FIRST_PROGRESS, arg=fresh, timeout=timeout_s * 1000, polling=50)
        first, text = round(time.perf_counter() - t0, 2), str(handle.json_value())[:120]
    except Exception:  # noqa: BLE001 -- no progress message before the end: the row says so
        pass
    page.wait_for_function(RUNNING, timeout=10_000, polling=50) if not first else None
    try:
        page.wait_for_function(f"() => !({RUNNING})()", timeout=timeout_s * 1000, polling=100)
        done = round(time.perf_counter() - t0, 1)
    except Exception:  # noqa: BLE001
        done = f"over {timeout_s:.0f}"
    return {"tab": sub or tab, "to_first_progress_s": first, "to_result_s": done,
            "first_progress_message": " ".join(text.split())}


def main(argv=None) -> int:
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma list of tab names")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--out", default=str(RESULTS / "ui_progress.csv"))
    args = ap.parse_args(argv)
    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1",
               GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    only = {n for n in args.only.split(",") if n}
    rows = []
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except Exception:  # noqa: BLE001
                time.sleep(0.25)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                        args=["--headless", "--no-sandbox", "--disable-gpu",
                                              "--disable-background-networking"])
            for tab, sub, button, statuses in TABS:
                if only and (sub or tab) not in only:
                    continue
                ctx = browser.new_context(viewport={"width": 1400, "height": 1100})
                page = ctx.new_page()
                page.goto(url)
                page.wait_for_selector("#tabs", timeout=60_000)
                row = measure(page, tab, sub, button, statuses, args.timeout)
                print(row, flush=True)
                rows.append(row)
                ctx.close()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    with open(args.out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
