"""Whether and how a request runs here: its estimate against the operator's budget, and the
ZeroGPU duration to ask for.

Every adapter that serves other people (the app, its API) admits a request here before any work:
the estimate comes from the feature's :class:`~.base.Cost`, sized by the model's U-Net config when
it can be read without loading weights (:mod:`.budget`); a request over ``LOWDIM_REQUEST_BUDGET_S``
is refused with the command that runs it elsewhere.
"""
from __future__ import annotations

from ..config import Runtime
from . import budget


def admit(feature, settings, runtime: Runtime) -> budget.Estimate:
    """The request's :class:`~.budget.Estimate`, or a one-line :class:`~lowdim_app.errors.UserError`
    when it exceeds the runtime's per-request budget. A model that cannot be read is not refused here:
    the run itself says why, first."""
    from ..diffusion.registry import unet_config

    model_id = getattr(settings, "model", None)
    config = unet_config(model_id, runtime) if isinstance(model_id, str) else None
    if isinstance(model_id, str) and config is None:
        return budget.estimate(feature, settings, runtime)
    return budget.check(feature, settings, runtime, config)


def gpu_seconds(estimate: budget.Estimate, runtime: Runtime) -> int:
    """The GPU duration to ask ZeroGPU for: the estimate with a margin, within the budget."""
    return budget.gpu_duration(estimate, runtime.request_budget_s)
