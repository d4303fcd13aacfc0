"""Shared fixtures: offline environment, tiny pipelines, and one running app server per session."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("LOWDIM_DEVICE", "cpu")

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for modules of many tiny tensor ops (avoids oversubscription on 2 cores)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@contextmanager
def serve_blocks(build):
    """A standalone ``gr.Blocks`` holding ``build()``, served on a free port; yields a gradio_client."""
    from gradio_client import Client

    from lowdim_app.ui.common import Blocks

    with Blocks() as demo:
        build()
    port = free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield Client(f"http://127.0.0.1:{port}/", verbose=False)
    finally:
        demo.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory) -> Path:
    from lowdim_app.diffusion.tiny import build_tiny_sd_pipeline

    return build_tiny_sd_pipeline(tmp_path_factory.mktemp("tiny-sd") / "pipe", seed=0)


@pytest.fixture(scope="session")
def tiny_pixel_dir(tmp_path_factory) -> Path:
    from lowdim_app.diffusion.tiny import build_tiny_pixel_pipeline

    return build_tiny_pixel_pipeline(tmp_path_factory.mktemp("tiny-px") / "pipe", seed=0)


@pytest.fixture(scope="session")
def tiny_sd(tiny_sd_dir):
    from lowdim_app.diffusion import load_model

    return load_model(str(tiny_sd_dir), "cpu")


@pytest.fixture(scope="session")
def digits_gen():
    from lowdim_app.diffusion import load_model

    return load_model("digits-gen", "cpu")


class Server(str):
    """A served app's base URL, with its log file and (under the ZeroGPU emulation) the URL of the
    device-API stand-in (``GET /calls`` lists what it scheduled)."""

    log: Path
    device_api: str | None
    pid: int

    def calls(self) -> dict:
        import json

        return json.load(urllib.request.urlopen(f"{self.device_api}/calls", timeout=10))


@contextmanager
def start_app(log_name: str = "server.log", zerogpu: bool = False, reuse: bool = True, **env_extra):
    """`python app.py` (the README's first command) on a free port; yields its base URL (a :class:`Server`).

    ``zerogpu``: as on a ZeroGPU Space -- the same ``app.py`` under the real ``spaces.GPU`` wrapper
    (:mod:`lowdim_app.zerogpu_emulator`; ``reuse``: the forked worker is reused between calls)."""
    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1", **env_extra)
    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / log_name
    log = open(log_path, "w")
    cmd = [sys.executable, "app.py"]
    if zerogpu:   # spaces in ZeroGPU mode: every GPU call forked and pickled (the emulator stands in for the device API)
        cmd = [sys.executable, "-m", "lowdim_app.zerogpu_emulator", "app.py"] + (["--reuse"] if reuse else [])
        env["SPACES_ZERO_GPU"] = "true"
    start = time.perf_counter()
    # a session of its own: the ZeroGPU workers it forks end with it (they outlive a plain terminate())
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = Server(f"http://127.0.0.1:{port}/")
    url.log, url.device_api, url.pid = log_path, None, proc.pid
    try:
        for _ in range(600):
            if proc.poll() is not None:
                raise RuntimeError(f"app exited with {proc.returncode}; see test-artifacts/{log_name}")
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except Exception:
                time.sleep(0.25)
        else:
            raise RuntimeError("app did not start within 150 s")
        (ARTIFACTS / "app_start_seconds.txt").write_text(f"{time.perf_counter() - start:.2f}\n")
        if zerogpu:
            import re

            url.device_api = re.search(r"stand-in at (http://\S+)", log_path.read_text()).group(1)
        yield url
    finally:
        _stop_group(proc)
        log.close()


def _stop_group(proc: subprocess.Popen) -> None:
    """End a server started in a session of its own and every process it forked."""
    import signal

    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        try:
            os.killpg(proc.pid, signal.SIGKILL)   # the group's forked workers, once the server is gone
        except ProcessLookupError:
            pass
        return


@pytest.fixture(scope="session")
def app_server():
    """The app every API and browser test talks to, served as on a ZeroGPU Space: every model action
    runs through the real ``spaces.GPU`` wrapper in a forked worker (``LOWDIM_TEST_SERVER=plain``:
    plain ``python app.py`` instead)."""
    with start_app(zerogpu=os.environ.get("LOWDIM_TEST_SERVER", "zerogpu") != "plain") as url:
        yield url


@pytest.fixture(scope="session")
def client(app_server):
    from gradio_client import Client

    return Client(app_server, verbose=False)


def chromium_path() -> str | None:
    for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if os.path.exists(p):
            return p
    return None


@pytest.fixture(scope="session")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    exe = chromium_path()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("Debian chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--headless", "--no-sandbox", "--disable-gpu",
                                                         "--disable-background-networking", "--no-first-run",
                                                         "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


@pytest.fixture
def page(browser, app_server):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1100})
    pg = ctx.new_page()
    pg.set_default_timeout(120_000)
    pg.goto(app_server)
    pg.wait_for_selector("#tabs", timeout=60_000)
    yield pg
    ctx.close()


def run_reproduce_line(text: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the CLI command quoted in a UI "Reproduce: `...`" text verbatim (in ``cwd``, as a user would)."""
    import re
    import shlex

    m = re.search(r"`(python -m lowdim_app [^`]+)`", text)
    assert m, f"no reproduce line in {text!r}"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    argv = shlex.split(m.group(1))
    assert argv[:3] == ["python", "-m", "lowdim_app"]
    r = subprocess.run([sys.executable, *argv[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{m.group(1)} failed:\n{r.stderr[-2000:]}"
    return r


def final_output(outputs):
    """The last result a streaming UI handler yields (skipping its heartbeats), or a plain return value."""
    import inspect

    if not inspect.isgenerator(outputs):
        return outputs
    last = None
    for out in outputs:
        if not all(isinstance(o, dict) and o.get("__type__") == "update" and len(o) == 1 for o in out):
            last = out
    return last


def cancel_in_browser(page, log: Path, lab: str, start: str, cancel: str, wait_ms: int = 3000) -> int:
    """Click ``start``, then ``cancel`` ``wait_ms`` after the run reported its first progress (a Cancel before
    the run has started only drops the queued event, which logs nothing); returns how many new "<lab>: run
    stopped by Cancel" lines the server logged within 60 s (the computation itself stopped)."""
    line = f"{lab}: run stopped by Cancel"
    before = log.read_text().count(line)
    page.locator(start).click()
    page.locator(".progress-level").first.wait_for(state="visible", timeout=60_000)
    page.wait_for_timeout(wait_ms)
    page.locator(cancel).click()
    deadline = time.time() + 60
    while time.time() < deadline and log.read_text().count(line) == before:
        time.sleep(0.5)
    return log.read_text().count(line) - before


def loaded_image_size(page, selector: str, min_width: int = 1, timeout: int = 60_000) -> tuple[int, int]:
    """Natural size of the first image under ``selector`` once the browser has decoded one at least
    ``min_width`` wide: a result's text can render before its image has loaded (then naturalWidth is 0)."""
    page.wait_for_function("([sel, w]) => (document.querySelector(sel)?.naturalWidth || 0) >= w",
                           arg=[selector, min_width], timeout=timeout)
    return tuple(page.locator(selector).first.evaluate("i => [i.naturalWidth, i.naturalHeight]"))


def wait_uploaded(page, selector: str, names: list[str], timeout: int = 120_000) -> None:
    """Wait until the file component under ``selector`` lists every name in ``names`` as uploaded. Gradio shows
    "Uploading N files..." with whole names first, then each name as stem and extension in separate flex items
    (innerText "name\\n.png"), which ``get_by_text(name)`` no longer matches: compare without whitespace."""
    js = ("([sel, names]) => { const t = (document.querySelector(sel)?.innerText || '');"
          " const flat = t.replace(/\\s+/g, ''); return !t.includes('Uploading') && names.every(n => flat.includes(n)); }")
    page.wait_for_function(js, arg=[selector, list(names)], timeout=timeout)
