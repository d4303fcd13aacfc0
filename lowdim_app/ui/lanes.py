"""Admission by estimated cost, so that a small request never waits behind a large one.

Model actions (sample, edit, score, calibrate, steer, audit) take one of two lanes by their estimated
seconds on this server: up to :data:`QUICK_S` the *quick* lane, above it the *long* lane. Each lane
runs its requests one at a time in arrival order; the two lanes run side by side. A request waiting
for its lane says where it stands and can be cancelled.
"""
from __future__ import annotations

import threading
from collections import deque
from contextlib import contextmanager
from typing import Callable, Iterator

from ..features.base import Cancelled

QUICK_S = 10.0          # estimated seconds up to which a request counts as quick
POLL_S = 0.25
# gradio's side: every model action shares one concurrency group wide enough that requests waiting
# for the long lane never hold the places quick ones need (gradio queues beyond it, first come first served)
MODEL_EVENTS = {"concurrency_id": "models", "concurrency_limit": 8}


class Lanes:
    """Two FIFO lanes (``quick``, ``long``) with ``slots`` concurrent runs each."""

    def __init__(self, quick_s: float = QUICK_S, slots: int = 1):
        self.quick_s = quick_s
        self._slots = slots
        self._cond = threading.Condition()
        self._free = {"quick": slots, "long": slots}
        self._waiting: dict[str, deque] = {"quick": deque(), "long": deque()}

    def lane_for(self, seconds: float) -> str:
        return "quick" if seconds <= self.quick_s else "long"

    def busy(self) -> int:
        """Runs admitted and not finished, over both lanes."""
        with self._cond:
            return sum(self._slots - free for free in self._free.values())

    @contextmanager
    def admit(self, seconds: float, should_stop: Callable[[], bool] = lambda: False,
              on_wait: Callable[[str], None] | None = None) -> Iterator[str]:
        """Hold a slot of the request's lane while the block runs; raises :class:`Cancelled` when
        ``should_stop`` turns true while waiting. ``on_wait`` gets a line saying what it waits for."""
        lane = self.lane_for(seconds)
        ticket = object()
        told = None
        with self._cond:
            queue = self._waiting[lane]
            queue.append(ticket)
            try:
                while not (queue[0] is ticket and self._free[lane] > 0):
                    if should_stop():
                        raise Cancelled()
                    ahead = queue.index(ticket) + (1 if self._free[lane] <= 0 else 0)
                    line = f"waiting for the {lane} lane: {ahead} request{'s' if ahead != 1 else ''} ahead"
                    if on_wait is not None and line != told:
                        told = line
                        self._cond.release()
                        try:
                            on_wait(line)
                        finally:
                            self._cond.acquire()
                    self._cond.wait(POLL_S)
                queue.popleft()
                self._free[lane] -= 1
            except BaseException:
                if ticket in queue:
                    queue.remove(ticket)
                    self._cond.notify_all()
                raise
        try:
            yield lane
        finally:
            with self._cond:
                self._free[lane] += 1
                self._cond.notify_all()
