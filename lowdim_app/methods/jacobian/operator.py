"""``J = df/dx`` at a point as a linear operator on blocks of directions, and what it costs.

``J V`` comes from forward-mode AD (``torch.func.jvp``) or a central difference, ``J^T U`` from reverse
mode (``torch.func.vjp``). Cost is counted in network evaluations: a forward-mode JVP or a VJP of one
direction is one evaluation, a central-difference JVP two (``f(x + h v)`` and ``f(x - h v)``).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable

import torch

from ...errors import UserError
from .memory import MemoryPlan

JVP_MODES = ("central", "forward")
# network evaluations of one JVP direction, per kind (a VJP direction is one)
JVP_EVALUATIONS = {"central": 2, "forward": 1}
# Relative RMS step of the central difference: the most accurate of h = 3e-2 .. 3e-4 in every case
# bench/jacobian_memory.py measured (bench/results/jacobian_memory.csv).
CENTRAL_STEP = 5e-3
TINY = 1e-30


@dataclass
class PassCounter:
    """Work done through an operator: directions, network evaluations and sequential batched calls."""

    jvp_directions: int = 0
    vjp_directions: int = 0
    jvp_calls: int = 0
    vjp_calls: int = 0
    jvp_evaluations: int = 0

    @property
    def passes(self) -> int:
        """Network evaluations (a central-difference JVP direction counts two)."""
        return self.jvp_evaluations + self.vjp_directions

    @property
    def calls(self) -> int:
        return self.jvp_calls + self.vjp_calls

    def snapshot(self) -> "PassCounter":
        return PassCounter(self.jvp_directions, self.vjp_directions, self.jvp_calls, self.vjp_calls,
                           self.jvp_evaluations)

    def since(self, start: "PassCounter") -> "PassCounter":
        return PassCounter(self.jvp_directions - start.jvp_directions, self.vjp_directions - start.vjp_directions,
                           self.jvp_calls - start.jvp_calls, self.vjp_calls - start.vjp_calls,
                           self.jvp_evaluations - start.jvp_evaluations)


class JacobianOperator:
    """``J = df/dx`` at ``x`` as a linear operator on blocks of directions.

    ``f``: batched callable ``(B, *shape) -> (B, *shape)``, rows independent. ``x``: the point, one sample
    without a batch dimension. ``output_mask`` (broadcastable to ``shape``): the operator is ``P_mask J``.
    ``chunk_size``: most directions per batched call; ``memory`` (a :class:`MemoryPlan`) lowers it per kind.
    ``batching``: ``"replicate"`` (``x`` repeated ``b`` times, one call; works for any callable) or
    ``"vmap"`` (``torch.func.vmap``).

    ``jvp_mode``: ``"forward"`` -- forward-mode AD; ``"central"`` -- ``(f(x + h v) - f(x - h v)) / 2h`` in
    the callable's precision without an autograd graph (fused attention kernels run), with perturbation RMS
    ``fd_step * max(rms(x), 1)``. ``jvp_context``: context manager factory entered around forward-mode JVP
    calls only (a U-Net's ``forward_ad_safe``); ``math_attention``: those calls also run under
    ``sdpa_kernel(MATH)``. ``check``: called before every batched call (raise there to cancel).
    """

    def __init__(self, f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *,
                 batching: str = "replicate", chunk_size: int | None = 32, output_mask: torch.Tensor | None = None,
                 math_attention: bool = True, counter: PassCounter | None = None, jvp_mode: str = "forward",
                 fd_step: float | None = None, jvp_context: Callable | None = None,
                 memory: MemoryPlan | None = None, check: Callable[[], None] | None = None):
        if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x):
            raise UserError("the Jacobian point x must be a floating-point tensor")
        if batching not in ("replicate", "vmap"):
            raise UserError(f"batching must be 'replicate' or 'vmap', got {batching!r}")
        if chunk_size is not None and chunk_size < 1:
            raise UserError("chunk_size must be a positive integer or None")
        check_jvp_mode(jvp_mode)
        self.fd_step = CENTRAL_STEP if fd_step is None else float(fd_step)
        if not (self.fd_step > 0 and math.isfinite(self.fd_step)):
            raise UserError(f"the central-difference step must be a positive number, got {fd_step!r}")
        self.f = f
        self.x = x.detach()[None]
        self.shape = tuple(self.x.shape[1:])
        self.n = int(math.prod(self.shape))
        self.batching = batching
        self.chunk_size = chunk_size
        self.math_attention = math_attention
        self.jvp_mode = jvp_mode
        self.jvp_context = jvp_context
        self.memory = memory
        self.check = check
        self.counter = counter if counter is not None else PassCounter()
        self.mask = None
        if output_mask is not None:
            m = torch.as_tensor(output_mask, dtype=self.x.dtype, device=self.x.device)
            try:
                self.mask = torch.broadcast_to(m, self.shape).contiguous()
            except RuntimeError as e:
                raise UserError(f"mask of shape {tuple(m.shape)} does not broadcast to {self.shape}") from e

    @property
    def device(self):
        return self.x.device

    @property
    def dtype(self):
        return self.x.dtype

    @property
    def jvp_evaluations(self) -> int:
        """Network evaluations of one JVP direction (2 for a central difference)."""
        return JVP_EVALUATIONS[self.jvp_mode]

    def with_output_mask(self, mask: torch.Tensor | None) -> "JacobianOperator":
        """Same function and point, output multiplied by ``mask``; shares the pass counter."""
        return JacobianOperator(self.f, self.x[0], batching=self.batching, chunk_size=self.chunk_size,
                                output_mask=mask, math_attention=self.math_attention, counter=self.counter,
                                jvp_mode=self.jvp_mode, fd_step=self.fd_step, jvp_context=self.jvp_context,
                                memory=self.memory, check=self.check)

    def directions_per_call(self, kind: str) -> int:
        """Most directions one batched call of ``kind`` (``"jvp"`` / ``"vjp"``) takes: the smaller of
        ``chunk_size`` and what the memory plan allows."""
        step = self.chunk_size or (1 << 30)
        if self.memory is not None:
            step = min(step, self.memory.directions(kind))
        return max(1, step)

    def value(self) -> torch.Tensor:
        """``f(x)`` (one forward, not counted), shape ``shape``."""
        with torch.no_grad():
            out = self.f(self.x)[0]
        return out * self.mask if self.mask is not None else out

    def _blocks(self, T: torch.Tensor, kind: str):
        T = T.to(device=self.device, dtype=self.dtype).reshape(-1, *self.shape)
        step = self.directions_per_call(kind)
        for i in range(0, T.shape[0], step):
            if self.check is not None:
                self.check()
            yield T[i:i + step].contiguous()

    def _forward_ad_context(self):
        stack = contextlib.ExitStack()
        if self.jvp_context is not None:
            stack.enter_context(self.jvp_context())
        if self.math_attention:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        return stack

    def _jvp_central(self, blk: torch.Tensor) -> torch.Tensor:
        b = blk.shape[0]
        view = (-1, *([1] * len(self.shape)))
        scale = max(float(self.x.pow(2).mean().sqrt()), 1.0)
        rms = blk.reshape(b, -1).pow(2).mean(1).sqrt()
        h = torch.where(rms > 0, self.fd_step * scale / rms.clamp(min=TINY), torch.ones_like(rms)).view(view)
        with torch.no_grad():
            out = self.f(torch.cat([self.x + h * blk, self.x - h * blk]))
        return (out[:b] - out[b:]) / (2 * h)

    def _jvp_forward(self, blk: torch.Tensor) -> torch.Tensor:
        with self._forward_ad_context():
            if self.batching == "replicate":
                xb = self.x.expand(blk.shape[0], *self.shape).contiguous()
                return torch.func.jvp(self.f, (xb,), (blk,))[1]
            x1 = self.x
            return torch.func.vmap(lambda v: torch.func.jvp(self.f, (x1,), (v[None],))[1][0])(blk)

    def jvp(self, V: torch.Tensor) -> torch.Tensor:
        """``J v`` for each row of ``V`` (``(b, *shape)`` or ``(b, n)``); returns ``(b, *shape)``."""
        outs = []
        for blk in self._blocks(V, "jvp"):
            jv = self._jvp_central(blk) if self.jvp_mode == "central" else self._jvp_forward(blk)
            outs.append(jv.detach())
            self.counter.jvp_directions += blk.shape[0]
            self.counter.jvp_evaluations += blk.shape[0] * self.jvp_evaluations
            self.counter.jvp_calls += 1
        out = torch.cat(outs) if outs else torch.zeros(0, *self.shape, dtype=self.dtype, device=self.device)
        return out * self.mask if self.mask is not None else out

    def vjp(self, U: torch.Tensor) -> torch.Tensor:
        """``J^T u`` for each row of ``U``; returns ``(b, *shape)``."""
        outs = []
        for blk in self._blocks(U, "vjp"):
            if self.mask is not None:
                blk = blk * self.mask
            if self.batching == "replicate":
                _, fn = torch.func.vjp(self.f, self.x.expand(blk.shape[0], *self.shape).contiguous())
                (g,) = fn(blk)
            else:
                _, fn = torch.func.vjp(self.f, self.x)
                g = torch.func.vmap(lambda u: fn(u[None])[0][0])(blk)
            outs.append(g.detach())
            del fn
            self.counter.vjp_directions += blk.shape[0]
            self.counter.vjp_calls += 1
        return torch.cat(outs) if outs else torch.zeros(0, *self.shape, dtype=self.dtype, device=self.device)


def check_jvp_mode(jvp_mode: str) -> None:
    if jvp_mode not in JVP_MODES:
        raise UserError(f"jvp mode must be one of {', '.join(JVP_MODES)}, got {jvp_mode!r}")


OPERATOR_KEYS = ("batching", "chunk_size", "output_mask", "math_attention", "counter", "jvp_mode", "fd_step",
                 "jvp_context", "memory", "check")


def as_operator(f_or_op, x=None, **op_kwargs) -> JacobianOperator:
    """``f_or_op`` itself when it is an operator, else the operator of the callable at ``x``."""
    if isinstance(f_or_op, JacobianOperator):
        return f_or_op
    if x is None:
        raise UserError("a point x is needed with a callable")
    return JacobianOperator(f_or_op, x, **op_kwargs)


def flat(T: torch.Tensor, n: int) -> torch.Tensor:
    """``(b, *shape)`` -> ``(n, b)``."""
    return T.reshape(-1, n).T


def unflat(M: torch.Tensor, shape, dtype) -> torch.Tensor:
    """``(n, b)`` -> ``(b, *shape)``."""
    return M.T.contiguous().to(dtype).reshape(-1, *shape)


def apply(op: JacobianOperator, kind: str, M: torch.Tensor) -> torch.Tensor:
    """``J M`` (``kind="jvp"``) or ``J^T M`` (``"vjp"``) of the columns of ``M`` (``n x b``), in ``M``'s dtype."""
    out = (op.jvp if kind == "jvp" else op.vjp)(unflat(M, op.shape, op.dtype))
    return flat(out, op.n).to(M.dtype)
