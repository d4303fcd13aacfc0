"""The Jacobian of a diffusion model's posterior-mean denoiser ``x_t -> x0_hat(x_t, t, c)`` (Wang et al. 2024,
arXiv:2409.02426, §4.2): the operator, held in float32 for the whole search, under the memory plan of
:func:`~.plan.plan_for_model`."""
from __future__ import annotations

import contextlib
from typing import Callable

import torch

from ...errors import UserError
from .masked import MaskedDirections, masked_directions
from .operator import JacobianOperator
from .plan import SearchPlan, plan_for_model
from .result import JacobianSVD
from .solve import run_plan

# operator options a caller may set (the rest comes from the search plan)
MODEL_OPERATOR_KEYS = ("batching", "chunk_size", "math_attention", "fd_step")
# options of the search plan (plan_for_model / plan_search)
PLAN_KEYS = ("max_passes", "tol", "jvp_mode", "memory_gb", "block", "spectrum", "needs_basis", "extra_jvps")


def x0_hat_fn(model, t: int, cond=None, dtype: torch.dtype = torch.float32) -> Callable[[torch.Tensor], torch.Tensor]:
    """Batched ``x_t -> x0_hat(x_t, t, c)`` in ``dtype`` (float32 for Jacobians, even when sampling runs in fp16)."""
    t = int(t)

    def f(xb: torch.Tensor) -> torch.Tensor:
        return model.x0_hat(xb, t, cond, dtype=dtype)

    return f


def x0_hat_operator(model, x_t: torch.Tensor, t: int, cond=None, **op_kwargs) -> JacobianOperator:
    """:class:`JacobianOperator` of ``x0_hat`` at one sample ``x_t`` (shape ``model.sample_shape`` or
    ``(1, *sample_shape)``), float32. Forward-mode JVPs enter ``model.forward_ad_safe()`` by themselves. A
    half-precision model builds its float32 U-Net per call unless the calls run inside
    ``with model.float32_unet():``."""
    op_kwargs.setdefault("jvp_context", getattr(model, "forward_ad_safe", None))
    x = torch.as_tensor(x_t).to(device=model.device, dtype=torch.float32)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if tuple(x.shape) != tuple(model.sample_shape):
        raise UserError(f"x_t must have shape {tuple(model.sample_shape)} (one sample), got {tuple(x_t.shape)}")
    model.check_timestep(int(t))
    return JacobianOperator(x0_hat_fn(model, t, cond), x, **op_kwargs)


@contextlib.contextmanager
def x0_hat_session(model, x_t, t, cond, plan: SearchPlan | None, plan_kw: dict, check=None, **op_kwargs):
    """The float32 U-Net held for the whole search, the plan (made inside it, so that the free CUDA memory
    already excludes the float32 copy) and the operator under the plan's JVP kind and memory."""
    with model.float32_unet():
        plan = plan if plan is not None else plan_for_model(model, **plan_kw)
        yield plan, x0_hat_operator(model, x_t, t, cond, jvp_mode=plan.jvp_mode, memory=plan.memory, check=check,
                                    **op_kwargs)


def _split(kwargs: dict) -> tuple[dict, dict]:
    """``(plan options, operator options)`` out of a caller's keyword arguments; the rest stays in ``kwargs``."""
    plan_kw = {kk: kwargs.pop(kk) for kk in PLAN_KEYS if kk in kwargs}
    op_kw = {kk: kwargs.pop(kk) for kk in MODEL_OPERATOR_KEYS if kk in kwargs}
    return plan_kw, op_kw


def jacobian_of_x0_hat(model, x_t: torch.Tensor, t: int, cond=None, k: int = 5, *, method: str = "auto",
                       plan: SearchPlan | None = None, check=None, **kwargs) -> JacobianSVD:
    """Top-k singular triplets of ``J_t = d x0_hat / d x_t`` at ``(x_t, t, c)``.

    ``plan`` (else :func:`~.plan.plan_for_model` from ``method`` and :data:`PLAN_KEYS`) decides the solver, block, JVP kind, pass and memory budget. ``check`` runs
    before every batched call; ``seed``, ``V0``, ``callback``, ``progress`` go to the solver; ``batching``,
    ``chunk_size``, ``math_attention``, ``fd_step`` to the operator."""
    plan_kw, op_kw = _split(kwargs)
    with x0_hat_session(model, x_t, t, cond, plan, dict(k=k, solver=method, **plan_kw), check, **op_kw) as (plan, op):
        res = run_plan(op, plan, **kwargs)
    res.memory = plan.memory.describe() if plan.memory is not None else None
    return res


def top_singular(model, x_t: torch.Tensor, t: int, k: int = 5, cond=None, **kwargs) -> JacobianSVD:
    """:func:`jacobian_of_x0_hat` with ``k`` before ``cond``."""
    return jacobian_of_x0_hat(model, x_t, t, cond, k=k, **kwargs)


def masked_directions_of_x0_hat(model, x_t: torch.Tensor, t: int, mask: torch.Tensor, cond=None, k: int = 5, *,
                                null_rank: int = 5, method: str = "auto", plan: SearchPlan | None = None,
                                check=None, measure: bool = True, **kwargs) -> MaskedDirections:
    """:func:`~.masked.masked_directions` for ``x0_hat`` (mask in sample space); options as in
    :func:`jacobian_of_x0_hat`."""
    plan_kw, op_kw = _split(kwargs)
    plan_kw = dict(k=k, solver=method, masked=True, null_rank=null_rank, measure=measure, **plan_kw)
    with x0_hat_session(model, x_t, t, cond, plan, plan_kw, check, **op_kw) as (plan, op):
        return masked_directions(op, None, mask, k, null_rank=null_rank, plan=plan, measure=measure, **kwargs)
