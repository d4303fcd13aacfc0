"""How many threads torch uses for a computation: one rule for the app, the CLI and the library.

    threads = max(1, round(free cores) // concurrent computations)

* **cores** this process may use: its CPU affinity, capped by a cgroup CPU quota (containers, Spaces);
* **free**: minus the cores other processes kept busy over a short sample of ``/proc/stat``
  (a CPU user's machine is often loaded; torch's OpenMP threads spin-wait on each other, so two
  threads on a core another process also wants run many times slower than one -- ``bench/threads.py``);
* **concurrent computations**: the runs this process is doing at once (the app passes how many of
  its requests compute now; the CLI and a library call are one).

The user's choice always wins: ``OMP_NUM_THREADS`` in the environment, or a
``torch.set_num_threads`` call made before ours, is kept as it is.

:func:`prefer_passive_waiting` (called by the CLI and the app before torch is imported) also asks
OpenMP to put idle threads to sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``) unless the
user chose a policy, which bounds the damage when a load starts in the middle of a run.
"""
from __future__ import annotations

import os
import time

from . import forksafe

SAMPLE_S = 0.1            # how long to watch /proc/stat for other processes' load
CACHE_S = 2.0             # a measured load is reused this long (the app asks once per request)
USER_ENV = ("OMP_NUM_THREADS",)
CGROUP_V2 = "/sys/fs/cgroup/cpu.max"
CGROUP_V1 = ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us")

_lock = forksafe.Lock()
_state = {"set": None, "load": None, "load_at": 0.0}


def prefer_passive_waiting() -> None:
    """``OMP_WAIT_POLICY=PASSIVE`` unless the user set one; only effective before torch is imported."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def cores_available() -> float:
    """CPUs this process may run on: its affinity, capped by a cgroup (v2 or v1) CPU quota."""
    try:
        cores = float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        cores = float(os.cpu_count() or 1)
    quota = _cgroup_quota()
    return max(1.0, min(cores, quota)) if quota else max(1.0, cores)


def _cgroup_quota() -> float | None:
    try:
        text = open(CGROUP_V2).read().split()
        if text and text[0] != "max":
            return float(text[0]) / float(text[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        quota = float(open(CGROUP_V1[0]).read())
        period = float(open(CGROUP_V1[1]).read())
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


def _cpu_jiffies() -> tuple[float, float] | None:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)    # idle + iowait
    return sum(fields) - idle, sum(fields)


def other_load(sample_s: float = SAMPLE_S) -> float:
    """Cores kept busy by other processes over the last ``sample_s`` seconds (0 when unknown)."""
    now = time.monotonic()
    with _lock:
        if _state["load"] is not None and now - _state["load_at"] < CACHE_S:
            return _state["load"]
    a, own_a = _cpu_jiffies(), sum(os.times()[:2])
    if a is None:
        return 0.0
    time.sleep(sample_s)
    b, own_b = _cpu_jiffies(), sum(os.times()[:2])
    if b is None or b[1] <= a[1]:
        return 0.0
    ncpu = os.cpu_count() or 1
    busy_cores = (b[0] - a[0]) / (b[1] - a[1]) * ncpu
    load = max(0.0, busy_cores - (own_b - own_a) / sample_s)
    with _lock:
        _state.update(load=load, load_at=time.monotonic())
    return load


def user_threads() -> int | None:
    """The thread count the user chose (environment, or ``torch.set_num_threads`` before us)."""
    for name in USER_ENV:
        text = os.environ.get(name, "").strip()
        if text.isdigit() and int(text) > 0:
            return int(text)
    import torch

    current = torch.get_num_threads()
    ours = _state["set"] if _state["set"] is not None else _torch_default()
    return current if current != ours else None


def _torch_default() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def rule(workers: int = 1, load: float | None = None, cores: float | None = None) -> int:
    """The thread count for one of ``workers`` concurrent computations (the user's choice aside)."""
    cores = cores_available() if cores is None else cores
    load = other_load() if load is None else load
    free = max(1.0, cores - load)
    return max(1, int(free + 0.5) // max(1, workers))


def apply(workers: int = 1) -> int:
    """Set torch's intra-op threads by :func:`rule` unless the user chose; returns the count in use."""
    import torch

    chosen = user_threads()
    n = chosen if chosen is not None else rule(workers)
    with _lock:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
        _state["set"] = n           # what we set: a later difference is the user's own call
    return n
