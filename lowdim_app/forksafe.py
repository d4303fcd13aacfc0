"""Locks that survive ``fork``: a ZeroGPU worker is forked from the server while other request threads
run, so a lock one of them held at that instant would stay held forever in the child. A
:class:`Lock` is replaced by a fresh one in the child after every fork."""
from __future__ import annotations

import os
import threading
import weakref

_ALL: "weakref.WeakSet[Lock]" = weakref.WeakSet()


class Lock:
    """``threading.Lock`` (or ``RLock`` with ``reentrant=True``) that is new and free in a forked child."""

    def __init__(self, reentrant: bool = False):
        self._factory = threading.RLock if reentrant else threading.Lock
        self._lock = self._factory()
        _ALL.add(self)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self):
        self._lock.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()

    def _renew(self) -> None:
        self._lock = self._factory()


def _after_fork_in_child() -> None:
    for lock in list(_ALL):
        lock._renew()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
