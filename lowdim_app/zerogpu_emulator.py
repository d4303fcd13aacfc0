"""Run the app under the real ZeroGPU wrapper of the ``spaces`` package on a machine without a GPU.

On a Hugging Face ZeroGPU Space (``SPACES_ZERO_GPU=true``) every function decorated with
``spaces.GPU`` runs in a worker process forked from the server; its arguments and results travel
pickled through a multiprocessing queue, progress is forwarded to the server's queue, and a device
API (``SPACES_ZERO_DEVICE_API_URL``) schedules and releases the GPU. This module keeps all of that
real code and replaces only the two parts that need the Space's hardware:

* ``spaces.zero.torch`` (which needs a CUDA build of torch) by a module of no-ops, installed in
  ``sys.modules`` before ``spaces`` is imported;
* the device API by :class:`DeviceAPI`, a local HTTP server that answers ``/schedule``,
  ``/allow``, ``/release`` and ``/startup-report`` as the Space's scheduler does, and records every
  call (duration asked, task, whether the worker was reused).

``python -m lowdim_app.zerogpu_emulator [app.py] [--reuse] [--port N]`` serves the app this way (the
same process layout as on a Space: with ``app.py`` it runs that file as ``__main__``, as the Space
does); ``GET /calls`` on the stand-in lists what it scheduled. Tests import :func:`install` and
:class:`DeviceAPI`.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import types
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


@dataclass
class ScheduleCall:
    task_id: int
    duration_s: int | None
    idle: bool
    token: str


@dataclass
class DeviceAPI:
    """A local stand-in for the ZeroGPU device API.

    ``reuse``: answer ``idle: true`` when the previous task on the device was released cleanly, so
    ``spaces`` reuses its forked worker (as on a Space between requests); ``False`` forks a fresh
    worker for every call (the harder case for "models load once")."""

    reuse: bool = False
    calls: list[ScheduleCall] = field(default_factory=list)
    released: list[tuple[str, bool]] = field(default_factory=list)
    allowed: list[int] = field(default_factory=list)
    startup_reports: int = 0

    def __post_init__(self):
        self._lock = threading.Lock()
        self._gpus: dict[int, dict] = {}      # device index -> busy, clean (last release), worker pid
        self._tokens: dict[str, int] = {}     # allow token -> device index
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):   # quiet
                pass

            def do_GET(self):    # what the scheduler saw, for tests and benchmarks
                if urlparse(self.path).path != "/calls":
                    self.send_response(404)
                    self.end_headers()
                    return
                data = json.dumps(api.record()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                url = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/schedule":
                    body = api._schedule(q)
                    data = json.dumps(body).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if url.path == "/allow":
                    with api._lock:
                        api.allowed.append(int(q.get("pid", 0)))
                        index = api._tokens.get(q.get("allowToken", ""))
                        if index is not None:
                            api._gpus[index]["pid"] = int(q.get("pid", 0))
                elif url.path == "/release":
                    api._release(q.get("allowToken", ""), q.get("fail", "false").lower() == "true")
                elif url.path == "/startup-report":
                    with api._lock:
                        api.startup_reports += 1
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="zerogpu-device-api")

    def _release(self, token: str, fail: bool) -> None:
        """The device is given back; a worker that will not be reused is ended, as the Space's
        infrastructure does (``spaces`` stops it cleanly on SIGTERM)."""
        with self._lock:
            self.released.append((token, fail))
            index = self._tokens.pop(token, None)
            gpu = self._gpus.get(index, {})
            gpu.update(busy=False, clean=not fail)
            end = fail or not self.reuse
            pid = gpu.get("pid") if end else None
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def _schedule(self, q: dict) -> dict:
        """A free device (concurrent calls get different ones, as on a Space with several GPUs)."""
        with self._lock:
            index = next(i for i in range(len(self._gpus) + 1) if not self._gpus.get(i, {}).get("busy"))
            gpu = self._gpus.setdefault(index, {"busy": False, "clean": False, "pid": 0})
            idle = self.reuse and gpu["clean"]
            gpu.update(busy=True, clean=False)
            token = uuid.uuid4().hex
            self._tokens[token] = index
            duration = int(q["durationSeconds"]) if "durationSeconds" in q else None
            self.calls.append(ScheduleCall(int(q.get("taskId", 0)), duration, idle, token))
        return {"idle": idle, "nvidiaIndex": index, "nvidiaUUID": f"GPU-emulated-{index}", "allowToken": token}

    def record(self) -> dict:
        """Every schedule call (task, duration asked, reused worker), release and allowed pid so far."""
        with self._lock:
            return {"schedule": [vars(c) for c in self.calls], "released": self.released,
                    "allowed": self.allowed, "startup_reports": self.startup_reports}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "DeviceAPI":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _cpu_torch_stand_in() -> types.ModuleType:
    """``spaces.zero.torch`` for a CPU build of torch: nothing to patch, pack or move."""
    mod = types.ModuleType("spaces.zero.torch")
    for name in ("patch", "unpatch", "init", "move", "enter_mode"):
        setattr(mod, name, lambda *args, **kwargs: None)
    mod.pack = lambda *args, **kwargs: 0
    mod.size = lambda *args, **kwargs: 0
    mod.is_in_bad_fork = lambda *args, **kwargs: False
    return mod


def install(api: DeviceAPI) -> None:
    """Put this process in ZeroGPU mode against ``api``; call before anything imports ``spaces``.

    With a CUDA build of torch (a GPU machine) the real ``spaces.zero.torch`` is kept."""
    if "spaces" in sys.modules:
        raise RuntimeError("install() must run before `spaces` is imported")
    os.environ["SPACES_ZERO_GPU"] = "true"
    os.environ["SPACES_ZERO_DEVICE_API_URL"] = api.url
    import torch

    if not torch.cuda.is_available():
        sys.modules["spaces.zero.torch"] = _cpu_torch_stand_in()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lowdim_app.zerogpu_emulator",
                                     description="serve the app under the real spaces.GPU wrapper (ZeroGPU mode)")
    parser.add_argument("script", nargs="?", default=None, help="the Space's app file (default: this app)")
    parser.add_argument("--reuse", action="store_true", help="reuse the forked worker between calls")
    parser.add_argument("--host", default=None)
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    from .threads import prefer_passive_waiting

    prefer_passive_waiting()
    api = DeviceAPI(reuse=args.reuse).start()
    install(api)
    print(f"ZeroGPU device API stand-in at {api.url} (GET /calls lists what it scheduled)", flush=True)
    if args.script:     # as a Space runs it: the app file as __main__ (it reads GRADIO_SERVER_* itself)
        import runpy

        sys.argv = [args.script]
        runpy.run_path(args.script, run_name="__main__")
        return 0
    from .ui.app import launch

    launch(host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
