"""The app as a ZeroGPU Space runs it: every model action through the real ``spaces.GPU`` wrapper.

The session's ``app_server`` is ``app.py`` under :mod:`lowdim_app.zerogpu_emulator` -- the real fork /
pickle / queue code of ``spaces`` in ZeroGPU mode, with the device API answered by a local stand-in
(``GET /calls`` lists what it scheduled). These tests check what only that runtime shows: the work
runs in a forked worker, sees plain data only, reports progress from there, stops on Cancel, and
the server loads each model once.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, loaded_image_size

EX = sorted(str(p) for p in (REPO / "assets" / "examples").glob("digit_*.png"))
HEAVY = ("digits-gen", 64, 0, 1000, "", 7.5)      # 64,000 U-Net passes: minutes on this CPU


@pytest.fixture(scope="module")
def server(app_server):
    if app_server.device_api is None:
        pytest.skip("the session server is not under the ZeroGPU emulation (LOWDIM_TEST_SERVER=plain)")
    return app_server


def _editor(path: str) -> dict:
    from gradio_client import handle_file

    return {"background": handle_file(path), "layers": [], "composite": handle_file(path), "id": None}


def _files(paths):
    from gradio_client import handle_file

    return [handle_file(p) for p in paths]


def _worker_pids(server) -> set[int]:
    return set(server.calls()["allowed"])


def test_every_model_action_runs_in_a_forked_worker(server, client):
    """Sample, find directions, edit, apply a saved direction, score, calibrate, steer and audit each
    cross the process boundary (pickled settings and plain inputs in, the result out) and come back."""
    before = len(server.calls()["schedule"])
    grid, line = client.predict("digits-gen", 4, 0, 10, "", 7.5, api_name="/sample")
    assert Path(grid).is_file() and "--model digits-gen" in line
    found = client.predict(_editor(EX[0]), "digits-gen", 0.7, 2, 10, "", False, 400, 0.05, "central",
                           api_name="/find_directions")
    assert len(found[1]) == 2                                  # v_1, v_2
    strip = client.predict(_editor(EX[0]), 1, 4, 3, 0, 0.8, api_name="/edit")
    assert Path(strip[0]).is_file()
    direction = client.predict(1, api_name="/save_direction")
    applied = client.predict(_editor(EX[1]), _files([direction])[0], "digits-gen", 10, "", 4, 3, 0,
                             api_name="/apply_direction")
    assert Path(applied[0]).is_file()
    table = client.predict(_files(EX[:2]), "digits-dup", "", 50, "", 2, 0, 0, None, False, api_name="/score")[0]
    assert [row[0] for row in table["data"]] == [Path(p).name for p in EX[:2]]
    roc, text, cal = client.predict(_files(EX[:2]), _files(EX[2:4]), "digits-dup", "", 50, "std", 0.25,
                                    api_name="/calibrate")
    assert Path(cal).is_file() and "AUROC" in text
    steer = client.predict("digits-dup", "digit class", 4, "", None, 1, None, 1.0, 3, "recipe", "", False, 0, None,
                           api_name="/steer")
    assert Path(steer[0]).is_file()
    calls = server.calls()
    new = calls["schedule"][before:]
    assert len(new) == 7                                       # one GPU call per model action
    assert all(15 <= c["duration_s"] <= 120 for c in new)      # sized from the cost, within ZeroGPU's limits
    assert server.pid not in calls["allowed"]                  # the work ran in forked workers
    tokens = {c["token"] for c in new}
    assert all(not failed for token, failed in calls["released"] if token in tokens)


def test_progress_reaches_the_client_from_inside_the_worker(server, client):
    """The library's tqdm bar (the DDIM steps, counted in the worker) is forwarded by ``spaces`` to the
    server's queue and reaches the client as it advances."""
    job = client.submit("digits-gen", 16, 1, 300, "", 7.5, api_name="/sample")
    steps = {}
    while not job.done():
        for unit in job.status().progress_data or []:
            if unit.index is not None:
                steps.setdefault((unit.desc or "").strip(), set()).add(unit.index)
        time.sleep(0.1)
    assert Path(job.result()[0]).is_file()
    ddim = steps.get("DDIM sampling", set())
    assert len(ddim) >= 3 and max(ddim) > min(ddim), steps     # several distinct step counts, increasing


def test_a_user_error_inside_the_worker_is_one_line(server, client):
    """An error the feature raises in the worker comes back as its own line, not "ZeroGPU worker error"."""
    with pytest.raises(Exception) as err:
        client.predict(_files(EX[:1]), _files(EX[1:2]), "digits-dup", "", 50, "std", 0.01, api_name="/calibrate")
    message = str(err.value)
    assert "need at least 2" in message and "ZeroGPU" not in message and "Traceback" not in message


def _cpu_seconds(pids: set[int]) -> float:
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _cpu_over(pids: set[int], seconds: float) -> float:
    c0 = _cpu_seconds(pids)
    time.sleep(seconds)
    return _cpu_seconds(pids) - c0


def test_cancel_reaches_the_forked_worker(server, client):
    """Cancel from the API stops the computation in the worker process: its CPU is idle within 10 s,
    and the next request runs normally."""
    known = _worker_pids(server)
    job = client.submit(*HEAVY, api_name="/sample")
    deadline = time.time() + 60
    while time.time() < deadline and not _cpu_over(_worker_pids(server) | known, 0.5) > 0.25:
        pass
    workers = _worker_pids(server) | known
    assert _cpu_over(workers, 1.0) > 0.5, "the heavy sample is not computing in a worker"
    t0 = time.perf_counter()
    job.cancel()
    while time.perf_counter() - t0 < 10 and _cpu_over(workers | {server.pid}, 1.0) > 0.3:
        pass
    stopped_after = time.perf_counter() - t0
    idle = _cpu_over(workers | {server.pid}, 1.0)
    assert stopped_after < 10 and idle < 0.3, (stopped_after, idle)
    grid, line = client.predict("digits-gen", 2, 3, 5, "", 7.5, api_name="/sample")
    assert Path(grid).is_file() and "--seed 3" in line


def test_the_server_loads_each_model_once():
    """Models are read from disk once, by the server process at start-up; workers use the inherited copy.
    A fresh Space: the session's server has loaded many folder models since its worker was forked."""
    from gradio_client import Client

    from tests.conftest import start_app

    with start_app("zerogpu_fresh_server.log", zerogpu=True) as server:
        client = Client(server, verbose=False)
        for seed in (5, 6):
            client.predict("digits-mem", 2, seed, 5, "", 7.5, api_name="/sample")
        text = server.log.read_text()
    reads = re.findall(r"model (\S+) on (\S+): read from disk in [\d.]+ s \(process (\d+)\)", text)
    by_model = {}
    for model, device, pid in reads:
        by_model.setdefault((model, device), []).append(int(pid))
    assert by_model[("digits-mem", "cpu")] == [server.pid]
    assert all(pids == [server.pid] for pids in by_model.values()), by_model


@pytest.mark.parametrize("api_name, args", [
    ("/phase", (48, 1, 2, 4, 2, 6, 2, 0.0, "svd", "hardmax", 0)),
    ("/molrg_rank", (24, 3, 3, 200, 2, 20, 50, 0)),
    ("/gl_score", (24, 2, "3", "1,4", 50, 64, 50, 0)),
    ("/relu_dae", ("mog", 8, 0.2, 0.001, True, 4, 64, False, 10, 50, False, 0)),
    ("/mog_ddpm", (4, 4.0, 2.5, 0.05, 1.0, 0.5, 5, 5, 2, 512, 0)),
    ("/molr_mog", ("synthetic", 2, 8, 2, 2, 20, 0)),
])
def test_every_lab_runs_on_the_space(server, client, api_name, args):
    """The live labs compute on the Space's CPU (no GPU quota) and stream to the end."""
    out = client.predict(*args, api_name=api_name)
    text = " ".join(str(o) for o in out)
    assert "done in" in text or "Reproduce" in text, text[:500]


def test_a_small_job_does_not_wait_behind_a_large_one(server, artifacts):
    """While a 64-image x 1000-step sample computes, a 1-image 4-step sample and a k = 1 direction search
    (each estimated at a few seconds: the quick lane) finish before it -- not queued behind it."""
    from gradio_client import Client

    heavy_client, small_client = Client(server, verbose=False), Client(server, verbose=False)
    heavy = heavy_client.submit(*HEAVY, api_name="/sample")
    before = len(server.calls()["schedule"])
    deadline = time.time() + 60
    while time.time() < deadline and len(server.calls()["schedule"]) == before:
        time.sleep(0.2)
    time.sleep(2.0)                                            # the heavy job holds the long lane and computes
    latencies = {}
    t0 = time.perf_counter()
    small_client.predict("digits-gen", 1, 0, 4, "", 7.5, api_name="/sample")
    latencies["sample 1 image x 4 steps"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    small_client.predict(_editor(EX[0]), "digits-gen", 0.7, 1, 4, "", False, 400, 0.05, "central",
                         api_name="/find_directions")
    latencies["find_directions k=1, 4 steps"] = time.perf_counter() - t0
    heavy_still_running = not heavy.done()
    heavy.cancel()
    with open(artifacts / "fairness_seconds.txt", "w") as f:
        for name, s in latencies.items():
            f.write(f"{name} while a 64 x 1000-step sample runs: {s:.2f} s\n")
    assert heavy_still_running, "the heavy job ended first: the test shows nothing"


def _upload(server, name: str, data: bytes):
    """POST one file to gradio's upload route; (HTTP status, the stored path or the error text)."""
    import json
    import urllib.error
    import urllib.request
    import uuid

    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(f"{server}gradio_api/upload", data=body,
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.load(r)[0]
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")
    except (urllib.error.URLError, ConnectionError) as err:     # the server may close while we still send
        return 0, f"connection closed by the server: {err}"


def _call(server, api_name: str, data: list) -> tuple[float, dict]:
    """One queued call through gradio's HTTP API: (seconds from joining the queue to its end, the message)."""
    import json
    import urllib.request
    import uuid

    config = json.load(urllib.request.urlopen(f"{server}config", timeout=30))
    fn = next(d["id"] for d in config["dependencies"] if d.get("api_name") == api_name.strip("/"))
    session = uuid.uuid4().hex
    payload = json.dumps({"data": data, "fn_index": fn, "session_hash": session}).encode()
    t0 = time.perf_counter()
    urllib.request.urlopen(urllib.request.Request(f"{server}gradio_api/queue/join", data=payload,
                                                  headers={"Content-Type": "application/json"}), timeout=30)
    with urllib.request.urlopen(f"{server}gradio_api/queue/data?session_hash={session}", timeout=120) as r:
        for line in r:
            line = line.decode().strip()
            if '"process_completed"' in line:
                return time.perf_counter() - t0, json.loads(line[5:])
    raise AssertionError("no completion message")


def test_uploads_are_capped_before_they_are_read(server, artifacts):
    """1000 files in one request are refused from the payload alone (no file moved or opened), in one
    line; a file over the size limit is refused by the upload route before it is stored."""
    status, path = _upload(server, "d.png", Path(EX[0]).read_bytes())
    assert status == 200
    ref = {"path": path, "orig_name": "d.png", "meta": {"_type": "gradio.FileData"}}
    seconds, msg = _call(server, "/score", [[ref] * 1000, "digits-dup", "", 50, "", 4, 0, 0, None, False])
    assert msg["success"] is False and "at most 256 files per request, got 1000" in msg["output"]["error"]
    status, text = _upload(server, "big.png", b"\0" * (21 * 1024 * 1024))
    with open(artifacts / "fairness_seconds.txt", "a") as f:
        f.write(f"1000-file /score refused after {seconds:.2f} s (server side, from joining the queue)\n"
                f"21 MB upload: HTTP {status}\n")
    assert (status == 413 and "maximum" in text.lower()) or (status == 0 and "closed" in text), (status, text)
    assert _upload(server, "d.png", Path(EX[0]).read_bytes())[0] == 200       # and the server goes on
    assert seconds < 10            # from the payload alone: no 1000 file moves or image checks


def test_browser_walkthrough_on_the_emulated_space(server, page, artifacts):
    """A visitor on the Space: the sample's DDIM progress (counted in the forked worker) shows in the
    page's progress bar, Cancel stops it, the next sample shows its grid; then the next sample."""
    page.locator("#models-n input[type=number]").fill("32")
    page.locator("#models-n input[type=number]").press("Enter")
    page.locator("#models-steps input[type=number]").fill("1000")
    page.locator("#models-steps input[type=number]").press("Enter")
    page.locator("#models-sample-btn").click()
    shown = page.wait_for_function(
        "() => { const e = [...document.querySelectorAll('.progress-level-inner, .progress-text')].find(x => "
        "x.offsetParent && /DDIM sampling/.test(x.innerText)); return e ? e.innerText : false }",
        timeout=120_000, polling=100)
    assert "DDIM sampling" in shown.json_value()
    page.screenshot(path=str(artifacts / "zerogpu_progress.png"), full_page=False)
    workers = _worker_pids(server)
    page.locator("#models-cancel").click()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 10 and _cpu_over(workers | {server.pid}, 1.0) > 0.3:
        pass
    assert _cpu_over(workers | {server.pid}, 1.0) < 0.3
    page.locator("#models-steps input[type=number]").fill("10")
    page.locator("#models-steps input[type=number]").press("Enter")
    page.locator("#models-sample-btn").click()
    page.wait_for_function("document.querySelector('#models-reproduce')?.innerText.includes('--steps 10')",
                           timeout=120_000)
    assert loaded_image_size(page, "#models-grid img", 128)[0] >= 128
    page.screenshot(path=str(artifacts / "zerogpu_models.png"), full_page=False)
