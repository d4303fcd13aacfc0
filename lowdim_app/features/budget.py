"""How long a request will take, and whether this server runs it.

``estimate`` turns a feature's :class:`~.base.Cost` (network passes and CPU seconds) into seconds
on this server's device: passes x the model's seconds per single-sample U-Net forward (a JVP
counts as 2 forwards, a VJP as 3) + the CPU seconds of work outside networks. ZeroGPU asks each
GPU function for a duration up front (``spaces.GPU(duration=...)``); :func:`gpu_duration` gives it.
A request whose estimate exceeds the operator's per-request budget (``LOWDIM_REQUEST_BUDGET_S``;
120 s in public mode, ZeroGPU's usual per-call allowance) is refused with one line that gives the
command to run it elsewhere.

Seconds per forward, by architecture family:

* CPU: measured here (``python bench/real_size.py``, 2 threads of a shared 2-core machine, batch 1,
  float32, random weights of the exact architectures): digits 0.0074 s, CIFAR-10 (35.7M) 0.117 s,
  CelebA-HQ-256 (113.7M) 3.66 s, SD v1.4 512 px (859.5M U-Net) 12.9 s.
* CUDA: no GPU was available to measure; the numbers below are conservative assumptions for an
  A100/H100-class card (SD v1.4 fp16 at 512 px runs about 20-30 U-Net forwards per second there),
  to be replaced by ``bench/real_size.py --device cuda``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..config import Runtime
from ..errors import UserError
from .base import Cost

SECONDS_PER_FORWARD = {
    "cpu": {"digits": 0.0074, "ddpm-32": 0.117, "ddpm-256": 3.66, "sd-v1": 12.9},
    "cuda": {"digits": 0.004, "ddpm-32": 0.008, "ddpm-256": 0.04, "sd-v1": 0.06},
}
GPU_OVERHEAD_S = 10.0      # model to device, first-call kernels, VAE, result transfer
MIN_GPU_DURATION_S = 15


@dataclass(frozen=True)
class Estimate:
    seconds: float
    device: str
    family: str | None
    cost: Cost

    def describe(self) -> str:
        return (f"about {self.seconds:.0f} s on {self.device}"
                + (f" ({self.cost.forward_equivalents:.0f} U-Net passes)" if self.cost.forward_equivalents else ""))


def family_of(info: dict | None) -> str | None:
    """Architecture family from a U-Net config (``None`` if unknown)."""
    if not info:
        return None
    size = info.get("sample_size")
    size = size[0] if isinstance(size, (list, tuple)) else size
    if info.get("cross_attention_dim"):
        return "sd-v1"
    if size is None:
        return None
    if size <= 16:
        return "digits"
    return "ddpm-32" if size <= 64 else "ddpm-256"


def estimate(feature, settings, runtime: Runtime, unet_config: dict | None = None) -> Estimate:
    """Seconds the request needs on the runtime's device."""
    cost = _cost(feature, settings, unet_config)
    device = runtime.torch_device.type
    fam = family_of(unet_config)
    table = SECONDS_PER_FORWARD.get(device, SECONDS_PER_FORWARD["cpu"])
    per_forward = table.get(fam, max(table.values())) if cost.forward_equivalents else 0.0
    seconds = cost.forward_equivalents * per_forward + cost.cpu_seconds
    if device == "cuda":
        seconds += GPU_OVERHEAD_S
    return Estimate(seconds=seconds, device=device, family=fam, cost=cost)


def _cost(feature, settings, unet_config: dict | None) -> Cost:
    """``feature.cost(settings, unet_config)`` where the feature sizes its cost by the model, else
    ``feature.cost(settings)``."""
    import inspect

    takes_model = len(inspect.signature(feature.cost).parameters) >= 2
    return feature.cost(settings, unet_config) if takes_model else feature.cost(settings)


def gpu_duration(est: Estimate, budget_s: float | None) -> int:
    """What to ask ZeroGPU for: 1.5x the estimate (estimates are +-50 %), within the budget."""
    want = max(MIN_GPU_DURATION_S, math.ceil(1.5 * est.seconds))
    return int(min(want, budget_s)) if budget_s else int(want)


def check(feature, settings, runtime: Runtime, unet_config: dict | None = None) -> Estimate:
    """The estimate, or a one-line refusal when it exceeds the operator's per-request budget."""
    est = estimate(feature, settings, runtime, unet_config)
    budget = runtime.request_budget_s
    if budget is not None and est.seconds > budget:
        raise UserError(f"this request needs {est.describe()}, over this server's limit of {budget:.0f} s per "
                        f"request; run it on your own machine: `{settings.to_cli()}`")
    return est
