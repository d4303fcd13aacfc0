"""Forward hooks on named U-Net modules, as context managers.

* :func:`capture` records the output of named modules.
* :func:`add_vector` adds ``scale * v`` to a module's output (optionally only to the
  conditional half of a classifier-free-guidance batch, and only while ``handle.enabled``).
* :func:`run_until` runs the U-Net and stops right after a module (the rest is not computed).

Hooks are registered on modules that several requests may share. Each hook only acts
inside the context that installed it (a :class:`contextvars.ContextVar` holds the
active tokens), so a concurrent request on another thread never sees it.

Convention for CFG batches (diffusers): the batch is ``[unconditional; conditional]``.
"""
from __future__ import annotations

import contextvars
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Mapping

import torch

from ..errors import UserError

_ACTIVE: contextvars.ContextVar[frozenset] = contextvars.ContextVar("lowdim_active_hooks", default=frozenset())


@contextmanager
def _scope(token: object) -> Iterator[None]:
    reset = _ACTIVE.set(_ACTIVE.get() | {token})
    try:
        yield
    finally:
        _ACTIVE.reset(reset)


def _mine(token: object) -> bool:
    return token in _ACTIVE.get()


def get_module(root: torch.nn.Module, name: str) -> torch.nn.Module:
    """``root.get_submodule(name)`` with a clear error listing nearby names."""
    try:
        return root.get_submodule(name)
    except AttributeError:
        prefix = name.rsplit(".", 1)[0]
        near = [n for n, _ in root.named_modules() if n.startswith(prefix)][:8]
        raise UserError(f"no module named {name!r} in the U-Net (e.g. {', '.join(near) or 'see list_layers'})") from None


def _first_tensor(output) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if hasattr(output, "sample"):
        return output.sample
    raise TypeError(f"cannot read a tensor from module output of type {type(output).__name__}")


def _replace_first(output, new: torch.Tensor):
    if isinstance(output, torch.Tensor):
        return new
    if isinstance(output, tuple):
        return (new, *output[1:])
    if isinstance(output, list):
        return [new, *output[1:]]
    raise TypeError(f"cannot modify module output of type {type(output).__name__}")


@dataclass
class Captured:
    """Outputs recorded per module name, one entry per call (a module may run several times per forward)."""

    outputs: dict[str, list[torch.Tensor]] = field(default_factory=dict)

    def last(self, name: str) -> torch.Tensor:
        if not self.outputs.get(name):
            raise RuntimeError(f"module {name!r} did not run")
        return self.outputs[name][-1]

    def clear(self) -> None:
        for v in self.outputs.values():
            v.clear()


@contextmanager
def capture(root: torch.nn.Module, names, detach: bool = True) -> Iterator[Captured]:
    """Record the output of each named module (every call) while the context is open."""
    names = [names] if isinstance(names, str) else list(names)
    token = object()
    store = Captured({n: [] for n in names})
    handles = []
    for name in names:
        def hook(_m, _inp, out, name=name):
            if _mine(token):
                t = _first_tensor(out)
                store.outputs[name].append(t.detach() if detach else t)
        handles.append(get_module(root, name).register_forward_hook(hook))
    try:
        with _scope(token):
            yield store
    finally:
        for h in handles:
            h.remove()


@dataclass
class AddHandle:
    """Switches for an :func:`add_vector` hook; the sampler's step callback flips ``enabled``."""

    enabled: bool = True
    scale: float = 1.0
    calls: int = 0


@contextmanager
def add_vector(
    root: torch.nn.Module,
    vectors: Mapping[str, torch.Tensor],
    scale: float = 1.0,
    cond_half_only: bool = False,
    call_index: int | None = None,
) -> Iterator[AddHandle]:
    """Add ``scale * vectors[name]`` to each named module's output (Zhang et al. 2025, eq. 11).

    ``vectors[name]`` broadcasts against the output (``1 x C x 1 x 1`` channel vector or
    ``1 x C x H x W`` spatial vector). With ``cond_half_only`` only the second half of the
    batch (the conditional half of a CFG batch) is changed. ``call_index`` restricts the
    addition to the i-th call of the module within one U-Net forward (``None``: every call).
    """
    token = object()
    handle = AddHandle(scale=scale)
    handles = []
    counters: dict[str, int] = {}

    def pre_unet(_m, _args):
        if _mine(token):
            counters.clear()

    for name, vec in vectors.items():
        module = get_module(root, name)

        def hook(_m, _inp, out, name=name, vec=vec):
            if not _mine(token):
                return None
            k = counters.get(name, 0)
            counters[name] = k + 1
            if not handle.enabled or (call_index is not None and k != call_index):
                return None
            t = _first_tensor(out)
            delta = (handle.scale * vec).to(device=t.device, dtype=t.dtype)
            if cond_half_only:
                if t.shape[0] % 2:
                    raise RuntimeError("cond_half_only needs a CFG batch [uncond; cond] of even size")
                half = t.shape[0] // 2
                new = torch.cat([t[:half], t[half:] + delta])
            else:
                new = t + delta
            handle.calls += 1
            return _replace_first(out, new)

        handles.append(module.register_forward_hook(hook))
    handles.append(root.register_forward_pre_hook(pre_unet))
    try:
        with _scope(token):
            yield handle
    finally:
        for h in handles:
            h.remove()


class _Stop(Exception):
    pass


def run_until(root: torch.nn.Module, name: str, *args, call_index: int = 0, **kwargs) -> torch.Tensor:
    """Run ``root(*args, **kwargs)`` and return the output of module ``name`` at its
    ``call_index``-th call, stopping the forward right there (later layers never run)."""
    token = object()
    module = get_module(root, name)
    seen = {"n": 0, "out": None}

    def hook(_m, _inp, out):
        if not _mine(token):
            return None
        if seen["n"] == call_index:
            seen["out"] = _first_tensor(out).detach()
            raise _Stop
        seen["n"] += 1
        return None

    h = module.register_forward_hook(hook)
    try:
        with _scope(token):
            root(*args, **kwargs)
    except _Stop:
        pass
    finally:
        h.remove()
    if seen["out"] is None:
        raise RuntimeError(f"module {name!r} ran {seen['n']} time(s); call {call_index} never happened")
    return seen["out"]


def list_layers(root: torch.nn.Module, kinds: tuple[str, ...] = ("ResnetBlock2D", "Transformer2DModel", "UNetMidBlock2D",
                                                                  "UNetMidBlock2DCrossAttn", "Attention")) -> list[str]:
    """Names of modules whose class name is in ``kinds`` (the useful hook points), in forward order."""
    return [n for n, m in root.named_modules() if n and type(m).__name__ in kinds]
