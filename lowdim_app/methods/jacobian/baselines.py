"""Other top-k solvers on the same operator: LOCO Edit's power iteration (the baseline of Chen et al. 2024,
arXiv:2409.02374) and ARPACK (``scipy.sparse.linalg.svds`` on a ``LinearOperator``: restarted single-vector
Lanczos, one direction per call)."""
from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ...errors import UserError, check_range
from .krylov import orthonormal_block
from .operator import apply, as_operator, unflat
from .result import JacobianSVD


def subspace_iteration(f_or_op, x: torch.Tensor | None = None, k: int = 5, *, tol: float = 1e-4, max_iters: int = 50,
                       seed: int = 0, V0: torch.Tensor | None = None, callback: Callable[[dict], None] | None = None,
                       progress: bool = False, **op_kwargs) -> JacobianSVD:
    """The generalised power method of LOCO Edit: per iteration ``k`` JVPs, QR, ``k`` VJPs, SVD; stops when
    successive right bases agree (sine of the largest principal angle ``<= tol``) or after ``max_iters``."""
    op = as_operator(f_or_op, x, **op_kwargs)
    n = op.n
    check_range("k", k, 1, n)
    gen = torch.Generator().manual_seed(int(seed))
    start, t0 = op.counter.snapshot(), time.perf_counter()
    Z0 = torch.randn(n, k, generator=gen, dtype=torch.float64).to(op.device)
    if V0 is not None:
        v0 = torch.as_tensor(V0).reshape(-1, n).to(device=op.device, dtype=torch.float64).T[:, :k]
        Z0[:, :v0.shape[1]] = v0
    V = orthonormal_block(Z0, None, gen)
    history, converged, it, change = [], False, 0, math.inf
    s = torch.zeros(k, dtype=torch.float64)
    Uq = None
    for it in tqdm(range(1, max_iters + 1), desc="power iteration", disable=not progress, leave=False):
        Uq, _ = torch.linalg.qr(apply(op, "jvp", V))
        P, s, Qh = torch.linalg.svd(apply(op, "vjp", Uq), full_matrices=False)     # Uq^T J = Qh^T s P^T
        Uq = Uq @ Qh.T
        change = math.sqrt(max(0.0, 1.0 - float(torch.linalg.svdvals(V.T @ P).min().clamp(max=1.0)) ** 2))
        V = P
        used = op.counter.since(start)
        info = {"iteration": it, "passes": used.passes, "calls": used.calls, "singular_values": s.tolist(),
                "change": change, "error_estimate": change}
        history.append(info)
        if callback is not None:
            callback({**info, "V": V})
        if change <= tol:
            converged = True
            break
    out = JacobianSVD(singular_values=s.to(op.dtype).cpu(), U=unflat(Uq, op.shape, op.dtype),
                      V=unflat(V, op.shape, op.dtype), method="subspace_iteration", iterations=it,
                      converged=converged, wall_time_s=time.perf_counter() - t0, error_estimate=change,
                      history=history, tol=tol, stop_reason="converged" if converged else "budget",
                      max_passes=max_iters * k * (op.jvp_evaluations + 1), jvp_mode=op.jvp_mode, block=k)
    return out.count(op.counter.since(start))


def linear_operator(op, check: Callable[[], None] = lambda: None):
    """``J`` as a float64 ``scipy.sparse.linalg.LinearOperator`` (``matvec``: one JVP, ``rmatvec``: one VJP)."""
    from scipy.sparse.linalg import LinearOperator

    n = op.n

    def product(kind):
        def mv(v):
            check()
            col = torch.as_tensor(np.asarray(v, dtype=np.float64).reshape(n, -1)[:, :1]).to(op.device)
            return apply(op, kind, col).cpu().numpy().reshape(-1)
        return mv

    return LinearOperator((n, n), matvec=product("jvp"), rmatvec=product("vjp"), dtype=np.float64)


def arpack_svd(f_or_op, x: torch.Tensor | None = None, k: int = 5, *, tol: float = 0.0, max_passes: int = 2000,
               seed: int = 0, progress: bool = False, **op_kwargs) -> JacobianSVD:
    """Top-k triplets from ARPACK (``scipy.sparse.linalg.svds``, default ``ncv``) on the operator. ``tol``
    is ARPACK's own (relative accuracy of the Ritz values; 0: machine precision). ``max_passes`` caps the
    network evaluations: past it the search stops with ``stop_reason="budget"`` and no triplets are kept, so
    the result holds ARPACK's last complete answer only when it finished."""
    from scipy.sparse.linalg import svds

    op = as_operator(f_or_op, x, **op_kwargs)
    n = op.n
    check_range("k", k, 1, n - 1)
    start, t0 = op.counter.snapshot(), time.perf_counter()

    class _Budget(Exception):
        pass

    def check():
        if op.counter.since(start).passes + op.jvp_evaluations > max_passes:
            raise _Budget

    v0 = np.random.default_rng(seed).standard_normal(n)
    try:
        u, s, vh = svds(linear_operator(op, check), k=k, tol=tol, v0=v0, solver="arpack")
    except _Budget:
        raise UserError(f"ARPACK did not finish within {max_passes} network evaluations; raise max passes") from None
    order = np.argsort(-s)
    s, u, vh = s[order], u[:, order], vh[order]
    U = torch.as_tensor(u.copy())
    V = torch.as_tensor(vh.T.copy())
    out = JacobianSVD(singular_values=torch.as_tensor(s.copy()).to(op.dtype), U=unflat(U, op.shape, op.dtype),
                      V=unflat(V, op.shape, op.dtype), method="arpack", iterations=1, converged=True,
                      wall_time_s=time.perf_counter() - t0, error_estimate=math.nan, max_passes=max_passes,
                      tol=tol, stop_reason="converged", jvp_mode=op.jvp_mode, block=1)
    return out.count(op.counter.since(start))
