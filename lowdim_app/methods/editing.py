"""Training-free editing along singular vectors of the denoiser's Jacobian (Wang et al. 2024,
arXiv:2409.02426, §4.2 and App. E.4; Chen et al. 2024, LOCO Edit, arXiv:2409.02374).

Pipeline: image ``x_0`` -> (VAE encode) -> DDIM inversion to ``t`` (default 0.7T) -> ``x_t + alpha v``
for a sequence of ``alpha`` (batched) -> DDIM sampling from ``t`` to 0 -> (VAE decode).
``v`` is a right singular vector of ``J_t = d x0_hat / d x_t`` (see :mod:`.jacobian`), a masked
(LOCO Edit) direction, a random unit direction (the control of Wang et al. 2024, Fig. 6), or a
saved direction loaded from a file (transfer to another image, Chen et al. 2024).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..errors import UserError, check_range
from .tensor_files import load_tensors, save_tensors

ALPHA_LIMIT = 50.0
MAX_ALPHAS = 25
# The Edit tab's default example and the path the digit models' cards measure on it (bench/edit_path.py):
# on digits-gen at 0.5T, v1 turns this 5 into a 3 as alpha passes about +2 (the probability of 5 falls from
# 0.9 to 0.1 over 0.47 in alpha, the image moving evenly: largest RMS step 3.5 % of the path's length at 97
# alphas in [-6, 6]), while the random direction leaves it a 5; at 0.7T the edits of the examples jump.
EXAMPLE_IMAGE = "digit_5_test17.png"
EXAMPLE_T = 0.5
EXAMPLE_AMAX, EXAMPLE_COUNT = 3.0, 25


@dataclass
class Direction:
    """A unit direction in the diffusion space of one model at one timestep, savable to a file."""

    vector: torch.Tensor           # shape == model.sample_shape, unit Frobenius norm
    model_id: str
    t: int
    kind: str = "jacobian"         # jacobian | masked | random | loaded
    index: int | None = None       # singular-vector index (1-based), if any
    sigma: float | None = None     # its singular value, if any
    prompt: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.vector.shape)

    def save(self, path: str | Path) -> Path:
        """safetensors file; metadata (model id, t, shape, kind, ...) in its header."""
        info = {"model_id": self.model_id, "t": self.t, "kind": self.kind, "index": self.index, "sigma": self.sigma,
                "prompt": self.prompt, "shape": list(self.shape), "meta": self.meta, "format": "lowdim-direction-v1"}
        return save_tensors(path, {"vector": self.vector}, info)

    @classmethod
    def load(cls, path: str | Path) -> "Direction":
        path = Path(path)
        tensors, info = load_tensors(path, "direction file (.safetensors saved by 'Save direction')",
                                     names=lambda info: ["vector"])
        vec = tensors["vector"]
        if info.get("format") != "lowdim-direction-v1" or list(vec.shape) != list(info["shape"]):
            raise UserError(f"{path.name}: unsupported or corrupt direction file")
        return cls(vec, info["model_id"], int(info["t"]), info.get("kind", "loaded"), info.get("index"),
                   info.get("sigma"), info.get("prompt", ""), info.get("meta", {}))

    def check_compatible(self, model) -> None:
        """A direction only means something for the model (and latent shape) it was computed on."""
        if self.model_id != model.model_id:
            raise UserError(f"this direction was computed on {self.model_id}, not {model.model_id}; "
                            "load it with the same model")
        if tuple(self.shape) != tuple(model.sample_shape):
            raise UserError(f"direction shape {self.shape} does not match the model's {model.sample_shape}")


def unit(v: torch.Tensor) -> torch.Tensor:
    n = v.norm()
    if not torch.isfinite(n) or n == 0:
        raise UserError("the direction is zero (nothing to edit along)")
    return v / n


def random_direction(shape: Sequence[int], seed: int) -> torch.Tensor:
    """A uniformly random unit direction (the control of Wang et al. 2024, Fig. 6)."""
    g = torch.Generator().manual_seed(int(seed))
    return unit(torch.randn(tuple(shape), generator=g))


def check_alphas(alphas: Sequence[float]) -> list[float]:
    alphas = [float(a) for a in alphas]
    if not 1 <= len(alphas) <= MAX_ALPHAS:
        raise UserError(f"give between 1 and {MAX_ALPHAS} edit strengths, got {len(alphas)}")
    for a in alphas:
        check_range("edit strength alpha", a, -ALPHA_LIMIT, ALPHA_LIMIT)
    return alphas


def steps_for(model, t: int, total_steps: int) -> int:
    """DDIM steps for the segment [0, t] at the density of ``total_steps`` over [0, T]."""
    return max(2, int(round(total_steps * (t + 1) / model.num_train_timesteps)))


@dataclass
class Inversion:
    """An image inverted to ``t``: the starting point of every edit."""

    x0: torch.Tensor       # diffusion-space clean sample, 1 x shape
    x_t: torch.Tensor      # 1 x shape
    t: int
    steps: int
    cond: object = None


def _step_check(check: Callable[[], None] | None):
    """A DDIM step callback that calls ``check()`` (which raises to cancel) before every U-Net call."""
    return None if check is None else (lambda _i, _t: check())


def invert(model, image: torch.Tensor, t: int, total_steps: int = 50, cond=None, progress: bool = False,
           check: Callable[[], None] | None = None) -> Inversion:
    """``image``: 1 x C x H x W pixels in [-1, 1] (the model's image shape). ``check()`` runs before
    every U-Net call (raise there to cancel)."""
    model.check_timestep(t)
    if tuple(image.shape[1:]) != tuple(model.image_shape):
        raise UserError(f"image shape {tuple(image.shape[1:])} does not match the model's {model.image_shape}")
    x0 = model.encode(image)
    steps = steps_for(model, t, total_steps)
    x_t = model.ddim_invert(x0, t, steps, cond, progress=progress, step_callback=_step_check(check))
    return Inversion(x0, x_t, t, steps, cond)


@dataclass
class KeepOutside:
    """Blended sampling for a local edit: after each of the first ``steps`` DDIM steps, the sample
    outside ``mask`` is replaced by the unedited (alpha = 0) trajectory at the same step, so the
    change stays inside the mask; the remaining steps run free and blend the border (the blending
    step of Avrahami et al. 2022, Blended Diffusion, arXiv:2111.14818, on top of LOCO Edit's
    null-space projection). ``trajectory[i]`` is the unedited point after step ``i``."""

    mask: torch.Tensor                 # 1 x h x w (sample space), 1 = edit region
    trajectory: list[torch.Tensor]     # 1 x shape after each DDIM step of the unedited run
    steps: int

    def __call__(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if i >= self.steps:
            return x
        m = self.mask.to(x.device, x.dtype)
        return m * x + (1 - m) * self.trajectory[i].to(x.device, x.dtype)


def keep_outside(model, inv: Inversion, sample_mask: torch.Tensor, fraction: float,
                 check: Callable[[], None] | None = None) -> KeepOutside | None:
    """:class:`KeepOutside` pinning the first ``fraction`` of the edit's DDIM steps outside
    ``sample_mask`` (``None`` for ``fraction = 0``); runs the unedited trajectory once (batch 1, so
    the result does not depend on the strip's batch)."""
    check_range("keep-outside fraction", fraction, 0.0, 1.0)
    if fraction == 0:
        return None
    trajectory: list[torch.Tensor] = []

    def record(_i: int, x: torch.Tensor) -> torch.Tensor:
        trajectory.append(x.clone())
        return x

    model.ddim_sample(inv.x_t, inv.t, inv.steps, inv.cond, desc="unedited trajectory",
                      step_callback=_step_check(check), after_step=record)
    return KeepOutside(sample_mask, trajectory, int(round(fraction * len(trajectory))))


def edit_strip(model, inv: Inversion, direction: torch.Tensor, alphas: Sequence[float],
               progress: bool = False, batch_size: int = 16, check: Callable[[], None] | None = None,
               keep: KeepOutside | None = None) -> torch.Tensor:
    """Images (pixels) for ``x_t + alpha * direction`` sampled back to 0, one per alpha (batched);
    ``check()`` runs before every U-Net call (raise there to cancel); ``keep`` pins the region
    outside a local edit's mask (:func:`keep_outside`). The VAE decodes in the model's
    slices (:attr:`~lowdim_app.diffusion.DiffusionModel.vae_batch_size`)."""
    alphas = check_alphas(alphas)
    v = direction.to(inv.x_t.device, inv.x_t.dtype).reshape(1, *inv.x_t.shape[1:])
    a = torch.tensor(alphas, dtype=inv.x_t.dtype, device=inv.x_t.device).view(-1, 1, 1, 1)
    starts = inv.x_t + a * v
    out = []
    for i in range(0, len(starts), batch_size):
        z = model.ddim_sample(starts[i:i + batch_size], inv.t, inv.steps, inv.cond, progress=progress, desc="editing",
                              step_callback=_step_check(check), after_step=keep)
        if check is not None:
            check()
        out.append(model.decode(z).cpu())
    return torch.cat(out)


def edit_effect(strip: torch.Tensor, alphas: Sequence[float]) -> list[float]:
    """RMS pixel change of each edited image from the alpha = 0 reconstruction (or the smallest |alpha|)."""
    alphas = list(alphas)
    ref = strip[min(range(len(alphas)), key=lambda i: abs(alphas[i]))]
    return [float((s - ref).pow(2).mean().sqrt()) for s in strip]


@dataclass
class DirectionSearch:
    """Result of "Find directions": the inversion, the SVD, and the directions as :class:`Direction`s."""

    inversion: Inversion
    singular_values: torch.Tensor     # (k,)
    V: torch.Tensor                   # (k, *shape) right singular vectors (edit directions)
    U: torch.Tensor                   # (k, *shape) left singular vectors (their images)
    spectrum: torch.Tensor | None     # full spectrum when the exact path ran
    numerical_rank: int | None
    directions: list[Direction]
    summary: dict


def pixel_mask_to_sample(model, mask: torch.Tensor) -> torch.Tensor:
    """An ``H x W`` pixel mask in [0, 1] -> ``1 x h x w`` mask in the diffusion space (area-averaged for latents)."""
    m = torch.as_tensor(mask, dtype=torch.float32)
    if m.ndim != 2:
        raise UserError("the mask must be a single-channel H x W image")
    h, w = model.sample_shape[1:]
    m = torch.nn.functional.interpolate(m[None, None], size=(h, w), mode="area")[0]
    m = (m > 0.5).float()
    if m.sum() == 0:
        raise UserError("the mask is empty: draw over the region to edit")
    if m.sum() == m.numel():
        raise UserError("the mask covers the whole image: use the global edit instead")
    return m


def find_directions(model, image: torch.Tensor, t: int, k: int = 5, total_steps: int = 50, cond=None,
                    mask: torch.Tensor | None = None, null_rank: int = 5, method: str = "auto",
                    progress: bool = False, *, max_passes: int | None = None, tol: float | None = None,
                    jvp_mode: str | None = None, memory_gb: float | None = None,
                    check: Callable[[], None] | None = None,
                    callback: Callable[[dict], None] | None = None) -> DirectionSearch:
    """Invert ``image`` to ``t`` and find the top-``k`` edit directions at ``x_t``.

    Global: right singular vectors of ``J_t``. With ``mask`` (pixel ``H x W``): LOCO Edit local
    directions (top singular vectors of the masked ``x0_hat`` projected off the top ``null_rank``
    right singular vectors of the unmasked part).

    The search plan (:func:`~.jacobian.plan.plan_for_model`: the exact Jacobian wherever it fits ``max_passes``,
    since it also gives the spectrum and the numerical rank; else the solver it predicts to cost least) runs
    within ``max_passes`` network evaluations to tolerance ``tol``; the summary says how the search ended
    (``status``) and why that solver ran. ``jvp_mode`` / ``memory_gb`` / ``check`` go to the Jacobian operator;
    ``callback(info)`` after each Krylov half-iteration.
    """
    from . import jacobian as jac

    check_range("k", k, 1, jac.MAX_K)
    inv = invert(model, image, t, total_steps, cond, progress=progress, check=check)
    opts = {"max_passes": max_passes, "tol": tol, "jvp_mode": jvp_mode, "memory_gb": memory_gb, "check": check,
            "spectrum": True}
    if mask is None:
        res = jac.jacobian_of_x0_hat(model, inv.x_t, t, cond, k=k, method=method, progress=progress,
                                     callback=callback, **opts)
        V, U, s, spectrum, kind = res.V, res.U, res.singular_values, res.spectrum, "jacobian"
        rank = res.numerical_rank()
        summary = res.summary()
        summary["memory"] = res.memory
    else:
        m = pixel_mask_to_sample(model, mask)
        md = jac.masked_directions_of_x0_hat(model, inv.x_t, t, m, cond, k=k, null_rank=null_rank, method=method,
                                             progress=progress, **opts)
        V, U, s, spectrum, kind = md.directions, md.inside.U, md.inside.singular_values, md.inside.spectrum, "masked"
        rank = None
        summary = {"method": "masked", "null_rank": null_rank, "passes": md.passes, "batched_calls": md.batched_calls,
                   "inside_fraction": [float(v) for v in md.inside_fraction] if md.inside_fraction is not None else None,
                   "converged": md.converged, "stopped_at_budget": md.stopped_at_budget, "status": md.status,
                   "max_passes": md.plan.max_passes, "tol": md.plan.tol, "jvp_mode": md.plan.jvp_mode,
                   "solver": md.plan.method, "solver_choice": md.plan.reason,
                   "inside": md.inside.summary(), "outside": md.outside.summary()}
    prompt = getattr(cond, "prompt", "") if cond is not None else ""
    dirs = [Direction(V[i].detach().cpu().float(), model.model_id, t, kind, i + 1, float(s[i]), prompt)
            for i in range(len(V))]
    return DirectionSearch(inv, s.detach().cpu(), V.detach().cpu(), U.detach().cpu(),
                           None if spectrum is None else spectrum.detach().cpu(), rank, dirs, summary)
