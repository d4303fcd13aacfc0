"""The exact path: the full ``n x n`` Jacobian from ``n`` VJPs (``jacrev`` semantics) or JVPs (``jacfwd``) and
``torch.linalg.svd``. It gives the whole spectrum, hence the numerical rank (Wang et al. 2024,
arXiv:2409.02426, eq. 46), and is the reference of the tests and benchmarks."""
from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from ...errors import UserError, check_range
from .operator import as_operator, unflat
from .result import JacobianSVD


def exact_jacobian(f_or_op, x: torch.Tensor | None = None, *, mode: str = "rev", progress: bool = False,
                   **op_kwargs) -> torch.Tensor:
    """``J[i, j] = d f_i / d x_j`` (flattened) from ``n`` VJPs (``mode="rev"``) or ``n`` JVPs (``"fwd"``)."""
    op = as_operator(f_or_op, x, **op_kwargs)
    if mode not in ("rev", "fwd"):
        raise UserError(f"mode must be 'rev' or 'fwd', got {mode!r}")
    n = op.n
    step = op.chunk_size or n
    rows = []
    for i in tqdm(range(0, n, step), desc="exact Jacobian", disable=not progress, leave=False):
        eye = torch.zeros(min(step, n - i), n, dtype=op.dtype, device=op.device)
        eye[torch.arange(eye.shape[0]), torch.arange(i, i + eye.shape[0])] = 1
        rows.append((op.vjp(eye) if mode == "rev" else op.jvp(eye)).reshape(-1, n))
    M = torch.cat(rows)              # rev: rows of J; fwd: columns of J
    return M if mode == "rev" else M.T.contiguous()


def exact_svd(f_or_op, x: torch.Tensor | None = None, k: int | None = None, *, mode: str = "rev",
              progress: bool = False, **op_kwargs) -> JacobianSVD:
    """Exact Jacobian + float64 SVD: ``J v_i = s_i u_i``; ``k=None`` gives all ``n`` triplets; ``spectrum``
    holds all ``n`` singular values."""
    op = as_operator(f_or_op, x, **op_kwargs)
    k = op.n if k is None else k
    check_range("k", k, 1, op.n)
    start = op.counter.snapshot()
    t0 = time.perf_counter()
    J = exact_jacobian(op, mode=mode, progress=progress).double()
    Uf, s, Vh = torch.linalg.svd(J)
    out = JacobianSVD(singular_values=s[:k].to(op.dtype).cpu(), U=unflat(Uf[:, :k], op.shape, op.dtype),
                      V=unflat(Vh[:k].T, op.shape, op.dtype), method="exact", iterations=1, converged=True,
                      wall_time_s=time.perf_counter() - t0, residuals=torch.zeros(k), error_estimate=0.0,
                      spectrum=s.to(op.dtype).cpu(), jvp_mode=op.jvp_mode if mode == "fwd" else "")
    return out.count(op.counter.since(start))
