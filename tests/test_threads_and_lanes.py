"""The thread rule, the admission lanes, and the ZeroGPU emulator as a stand-in for the Space."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from lowdim_app import threads
from lowdim_app.features.base import Cancelled
from lowdim_app.ui.lanes import Lanes
from tests.conftest import REPO


@pytest.mark.parametrize("cores, load, workers, expected", [
    (2, 0.0, 1, 2),        # idle 2-core machine: both cores
    (2, 1.9, 1, 1),        # another process keeps the cores busy: one thread (no spinning on a taken core)
    (2, 0.0, 2, 1),        # two computations of this server share the cores
    (16, 3.4, 2, 6),       # 12.6 free cores -> 13 // 2
    (1, 0.0, 4, 1),        # never below one
])
def test_rule_divides_the_free_cores_among_the_computations(cores, load, workers, expected):
    assert threads.rule(workers, load=load, cores=cores) == expected


def test_the_users_choice_wins(monkeypatch):
    import torch

    old = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        monkeypatch.setattr(threads, "rule", lambda workers=1, **kw: 2)
        assert threads.apply() == 1 and torch.get_num_threads() == 1
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert threads.apply() == 2 and torch.get_num_threads() == 2        # nothing chosen: the rule
        torch.set_num_threads(1)                                             # the user calls torch after us
        assert threads.apply() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(old)
        threads._state["set"] = None


def test_cgroup_quota_caps_the_cores(monkeypatch, tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")          # a container allowed 1.5 CPUs
    monkeypatch.setattr(threads, "CGROUP_V2", str(tmp_path / "cpu.max"))
    assert threads.cores_available() == min(1.5, threads._torch_default())
    (tmp_path / "cpu.max").write_text("max 100000\n")             # no quota
    assert threads.cores_available() == threads._torch_default()


def test_other_load_sees_a_busy_process():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        threads._state["load"] = None
        assert threads.other_load(0.5) > 0.5
    finally:
        busy.kill()
        threads._state["load"] = None


def test_a_quick_request_passes_a_long_one_and_each_lane_is_first_come_first_served():
    lanes = Lanes(quick_s=10, slots=1)
    order, hold = [], threading.Event()

    def run(name, seconds):
        with lanes.admit(seconds):
            order.append(name)
            if name == "long-1":
                hold.wait(5)

    long1 = threading.Thread(target=run, args=("long-1", 100))
    long1.start()
    time.sleep(0.1)
    long2 = threading.Thread(target=run, args=("long-2", 100))
    long2.start()
    time.sleep(0.1)
    quick = threading.Thread(target=run, args=("quick", 1))
    quick.start()
    quick.join(2)
    assert not quick.is_alive() and order == ["long-1", "quick"]          # quick ran while long-1 held its lane
    hold.set()
    long1.join(5), long2.join(5)
    assert order == ["long-1", "quick", "long-2"]


def test_cancel_while_waiting_for_a_lane():
    lanes = Lanes(quick_s=10, slots=1)
    release, stop, waited, outcome = threading.Event(), threading.Event(), [], []

    def holder():
        with lanes.admit(100):
            release.wait(5)

    def waiter():
        try:
            with lanes.admit(100, should_stop=stop.is_set, on_wait=waited.append):
                outcome.append("ran")
        except Cancelled:
            outcome.append("cancelled")

    t = threading.Thread(target=holder)
    t.start()
    time.sleep(0.1)
    w = threading.Thread(target=waiter)
    w.start()
    time.sleep(0.5)
    stop.set()
    w.join(2)
    assert outcome == ["cancelled"] and waited == ["waiting for the long lane: 1 request ahead"]
    release.set()
    t.join(5)
    with lanes.admit(100):          # the cancelled waiter left the queue: the lane is free
        pass


EMULATOR_CHECK = textwrap.dedent("""
    import json, os, sys
    from lowdim_app.zerogpu_emulator import DeviceAPI, install
    api = DeviceAPI(reuse=sys.argv[1] == "reuse").start()
    install(api)
    import spaces

    @spaces.GPU(duration=20)
    def where(x):
        return os.getpid(), x * 2

    out = {"server": os.getpid(), "calls": [where(i) for i in range(3)]}
    try:
        spaces.GPU(lambda f: f(1))(lambda v: v)
        out["closure"] = "ok"
    except Exception as err:
        out["closure"] = type(err).__name__
    import time
    time.sleep(0.5)
    out["alive"] = [os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split()[2] != "Z"
                    for pid, _ in out["calls"]]
    out["record"] = api.record()
    print(json.dumps(out))
""")


@pytest.mark.parametrize("mode", ["fresh", "reuse"])
def test_the_emulator_runs_the_real_fork_and_pickle_path(mode):
    """A plain function runs in a forked worker and returns; a closure fails to pickle as on a Space;
    without reuse each call gets a fresh worker and the old one is ended, with reuse one worker serves all."""
    import json

    r = subprocess.run([sys.executable, "-c", EMULATOR_CHECK, mode], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    pids = [pid for pid, _ in out["calls"]]
    assert [v for _, v in out["calls"]] == [0, 2, 4]
    assert out["server"] not in pids
    assert out["closure"] == "PicklingError"
    assert [c["duration_s"] for c in out["record"]["schedule"][:3]] == [20, 20, 20]
    if mode == "reuse":
        assert len(set(pids)) == 1 and [c["idle"] for c in out["record"]["schedule"][:3]] == [False, True, True]
    else:
        assert len(set(pids)) == 3 and not any(out["alive"])


def test_image_outputs_are_written_atomically(tmp_path):
    """Two requests returning the same image at once share one cache file: it is never seen partly written
    (gradio 6.31 rewrote it in place, and a client downloaded an empty image)."""
    import gradio.processing_utils as pu
    from PIL import Image

    from lowdim_app.ui import gradio_fixes

    gradio_fixes.install()
    assert pu.save_pil_to_cache is gradio_fixes.save_pil_to_cache
    img = Image.fromarray((np.arange(256 * 256 * 3) % 251).astype("uint8").reshape(256, 256, 3))
    seen, errors = [], []

    def save_and_read():
        path = pu.save_pil_to_cache(img, str(tmp_path), format="png")
        for _ in range(20):
            try:
                with Image.open(path) as im:
                    im.load()
                    seen.append(im.size)
            except Exception as err:
                errors.append(repr(err))

    workers = [threading.Thread(target=save_and_read) for _ in range(8)]
    [w.start() for w in workers]
    [w.join() for w in workers]
    assert not errors and seen and set(seen) == {(256, 256)}
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["image.png"]     # no staging file left
