"""Run a :class:`~.plan.SearchPlan` on an operator."""
from __future__ import annotations

from typing import Callable

import torch

from .baselines import arpack_svd, subspace_iteration
from .exact import exact_svd
from .krylov import top_k_svd
from .operator import OPERATOR_KEYS, JacobianOperator, as_operator
from .plan import DEFAULT_TOL, SearchPlan, plan_search
from .result import JacobianSVD

# ARPACK's own tolerance (relative accuracy of its Ritz values) at the plan's default tolerance, proportional to it
# elsewhere: the tightest of the cheapest tolerances with which bench/jacobian.py's sweep reached principal
# cosine 0.99 (bench/results/jacobian.csv, column detail).
ARPACK_TOL_AT_DEFAULT = 1e-2


def arpack_tol(tol: float) -> float:
    return ARPACK_TOL_AT_DEFAULT * tol / DEFAULT_TOL


def run_plan(op: JacobianOperator, plan: SearchPlan, *, seed: int = 0, V0: torch.Tensor | None = None,
             callback: Callable[[dict], None] | None = None, progress: bool = False) -> JacobianSVD:
    """The plan's solver on ``op`` within ``plan.search_passes`` network evaluations; the result's ``choice``
    is the plan's reason."""
    if op.jvp_mode != plan.jvp_mode:
        raise ValueError(f"the operator's JVPs are {op.jvp_mode}, the plan's {plan.jvp_mode}")
    if plan.method == "exact":
        res = exact_svd(op, k=plan.k, progress=progress)
    elif plan.method == "krylov":
        res = top_k_svd(op, k=plan.k, block=plan.block, tol=plan.tol, max_passes=plan.search_passes, seed=seed,
                        V0=V0, callback=callback, progress=progress)
    elif plan.method == "power":
        iters = max(1, plan.search_passes // (plan.k * (op.jvp_evaluations + 1)))
        res = subspace_iteration(op, k=plan.k, tol=plan.tol, max_iters=iters, seed=seed, V0=V0, callback=callback,
                                 progress=progress)
    else:
        res = arpack_svd(op, k=plan.k, tol=arpack_tol(plan.tol), max_passes=plan.search_passes, seed=seed,
                         progress=progress)
    res.choice = plan.reason
    return res


def jacobian_svd(f_or_op, x: torch.Tensor | None = None, k: int = 5, *, method: str = "auto",
                 max_passes: int | None = None, tol: float | None = None, block: int | None = None,
                 spectrum: bool = False, seed: int = 0, V0: torch.Tensor | None = None,
                 callback: Callable[[dict], None] | None = None, progress: bool = False,
                 **op_kwargs) -> JacobianSVD:
    """Top-k singular triplets of ``J`` under the plan :func:`~.plan.plan_search` makes for this operator
    (``method``: ``auto`` or one of ``exact``, ``krylov``, ``power``, ``arpack``). The result's ``method``,
    ``passes`` (network evaluations), ``batched_calls``, ``error_estimate`` and ``choice`` say what ran, what
    it cost and why."""
    op = as_operator(f_or_op, x, **{kk: op_kwargs.pop(kk) for kk in OPERATOR_KEYS if kk in op_kwargs})
    if op_kwargs:
        raise TypeError(f"unexpected arguments {sorted(op_kwargs)}")
    plan = plan_search(op.n, k, solver=method, max_passes=max_passes, tol=tol, jvp_mode=op.jvp_mode, block=block,
                       spectrum=spectrum, device=op.device.type, directions_per_call=op.directions_per_call("vjp"),
                       memory=op.memory)
    return run_plan(op, plan, seed=seed, V0=V0, callback=callback, progress=progress)
