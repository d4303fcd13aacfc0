"""Singular vectors of the denoiser's Jacobian ``J_t = d x0_hat / d x_t`` without forming it.

Wang et al. 2024 (arXiv:2409.02426), §4.2 and App. E.4: the right singular vectors ``v_i`` of
``J_t`` are semantic edit directions (``x_t + alpha v_i``, and ``x0_hat(x_t + alpha v_i) ~ x0_hat +
alpha sigma_i u_i``); App. D.1 eq. 46: the numerical rank of ``J_t`` is low
(:func:`lowdim_app.metrics.numerical_rank`). Chen et al. 2024 (LOCO Edit, arXiv:2409.02374): local
edit directions from a masked Jacobian with a null-space projection (:func:`masked_directions`).

Everything here is model-agnostic: it works for any *batched* callable ``f`` that maps a
batch ``(B, *shape)`` to ``(B, *shape)`` with rows processed independently (a U-Net in eval
mode, ``MoLRG.posterior_mean``, a matrix). ``x0_hat`` of a :class:`DiffusionModel` is wrapped
by :func:`x0_hat_fn` / :func:`jacobian_of_x0_hat`, which enter ``model.forward_ad_safe()``.

Operators
    :class:`JacobianOperator` gives ``J V`` (forward mode, ``torch.func.jvp``) and ``J^T U``
    (reverse mode, ``torch.func.vjp``) for a block of directions at once. Default batching
    is *replication*: ``x`` is repeated ``b`` times and one batched call handles ``b``
    directions (works for every callable; diffusers U-Nets are not guaranteed to be
    vmap-friendly). ``batching="vmap"`` uses ``torch.func.vmap`` instead (one forward for all
    VJPs); choose it for VJP-heavy work (the exact Jacobian) when the callable supports it.
    Passes are counted per direction (``b`` JVPs in one call = ``b`` passes) and per call.

Top-k singular triplets (:func:`top_k_svd`): block Golub-Kahan-Lanczos with full
    reorthogonalisation. Keep an orthonormal right basis ``V`` (``n x m``) with ``W = J V``, an
    orthonormal left basis ``U`` containing ``span(W)`` and ``Z = J^T U``. Per iteration: one batched
    JVP of the new right block (``b`` directions), one batched VJP of the new left block (``b``
    directions); the next right block is the part of ``Z`` outside ``span(V)`` (in exact arithmetic
    ``span(V)`` is the block Krylov space ``K_j(J^T J, V_1)``; error ``~ exp(-2 j sqrt(gap))`` instead
    of power iteration's ``(sigma_{b+1}/sigma_k)^{2j}``, Musco & Musco 2015, arXiv:1504.05477).
    Rayleigh-Ritz: ``J V = U B`` exactly, the SVD ``B = Y S X^T`` gives ``v_i = V x_i``,
    ``u_i = U y_i``, and the residual ``J^T u_i - s_i v_i = Z y_i - s_i v_i`` of *every* Ritz pair
    costs no pass -- so the block ``b`` may be smaller than ``k``. After each VJP the one-sided
    Rayleigh-Ritz pairs of ``U^T J = Z^T`` (known, no pass; Halko et al. 2011's estimate from ``Q^T A``)
    are the reported iterate: their right vectors span ``span(Z)``, one Krylov step beyond ``span(V)``,
    with ``J^T u_i = s_i v_i`` exact; the next block's JVP then measures their other residual
    ``J v_i - s_i u_i`` for free, so the search can stop half an iteration before the Ritz pairs of
    ``span(V)`` pass the same test (``pairs="one-sided"`` in the result). Past ``max_basis`` columns the
    bases are compressed to the top Ritz pairs (thick restart). Block: ``block`` if given, else
    ``k + oversample`` (default ``k + 1``, ``1`` for ``k = 1``); :func:`krylov_block` ``"auto"``
    (``1`` for ``k <= 3``, else ``ceil(k/2) + 1``) trades a few more sequential calls for fewer passes.

    Convergence test on the subspace (Wedin 1972, sin-theta theorem): with
    ``R = J^T U_k - V_k S_k`` (the other residual ``J V_k - U_k S_k`` is zero by
    construction) the sine of the largest principal angle between ``span(V_k)`` and the
    true top-k right singular subspace is at most ``||R||_2 / (s_k - sigma_{k+1})``; we stop
    when the estimate ``||R||_2 / (s_k - s_{k+1})`` is below ``tol`` (default 0.05, i.e.
    principal-angle cosine >= 0.9987). Warm starts (``V0``) are accepted.

Solver choice (:func:`choose_solver`, ``jacobian_svd(method="auto")``): the exact path when
    ``n <= EXACT_MAX_N``, its ``n`` VJPs fit ``max_passes`` and it costs no more than the Krylov search is
    predicted to (:func:`predicted_krylov_calls`, :func:`predicted_krylov_passes`); the cost is batched calls
    on an accelerator and ``passes + CPU_PASSES_PER_CALL x calls`` on a CPU. Else block Krylov with the
    ``auto`` block. Overridable (``method="exact" | "krylov" | "power"``); the result says which ran and why
    (``choice``).

Measured at EQUAL ACCURACY (``bench/jacobian.py``, ``bench/results/jacobian.csv``; passes = JVP + VJP
    directions, calls = sequential batched calls, to the first iterate with smallest principal cosine
    >= 0.999 to the reference; CPU, 2 cores), passes / calls at k = 1, 3, 5, 10:

    * digits-gen (n = 256, medians over 3 test images noised to t = 699, 500, 300; exact reference) --
      Krylov ``auto`` block (1, 1, 4, 6): 6/6, 20/20, 32/8, 48/8; block 1: 6/6, 20/20, 22/22, 36/36;
      block k + 1: 6/6, 32/8, 36/6, 66/6; LOCO-style power: 6/6, 105/35 (1 of 3 not reached within 396),
      160/32, 340/34; Halko (block k + 5): 24/4, 48/6, 60/6, 150/10; ARPACK ``svds`` (cheapest ``tol``):
      43/43, 45/45, 47/47, 54/54; LOBPCG on ``J^T J``: 20/10, 40/10, 60/10, 110/10; exact: 256/8. At
      k = 5 / 10 the ``auto`` block needs 0.68 / 0.89 x ARPACK's passes in 0.17 / 0.15 x its calls and
      0.20 / 0.14 x power's passes.
    * tiny SD (n = 1024, random weights, flat spectrum s_1..11 = 5.93 .. 5.52, one point at t = 699,
      exact reference) -- ``auto`` block: 30/30, 62/62, 152/38, 228/38; block 1: 30/30, 62/62, 94/94,
      144/144; ARPACK: 43/43, 75/75, 149/149, 188/188; power and Halko did not reach 0.999 within 400
      passes at k >= 3; exact 1024/32. At k = 5 / 10 the ``auto`` block needs 1.02 / 1.21 x ARPACK's
      passes in 0.26 / 0.20 x its calls, and the least wall time (9.7 / 11.7 s against ARPACK's 23.3 /
      26.6 s and exact's 26.1 s).

Exact path (:func:`exact_svd`): the full Jacobian from ``n`` VJPs (``torch.func.jacrev``
    semantics) + ``torch.linalg.svd`` -- exact, gives the whole spectrum (numerical rank,
    Wang et al. 2024, eq. 46), and is the reference in tests. ``method="auto"`` uses it where it
    costs less than Krylov (small ``n``; :func:`choose_solver`).

Masked variant (:func:`masked_directions`, Chen et al. 2024, LOCO Edit): top right singular
    vectors of ``P_mask f``, projected off the top-``r`` right singular vectors of
    ``P_not_mask f`` (null-space projection), unit-normalised.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..errors import UserError, check_range
from ..metrics import numerical_rank, principal_cosines, subspace_cosine

__all__ = [
    "PassCounter", "JacobianOperator", "JacobianSVD", "MaskedDirections",
    "top_k_svd", "subspace_iteration", "exact_jacobian", "exact_svd", "jacobian_svd",
    "masked_directions", "principal_cosines", "subspace_cosine", "numerical_rank",
    "x0_hat_fn", "x0_hat_operator", "jacobian_of_x0_hat", "top_singular", "masked_directions_of_x0_hat",
    "mask_energy_fraction", "EXACT_MAX_N", "MemoryPlan", "memory_plan", "default_budget", "per_direction_bytes",
    "JVP_MODES", "DEFAULT_JVP_MODE", "CENTRAL_STEP", "exact_fits",
    "SOLVERS", "SolverChoice", "choose_solver", "krylov_block", "predicted_krylov_calls", "predicted_krylov_passes",
    "CPU_PASSES_PER_CALL",
]

EXACT_MAX_N = 1024  # method="auto": exact Jacobian + SVD up to this n (bench/jacobian.py)
_TINY = 1e-30
JVP_MODES = ("central", "forward")
DEFAULT_JVP_MODE = "central"   # for diffusion models (bench/jacobian_memory.py: accuracy, memory, time)
# Relative RMS step of the central difference: the most accurate of h = 3e-2 .. 3e-4 in every case
# bench/jacobian_memory.py measured (tiny SD; SD v1.4's U-Net at width / 4, latents 32 and 64; t = 100,
# 500, 900): relative error vs torch.func.jvp at most 3.6e-5 (4.8e-5 at h = 3e-3).
CENTRAL_STEP = 5e-3


# ----------------------------------------------------------------------------- memory
GIB = 2 ** 30
# Per-direction memory of one batched call, as multiples of a model's activation profile (see
# :meth:`lowdim_app.diffusion.model.DiffusionModel.activation_profile`): ``A`` = bytes of all leaf-module
# outputs of one float32 forward at batch 1, ``Q`` = bytes of all attention maps (heads x Lq x Lk).
# bytes per direction = a * A + q * Q. Fitted by bench/jacobian_memory.py (bench/results/jacobian_memory.csv)
# on the exact architectures with random weights: DDPM CIFAR-10 (32 px), DDPM CelebA-HQ (64, 128, 256 px)
# and SD v1.4's U-Net (latents 16 and 32), as the increase of the CPU peak RSS from one to two
# directions (a proxy for CUDA allocations: the peak of live tensors, not measured on a GPU).
# Reverse mode stores the activations and follows A closely (least squares a = 1.10, measured /
# predicted 0.87 .. 1.10); a no-grad or forward-mode call only holds a peak of live tensors that does
# not scale with A across architectures (least squares measured / predicted 0.79 .. 5.78 for the
# central difference). So each coefficient is the fit's upper envelope -- the least over-predicting law
# that is at or above every measured point (measured / predicted <= 1.00 at every point: the worst
# ratio is folded into each kind's coefficients) -- and ``MEMORY_SAFETY`` stays 1.
MEMORY_COEFFICIENTS = {
    "jvp_forward": (0.4833, 0.3190),
    "jvp_central": (0.3213, 0.0),
    "vjp": (1.2032, 0.0),
    "vjp_math": (1.2433, 0.2191),
}
MEMORY_SAFETY = 1.0
CPU_BUDGET_FRACTION = 0.5    # of the available RAM (MemAvailable) when no budget is given
CUDA_BUDGET_FRACTION = 0.8   # of the free CUDA memory (torch.cuda.mem_get_info) when no budget is given


@dataclass(frozen=True)
class MemoryPlan:
    """How many directions one batched JVP/VJP call may take.

    ``budget_bytes``: memory the Jacobian work may use; ``fixed_bytes``: what it needs whatever the
    batch (solver workspace, margins); ``per_direction``: bytes per direction of one batched call, by
    kind (``"jvp"``, ``"vjp"``). The rule: directions per call =
    ``floor((budget_bytes - fixed_bytes) / per_direction[kind])``; a budget that cannot hold one
    direction is a :class:`UserError` (before any work), never an out-of-memory crash later.
    """

    budget_bytes: float
    per_direction: dict = field(default_factory=dict)
    fixed_bytes: float = 0.0
    source: str = ""

    def directions(self, kind: str) -> int:
        per = float(self.per_direction.get(kind, 0.0))
        if per <= 0:
            return 1 << 30
        free = self.budget_bytes - self.fixed_bytes
        d = int(math.floor(free / per))
        if d < 1:
            raise UserError(f"one {kind.upper()} direction needs about {per / GIB:.2f} GB but the memory budget leaves "
                            f"{max(free, 0) / GIB:.2f} GB; raise the memory budget (--memory-gb) or use a smaller model")
        return d

    def describe(self) -> dict:
        return {"budget_gb": round(self.budget_bytes / GIB, 3), "fixed_gb": round(self.fixed_bytes / GIB, 3),
                "per_direction_gb": {k: round(v / GIB, 4) for k, v in self.per_direction.items()},
                "directions_per_call": {k: self.directions(k) for k in self.per_direction}, "source": self.source}


# ----------------------------------------------------------------------------- operator
@dataclass
class PassCounter:
    """Network passes: JVPs and VJPs counted per direction and per batched call."""

    jvp_directions: int = 0
    vjp_directions: int = 0
    jvp_calls: int = 0
    vjp_calls: int = 0

    @property
    def passes(self) -> int:
        return self.jvp_directions + self.vjp_directions

    @property
    def calls(self) -> int:
        return self.jvp_calls + self.vjp_calls

    def snapshot(self) -> "PassCounter":
        return PassCounter(self.jvp_directions, self.vjp_directions, self.jvp_calls, self.vjp_calls)

    def since(self, start: "PassCounter") -> "PassCounter":
        return PassCounter(self.jvp_directions - start.jvp_directions, self.vjp_directions - start.vjp_directions,
                           self.jvp_calls - start.jvp_calls, self.vjp_calls - start.vjp_calls)


class JacobianOperator:
    """``J = df/dx`` at ``x`` as a linear operator on blocks of directions.

    ``f``: batched callable ``(B, *shape) -> (B, *shape)``, rows independent.
    ``x``: the point, one sample *without* a batch dimension (shape ``shape``).
    ``output_mask``: optional tensor broadcastable to ``shape``; the operator is then
    ``P_mask J`` (``jvp`` returns ``mask * J v``, ``vjp`` computes ``J^T (mask * u)``).
    ``chunk_size``: most directions per batched call; ``memory`` (a :class:`MemoryPlan`) lowers it
    per kind so that one call fits the memory budget.

    ``jvp_mode``: ``"forward"`` -- exact forward-mode AD (``torch.func.jvp``); ``"central"`` -- the
    central difference ``(f(x + h v) - f(x - h v)) / 2h`` in the callable's precision, forward passes
    only, no autograd graph (so fused attention kernels run); ``h = fd_step * max(rms(x), 1) / rms(v)``,
    i.e. the perturbation has RMS ``fd_step`` relative to the point. Measured accuracy: see
    :data:`CENTRAL_STEP`.
    ``jvp_context``: a callable returning a context manager entered around forward-mode JVP calls
    only (a U-Net's :meth:`forward_ad_safe`: classic attention + contiguous GroupNorm inputs);
    ``math_attention``: forward-mode JVP calls also run under ``sdpa_kernel(MATH)``. VJPs (reverse
    mode) and central differences run with the default (fused, memory-efficient) attention.
    ``check``: called before every batched call (raise there to cancel).
    """

    def __init__(self, f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *,
                 batching: str = "replicate", chunk_size: int | None = 32, output_mask: torch.Tensor | None = None,
                 math_attention: bool = True, counter: PassCounter | None = None, jvp_mode: str = "forward",
                 fd_step: float | None = None, jvp_context: Callable | None = None,
                 memory: "MemoryPlan | None" = None, check: Callable[[], None] | None = None):
        if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x):
            raise UserError("the Jacobian point x must be a floating-point tensor")
        if batching not in ("replicate", "vmap"):
            raise UserError(f"batching must be 'replicate' or 'vmap', got {batching!r}")
        if chunk_size is not None and chunk_size < 1:
            raise UserError("chunk_size must be a positive integer or None")
        if jvp_mode not in JVP_MODES:
            raise UserError(f"jvp mode must be one of {', '.join(JVP_MODES)}, got {jvp_mode!r}")
        self.fd_step = CENTRAL_STEP if fd_step is None else float(fd_step)
        if not (self.fd_step > 0 and math.isfinite(self.fd_step)):
            raise UserError(f"the central-difference step must be a positive number, got {fd_step!r}")
        self.f = f
        self.x = x.detach()[None]  # (1, *shape)
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

    # -- helpers
    @property
    def device(self):
        return self.x.device

    @property
    def dtype(self):
        return self.x.dtype

    def with_output_mask(self, mask: torch.Tensor | None) -> "JacobianOperator":
        """Same function and point, output multiplied by ``mask``; shares the pass counter."""
        return JacobianOperator(self.f, self.x[0], batching=self.batching, chunk_size=self.chunk_size,
                                output_mask=mask, math_attention=self.math_attention, counter=self.counter,
                                jvp_mode=self.jvp_mode, fd_step=self.fd_step, jvp_context=self.jvp_context,
                                memory=self.memory, check=self.check)

    def _ctx(self, kind: str = "jvp"):
        """Context of one batched call: forward-mode JVPs get the AD-safe switches, the rest nothing."""
        if kind != "jvp" or self.jvp_mode != "forward":
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        if self.jvp_context is not None:
            stack.enter_context(self.jvp_context())
        if self.math_attention:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        return stack

    def directions_per_call(self, kind: str) -> int:
        """Most directions one batched call of ``kind`` (``"jvp"`` / ``"vjp"``) takes: the smaller of
        ``chunk_size`` and the memory plan's ``floor((budget - fixed) / per_direction)``."""
        step = self.chunk_size or (1 << 30)
        if self.memory is not None:
            step = min(step, self.memory.directions(kind))
        return max(1, step)

    def _blocks(self, T: torch.Tensor, kind: str = "jvp"):
        T = T.to(device=self.device, dtype=self.dtype).reshape(-1, *self.shape)
        step = self.directions_per_call(kind)
        for i in range(0, T.shape[0], step):
            if self.check is not None:
                self.check()
            yield T[i:i + step].contiguous()

    def value(self) -> torch.Tensor:
        """``f(x)`` (one forward, not counted as a pass), shape ``shape``."""
        with torch.no_grad():
            out = self.f(self.x)[0]
        return out * self.mask if self.mask is not None else out

    # -- J V
    def _jvp_central(self, blk: torch.Tensor) -> torch.Tensor:
        b = blk.shape[0]
        scale = max(float(self.x.pow(2).mean().sqrt()), 1.0)
        rms = blk.reshape(b, -1).pow(2).mean(1).sqrt()
        h = torch.where(rms > 0, self.fd_step * scale / rms.clamp(min=_TINY), torch.ones_like(rms))
        d = blk * h.view(-1, *([1] * len(self.shape)))
        with torch.no_grad():
            out = self.f(torch.cat([self.x + d, self.x - d]))
        return (out[:b] - out[b:]) / (2 * h.view(-1, *([1] * len(self.shape))))

    def jvp(self, V: torch.Tensor) -> torch.Tensor:
        """``J v`` for each row of ``V`` (``(b, *shape)`` or ``(b, n)``); returns ``(b, *shape)``."""
        outs = []
        for blk in self._blocks(V, "jvp"):
            b = blk.shape[0]
            with self._ctx("jvp"):
                if self.jvp_mode == "central":
                    jv = self._jvp_central(blk)
                elif self.batching == "replicate":
                    xb = self.x.expand(b, *self.shape).contiguous()
                    _, jv = torch.func.jvp(self.f, (xb,), (blk,))
                else:
                    x1 = self.x

                    def one(v):
                        return torch.func.jvp(self.f, (x1,), (v[None],))[1][0]

                    jv = torch.func.vmap(one)(blk)
            outs.append(jv.detach())
            self.counter.jvp_directions += b
            self.counter.jvp_calls += 1
        out = torch.cat(outs) if outs else torch.zeros(0, *self.shape, dtype=self.dtype, device=self.device)
        return out * self.mask if self.mask is not None else out

    # -- J^T U
    def vjp(self, U: torch.Tensor) -> torch.Tensor:
        """``J^T u`` for each row of ``U``; returns ``(b, *shape)``."""
        outs = []
        for blk in self._blocks(U, "vjp"):
            b = blk.shape[0]
            if self.mask is not None:
                blk = blk * self.mask
            if self.batching == "replicate":
                xb = self.x.expand(b, *self.shape).contiguous()
                _, fn = torch.func.vjp(self.f, xb)
                (g,) = fn(blk)
            else:
                _, fn = torch.func.vjp(self.f, self.x)
                g = torch.func.vmap(lambda u: fn(u[None])[0][0])(blk)
            outs.append(g.detach())
            del fn
            self.counter.vjp_directions += b
            self.counter.vjp_calls += 1
        return torch.cat(outs) if outs else torch.zeros(0, *self.shape, dtype=self.dtype, device=self.device)


def _as_operator(f_or_op, x=None, **op_kwargs) -> JacobianOperator:
    if isinstance(f_or_op, JacobianOperator):
        return f_or_op
    if x is None:
        raise UserError("a point x is needed with a callable")
    return JacobianOperator(f_or_op, x, **op_kwargs)


# ------------------------------------------------------------------------------ results
@dataclass
class JacobianSVD:
    """Top-k singular triplets of ``J`` at a point.

    ``singular_values``: ``(k,)`` descending; ``U``, ``V``: ``(k, *shape)`` unit left / right
    singular vectors (``J v_i ~ s_i u_i``); ``spectrum``: all ``n`` singular values when the
    exact path ran (else ``None``); ``pairs``: which side holds exactly -- ``"ritz"`` (``J v_i = s_i u_i``;
    ``residuals`` are ``||J^T u_i - s_i v_i||``) or ``"one-sided"`` (``J^T u_i = s_i v_i``; ``residuals``
    are ``||J v_i - s_i u_i||``, NaN when the budget left no pass to measure them); 0 on the exact path;
    ``error_estimate``: estimated sine of the largest principal angle to the true top-k right subspace;
    passes as in :class:`PassCounter`.
    """

    singular_values: torch.Tensor
    U: torch.Tensor
    V: torch.Tensor
    method: str
    jvp_directions: int = 0
    vjp_directions: int = 0
    jvp_calls: int = 0
    vjp_calls: int = 0
    iterations: int = 0
    converged: bool = True
    wall_time_s: float = 0.0
    residuals: torch.Tensor | None = None
    error_estimate: float = 0.0
    spectrum: torch.Tensor | None = None
    history: list[dict] = field(default_factory=list)
    max_passes: int | None = None          # the pass budget (None: the exact path, n passes)
    tol: float | None = None
    stop_reason: str = "exact"             # exact | converged | budget | exhausted
    fro2_estimate: float | None = None     # ||J||_F^2 from the first (random orthonormal) block, if cold-started
    fro2_probes: int = 0
    basis: torch.Tensor | None = None      # Krylov: the final orthonormal search basis V (n x m, float64)
    basis_energy: float | None = None      # Krylov: ||J V||_F^2 of that basis (exact, no extra passes)
    jvp_mode: str = ""
    memory: dict | None = None             # the memory plan the search ran under (MemoryPlan.describe())
    choice: str = ""                       # why this solver ran (jacobian_svd: the auto rule or "given")
    pairs: str = "ritz"                    # ritz (J v = s u exactly) | one-sided (J^T u = s v exactly)

    @property
    def stopped_at_budget(self) -> bool:
        return self.stop_reason == "budget"

    @property
    def status(self) -> str:
        """One line: how the search ended (``converged`` / ``stopped at the pass budget, estimated error X``)."""
        if self.stop_reason == "exact":
            return f"exact (full Jacobian, {self.passes} passes)"
        if self.stop_reason == "converged":
            return f"converged (estimated error {self.error_estimate:.3g} <= tol {self.tol:g}, {self.passes} passes)"
        err = "unknown (no spectral gap yet)" if not math.isfinite(self.error_estimate) else f"{self.error_estimate:.3g}"
        if self.stop_reason == "exhausted":
            return f"stopped: the Krylov space is exhausted ({self.passes} passes), estimated error {err}"
        return (f"stopped at the pass budget ({self.passes} of {self.max_passes} passes), estimated error {err} "
                f"(tol {self.tol:g})")

    @property
    def k(self) -> int:
        return int(self.singular_values.numel())

    @property
    def passes(self) -> int:
        """Network passes (JVP + VJP directions)."""
        return self.jvp_directions + self.vjp_directions

    @property
    def directions(self) -> int:
        return self.passes

    @property
    def batched_calls(self) -> int:
        return self.jvp_calls + self.vjp_calls

    def numerical_rank(self, eta: float = 0.99) -> int | None:
        """Wang et al. 2024, eq. 46 on the full spectrum (exact path); ``None`` when only the top-k is known."""
        return None if self.spectrum is None else numerical_rank(self.spectrum, eta)

    def summary(self) -> dict:
        return {"method": self.method, "k": self.k, "passes": self.passes, "jvp": self.jvp_directions,
                "vjp": self.vjp_directions, "batched_calls": self.batched_calls, "iterations": self.iterations,
                "converged": self.converged, "wall_time_s": round(self.wall_time_s, 4),
                "error_estimate": self.error_estimate if math.isfinite(self.error_estimate) else None,
                "max_passes": self.max_passes, "tol": self.tol, "stop_reason": self.stop_reason,
                "stopped_at_budget": self.stopped_at_budget, "status": self.status, "jvp_mode": self.jvp_mode,
                "solver": self.method, "solver_choice": self.choice,
                "singular_values": [float(s) for s in self.singular_values]}


def _set_counts(res: JacobianSVD, used: PassCounter) -> JacobianSVD:
    res.jvp_directions, res.vjp_directions = used.jvp_directions, used.vjp_directions
    res.jvp_calls, res.vjp_calls = used.jvp_calls, used.vjp_calls
    return res


# --------------------------------------------------------------------------- linear algebra
def _flat(T: torch.Tensor, n: int) -> torch.Tensor:
    """``(b, *shape)`` -> ``(n, b)``."""
    return T.reshape(-1, n).T


def _unflat(M: torch.Tensor, shape, dtype) -> torch.Tensor:
    """``(n, b)`` -> ``(b, *shape)``."""
    return M.T.contiguous().to(dtype).reshape(-1, *shape)


def _orthonormal_block(Z: torch.Tensor, V: torch.Tensor | None, gen: torch.Generator, rel_tol: float = 1e-9) -> torch.Tensor:
    """Orthonormal basis of ``Z``'s columns projected off ``span(V)`` (two Gram-Schmidt passes);
    directions that vanish (rank deficiency, exhausted Krylov space) are replaced by random ones."""
    n, b = Z.shape
    scale = float(Z.norm(dim=0).max()) if b else 0.0
    for _ in range(4):
        W = Z
        for _ in range(2):
            if V is not None and V.shape[1]:
                W = W - V @ (V.T @ W)
        Q, R = torch.linalg.qr(W)
        d = R.diagonal().abs()
        bad = d <= rel_tol * max(scale, _TINY)
        if not bool(bad.any()):
            # one more pass against V for safety (QR keeps span, not exact orthogonality to V)
            if V is not None and V.shape[1]:
                Q = Q - V @ (V.T @ Q)
                Q, _ = torch.linalg.qr(Q)
            return Q
        Z = Z.clone()
        rnd = torch.randn(n, int(bad.sum()), generator=gen, dtype=torch.float64).to(Z)
        Z[:, bad] = rnd * max(scale, 1.0)
        scale = float(Z.norm(dim=0).max())
    raise RuntimeError("could not build an orthonormal block (n too small for the requested size?)")


def _ritz(V: torch.Tensor, W: torch.Tensor):
    """SVD of ``J`` restricted to ``span(V)`` from ``W = J V``: (s desc, Q) with ``W^T W = Q s^2 Q^T``."""
    G = W.T @ W
    G = 0.5 * (G + G.T)
    lam, Q = torch.linalg.eigh(G)
    lam, Q = lam.flip(0), Q.flip(1)
    return lam.clamp(min=0).sqrt(), Q


# ------------------------------------------------------------------------------- solvers
def top_k_svd(f_or_op, x: torch.Tensor | None = None, k: int = 5, *, oversample: int | None = None,
              tol: float = 0.05, max_passes: int = 2000, V0: torch.Tensor | None = None, seed: int = 0,
              max_basis: int | None = None, callback: Callable[[dict], None] | None = None,
              progress: bool = False, block: int | None = None, **op_kwargs) -> JacobianSVD:
    """Top-k singular triplets of ``J`` by block Golub-Kahan-Lanczos with full reorthogonalisation.

    ``f_or_op``: a :class:`JacobianOperator` or a batched callable (then ``x`` is needed;
    ``op_kwargs`` go to the operator). Block size: ``block`` if given (it may be smaller than ``k``),
    else ``k + oversample`` (default oversampling: 0 for ``k = 1``, else 1).
    ``tol``: stop when the Wedin estimate of sin(largest principal angle) is below it.
    ``max_passes``: budget of network passes (JVP + VJP directions); the result says
    ``converged=False`` when the budget ran out. ``V0``: warm start, ``(k0, *shape)``
    (e.g. the previous time step's ``V``). ``callback(info)`` after each iteration with
    ``iteration, passes, calls, singular_values, error_estimate, V`` (``n x k`` float64: the reported
    iterate, the one-sided vectors once the basis holds more than ``k``) and ``V_ritz`` (the Ritz vectors
    of ``span(V)``, which ``error_estimate`` is for).
    """
    op = _as_operator(f_or_op, x, **op_kwargs)
    n = op.n
    check_range("k", k, 1, n)
    p = (0 if k == 1 else 1) if oversample is None else int(oversample)
    check_range("oversample", p, 0, n)
    b = min(k + p, n)
    if block is not None:
        check_range("block", block, 1, n)
        b = int(block)
    check_range("tol", tol, 0.0, 1.0)
    first = b * math.ceil(k / b)     # passes of each kind until the basis holds k vectors
    if max_passes < 2 * first:
        raise UserError(f"max_passes must be at least {2 * first} for k = {k} with block {b}")
    if max_basis is None:
        max_basis = max(4 * b, 2 * k + 2 * b, min(300, int(256e6 / (24 * n))))
    max_basis = min(max(max_basis, k + 2 * b), n)
    gen = torch.Generator().manual_seed(int(seed))
    wd = torch.float64
    dev = op.device
    start_count = op.counter.snapshot()
    t0 = time.perf_counter()

    # initial block: warm start + random fill
    Z0 = torch.randn(n, b, generator=gen, dtype=wd).to(dev)
    if V0 is not None:
        v0 = torch.as_tensor(V0).reshape(-1, n).to(device=dev, dtype=wd).T[:, :b]
        Z0[:, :v0.shape[1]] = v0 / v0.norm(dim=0, keepdim=True).clamp(min=_TINY)
    Vnew = _orthonormal_block(Z0, None, gen)
    # V: orthonormal right basis, W = J V; U: orthonormal basis containing span(W), Z = J^T U
    V = torch.zeros(n, 0, dtype=wd, device=dev)
    W = torch.zeros(n, 0, dtype=wd, device=dev)
    U = torch.zeros(n, 0, dtype=wd, device=dev)
    Z = torch.zeros(n, 0, dtype=wd, device=dev)
    history: list[dict] = []
    it, converged, est, reason = 0, False, math.inf, "budget"
    fro2 = None
    res = torch.zeros(0, dtype=wd)
    bar = tqdm(total=max_passes, desc="Jacobian singular vectors", disable=not progress, leave=False, unit="pass")
    left = None      # the one-sided estimate from the last VJP, certified after the next JVP
    out_vecs = None
    try:
        while True:
            it += 1
            Wnew = _flat(op.jvp(_unflat(Vnew, op.shape, op.dtype)), n).to(wd)
            if it == 1 and V0 is None:
                # the first block is Haar-random orthonormal: E ||J v||^2 = ||J||_F^2 / n per column (Hutchinson)
                fro2 = float(Wnew.pow(2).sum()) * n / Wnew.shape[1]
            V = torch.cat([V, Vnew], 1)
            W = torch.cat([W, Wnew], 1)
            if left is not None:
                # the one-sided pairs lie in span(V) now (up to rounding and restarts: the part outside,
                # times ||J|| ~ s_1, is added), so J v_i = W V^T v_i is known: their residual J v_i - s_i u_i
                # (the other one, J^T u_i - s_i v_i, is zero by construction)
                Pl, sl, Ul, gap_l = left
                C = V.T @ Pl
                R = W @ C - Ul * sl
                outside = float(torch.linalg.matrix_norm(Pl - V @ C, ord=2)) * float(sl[0])
                est_l = (float(torch.linalg.matrix_norm(R, ord=2)) + outside) / gap_l if gap_l > 0 else math.inf
                history[-1]["one_sided_error_estimate"] = est_l
                if est_l <= tol or op.counter.since(start_count).passes + b > max_passes:
                    converged = est_l <= tol
                    reason, est = ("converged" if converged else "budget"), est_l
                    s, res, out_vecs = sl, R.norm(dim=0), (Ul, Pl)
                    break
                left = None
            Unew = _orthonormal_block(Wnew, U, gen)
            Znew = _flat(op.vjp(_unflat(Unew, op.shape, op.dtype)), n).to(wd)   # J^T U_new
            U = torch.cat([U, Unew], 1)
            Z = torch.cat([Z, Znew], 1)
            m = V.shape[1]
            # Rayleigh-Ritz: J V = U B exactly (span(W) lies in span(U)); B = Y diag(s) X^T
            B = U.T @ W
            Y, s, Xh = torch.linalg.svd(B, full_matrices=False)
            X = Xh.T
            kk = min(k, m)
            Vk = V @ X[:, :kk]
            Uk = U @ Y[:, :kk]
            # residual J^T u_i - s_i v_i = Z y_i - s_i v_i (the other residual J v_i - s_i u_i is zero)
            R = Z @ Y[:, :kk] - Vk * s[:kk]
            res = R.norm(dim=0)
            res2 = float(torch.linalg.matrix_norm(R, ord=2)) if kk else 0.0
            if m == n:
                est = 0.0  # span(V) is everything: Rayleigh-Ritz is exact
            elif m > k:
                gap = float(s[k - 1] - s[k])
                est = res2 / gap if gap > 0 else math.inf
            else:
                est = math.inf
            used = op.counter.since(start_count)
            bar.update(used.passes - bar.n)
            info = {"iteration": it, "passes": used.passes, "calls": used.calls, "basis": m, "block": b,
                    "singular_values": s[:kk].tolist(), "error_estimate": est,
                    "residual_max": float(res.max()) if res.numel() else 0.0}
            history.append(info)
            if est <= tol:
                if callback is not None:
                    callback({**info, "V": Vk})
                converged, reason = True, "converged"
                break
            # one-sided Rayleigh-Ritz on U^T J = Z^T (known): its right vectors span(Z) reach one Krylov step
            # further than span(V) (Halko et al. 2011's estimate from Q^T A), certified after the next JVP
            left = None
            if m >= k and m < n:
                Pz, sz, Qzh = torch.linalg.svd(Z, full_matrices=False)
                left = (Pz[:, :k], sz[:k], U @ Qzh.T[:, :k], float(sz[k - 1] - sz[k]) if m > k else 0.0)
            if callback is not None:
                callback({**info, "V": left[0] if left is not None else Vk, "V_ritz": Vk})
            if used.passes + (b if left is not None else 2 * b) > max_passes and m >= k:
                # no room for the certifying JVP: the one-sided vectors with the Ritz estimate (they were at
                # least as close as the Ritz vectors of span(V) on 3168 of 3174 iterates of digits-gen,
                # digits-mem and the tiny SD, k = 1..10, blocks 1, 2, auto, k + 1; the 6 others had
                # principal cosines <= 0.063: bench/one_sided.py)
                if left is not None:
                    s, out_vecs = left[1], (left[2], left[0])
                    res = torch.full((k,), math.nan, dtype=wd)
                reason = "budget"
                break
            b_next = min(b, n - m)
            if b_next <= 0:
                reason = "exhausted"
                break
            # next block: the part of J^T U outside span(V) (rank <= b; after a restart the kept
            # Ritz vectors' residuals, thick restart)
            Rz = Z - V @ (V.T @ Z)
            Rz = Rz - V @ (V.T @ Rz)
            if m + b_next > max_basis:   # thick restart: keep the top Ritz pairs
                keep = max(min(m, max_basis - b_next), kk + 1 if m > kk else kk)
                keep = min(keep, m)
                V, W = V @ X[:, :keep], W @ X[:, :keep]
                U, Z = U @ Y[:, :keep], Z @ Y[:, :keep]
                Rz = Z - V @ (V.T @ Z)
                Rz = Rz - V @ (V.T @ Rz)
            Pz, sz, _ = torch.linalg.svd(Rz, full_matrices=False)
            Vnew = _orthonormal_block(Pz[:, :b_next] * sz[:b_next].clamp(min=_TINY), V, gen)
    finally:
        bar.close()
    if Vk.shape[1] < k:     # exhausted before k columns (n < k cannot happen: checked)
        raise RuntimeError("the Krylov space ran out before k vectors")
    if out_vecs is not None:
        Uk, Vk = out_vecs
    U_out = _unflat(Uk, op.shape, op.dtype)
    V_out = _unflat(Vk, op.shape, op.dtype)
    res_out = torch.zeros(k, dtype=wd)
    res_out[:res.numel()] = res.cpu()
    out = JacobianSVD(singular_values=s[:k].to(op.dtype).cpu(), U=U_out, V=V_out, method="krylov",
                      iterations=it, converged=converged, wall_time_s=time.perf_counter() - t0,
                      residuals=res_out.float(), error_estimate=est, history=history, max_passes=max_passes,
                      tol=tol, stop_reason=reason, fro2_estimate=fro2, fro2_probes=b if fro2 is not None else 0,
                      basis=V.detach().cpu(), basis_energy=float(W.pow(2).sum()), jvp_mode=op.jvp_mode,
                      pairs="one-sided" if out_vecs is not None else "ritz")
    return _set_counts(out, op.counter.since(start_count))


def subspace_iteration(f_or_op, x: torch.Tensor | None = None, k: int = 5, *, tol: float = 1e-4, max_iters: int = 50,
                       seed: int = 0, V0: torch.Tensor | None = None, callback: Callable[[dict], None] | None = None,
                       progress: bool = False, **op_kwargs) -> JacobianSVD:
    """The power-iteration baseline of Chen et al. 2024 (LOCO Edit; generalised power method): per
    iteration ``k`` JVPs, QR,
    ``k`` VJPs, SVD; stop when successive right bases agree (sine of the largest principal
    angle ``<= tol``) or after ``max_iters`` iterations. Used by ``bench/jacobian.py``."""
    op = _as_operator(f_or_op, x, **op_kwargs)
    n = op.n
    check_range("k", k, 1, n)
    gen = torch.Generator().manual_seed(int(seed))
    wd, dev = torch.float64, op.device
    start_count = op.counter.snapshot()
    t0 = time.perf_counter()
    Z0 = torch.randn(n, k, generator=gen, dtype=wd).to(dev)
    if V0 is not None:
        v0 = torch.as_tensor(V0).reshape(-1, n).to(device=dev, dtype=wd).T[:, :k]
        Z0[:, :v0.shape[1]] = v0
    V = _orthonormal_block(Z0, None, gen)
    history, converged, it, change = [], False, 0, math.inf
    s = torch.zeros(k, dtype=wd)
    Uq = None
    for it in tqdm(range(1, max_iters + 1), desc="power iteration", disable=not progress, leave=False):
        Wm = _flat(op.jvp(_unflat(V, op.shape, op.dtype)), n).to(wd)
        Uq, _ = torch.linalg.qr(Wm)
        Z = _flat(op.vjp(_unflat(Uq, op.shape, op.dtype)), n).to(wd)    # = (Uq^T J)^T
        P, s, Qh = torch.linalg.svd(Z, full_matrices=False)              # Uq^T J = Qh^T s P^T
        Vn = P
        Uq = Uq @ Qh.T
        change = math.sqrt(max(0.0, 1.0 - float(torch.linalg.svdvals(V.T @ Vn).min().clamp(max=1.0)) ** 2))
        V = Vn
        used = op.counter.since(start_count)
        info = {"iteration": it, "passes": used.passes, "calls": used.calls, "singular_values": s.tolist(),
                "change": change}
        history.append(info)
        if callback is not None:
            callback({**info, "V": V})
        if change <= tol:
            converged = True
            break
    out = JacobianSVD(singular_values=s.to(op.dtype).cpu(), U=_unflat(Uq, op.shape, op.dtype),
                      V=_unflat(V, op.shape, op.dtype), method="subspace_iteration", iterations=it,
                      converged=converged, wall_time_s=time.perf_counter() - t0, error_estimate=change,
                      history=history, tol=tol, stop_reason="converged" if converged else "budget",
                      max_passes=2 * k * max_iters, jvp_mode=op.jvp_mode)
    return _set_counts(out, op.counter.since(start_count))


def exact_jacobian(f_or_op, x: torch.Tensor | None = None, *, mode: str = "rev", progress: bool = False,
                   **op_kwargs) -> torch.Tensor:
    """The full ``n x n`` Jacobian (``J[i, j] = d f_i / d x_j``, flattened) from ``n`` VJPs
    (``mode="rev"``, jacrev) or ``n`` JVPs (``mode="fwd"``, jacfwd), in chunks."""
    op = _as_operator(f_or_op, x, **op_kwargs)
    if mode not in ("rev", "fwd"):
        raise UserError(f"mode must be 'rev' or 'fwd', got {mode!r}")
    n = op.n
    step = op.chunk_size or n
    cols = []
    for i in tqdm(range(0, n, step), desc="exact Jacobian", disable=not progress, leave=False):
        eye = torch.zeros(min(step, n - i), n, dtype=op.dtype, device=op.device)
        eye[torch.arange(eye.shape[0]), torch.arange(i, i + eye.shape[0])] = 1
        blk = op.vjp(eye) if mode == "rev" else op.jvp(eye)
        cols.append(blk.reshape(-1, n))
    M = torch.cat(cols)              # rev: rows of J; fwd: columns of J
    return M if mode == "rev" else M.T.contiguous()


def exact_svd(f_or_op, x: torch.Tensor | None = None, k: int | None = None, *, mode: str = "rev",
              progress: bool = False, **op_kwargs) -> JacobianSVD:
    """Exact Jacobian + ``torch.linalg.svd`` (float64): ``J v_i = s_i u_i`` with ``U``, ``V`` the
    left / right singular vectors of the (generally non-symmetric) Jacobian. ``k=None``: all ``n``
    triplets; ``spectrum`` holds all ``n`` singular values."""
    op = _as_operator(f_or_op, x, **op_kwargs)
    k = op.n if k is None else k
    check_range("k", k, 1, op.n)
    start_count = op.counter.snapshot()
    t0 = time.perf_counter()
    J = exact_jacobian(op, mode=mode, progress=progress).double()
    Uf, s, Vh = torch.linalg.svd(J)
    out = JacobianSVD(singular_values=s[:k].to(op.dtype).cpu(), U=_unflat(Uf[:, :k], op.shape, op.dtype),
                      V=_unflat(Vh[:k].T, op.shape, op.dtype), method="exact", iterations=1, converged=True,
                      wall_time_s=time.perf_counter() - t0, residuals=torch.zeros(k), error_estimate=0.0,
                      spectrum=s.to(op.dtype).cpu())
    return _set_counts(out, op.counter.since(start_count))


OPERATOR_KEYS = ("batching", "chunk_size", "output_mask", "math_attention", "counter", "jvp_mode", "fd_step",
                 "jvp_context", "memory", "check")


def exact_fits(n: int, max_passes: int | None, exact_max_n: int = EXACT_MAX_N) -> bool:
    """``method="auto"`` takes the exact path: ``n <= exact_max_n`` and its ``n`` VJPs fit the budget."""
    return n <= exact_max_n and (max_passes is None or n <= max_passes)


def jacobian_svd(f_or_op, x: torch.Tensor | None = None, k: int = 5, *, method: str = "auto",
                 exact_max_n: int = EXACT_MAX_N, **kwargs) -> JacobianSVD:
    """Top-k singular triplets: ``method`` in ``auto`` (:func:`choose_solver`: exact where it needs no more
    batched calls than Krylov and fits ``max_passes``, else block Krylov with the ``auto`` block),
    ``exact``, ``krylov`` (block ``k + 1`` unless ``block=``), ``power`` (the LOCO-style baseline;
    ``max_passes`` caps its iterations). The result's ``method``, ``passes``, ``batched_calls``,
    ``error_estimate`` and ``choice`` say what ran, what it cost and why."""
    op = _as_operator(f_or_op, x, **{kk: kwargs.pop(kk) for kk in OPERATOR_KEYS if kk in kwargs})
    choice = None
    if method == "auto":
        choice = choose_solver(op.n, k, kwargs.get("max_passes"), exact_max_n, op.directions_per_call("vjp"),
                               op.device.type)
        method = choice.method
        if choice.block is not None:
            kwargs.setdefault("block", choice.block)
    if method == "exact":
        res = exact_svd(op, k=k, progress=kwargs.get("progress", False))
    elif method == "krylov":
        res = top_k_svd(op, k=k, **kwargs)
    elif method == "power":
        if kwargs.get("max_passes") is not None and "max_iters" not in kwargs:   # the pass budget, k + k per iteration
            kwargs["max_iters"] = max(1, int(kwargs["max_passes"]) // (2 * k))
        res = subspace_iteration(op, k=k, **{kk: v for kk, v in kwargs.items()
                                            if kk in ("tol", "max_iters", "seed", "V0", "callback", "progress")})
    else:
        raise UserError(f"unknown method {method!r} ({', '.join(SOLVERS)})")
    res.choice = choice.reason if choice is not None else f"{method} (given)"
    return res


# --------------------------------------------------------------------------- masked variant
@dataclass
class MaskedDirections:
    """Local edit directions (Chen et al. 2024, LOCO Edit: masked Jacobian, null-space projection).

    ``directions``: ``(k, *shape)`` unit vectors; ``inside``: SVD of ``P_mask J``;
    ``outside``: SVD of ``P_not_mask J`` (its top-``null_rank`` right vectors are projected
    off); ``inside_fraction``: ``||P_mask J d||^2 / ||J d||^2`` per direction (None if not
    measured); ``inside_fraction_unprojected``: the same for the unprojected ``inside.V``.
    """

    directions: torch.Tensor
    inside: JacobianSVD
    outside: JacobianSVD
    null_rank: int
    inside_fraction: torch.Tensor | None = None
    inside_fraction_unprojected: torch.Tensor | None = None
    passes: int = 0
    wall_time_s: float = 0.0

    @property
    def stopped_at_budget(self) -> bool:
        return self.inside.stopped_at_budget or self.outside.stopped_at_budget

    @property
    def converged(self) -> bool:
        return self.inside.converged and self.outside.converged

    @property
    def status(self) -> str:
        if self.inside.stop_reason == "exact":
            return f"exact (full Jacobian, {self.passes} passes)"
        return f"inside the mask: {self.inside.status}; outside: {self.outside.status}"


def mask_energy_fraction(J_dirs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``||mask * y||^2 / ||y||^2`` for each row ``y`` of ``J_dirs`` (``(k, *shape)``)."""
    m = torch.broadcast_to(torch.as_tensor(mask, dtype=J_dirs.dtype, device=J_dirs.device), J_dirs.shape[1:])
    inside = (J_dirs * m).pow(2).reshape(J_dirs.shape[0], -1).sum(1)
    total = J_dirs.pow(2).reshape(J_dirs.shape[0], -1).sum(1).clamp(min=_TINY)
    return inside / total


def masked_directions(f_or_op, x: torch.Tensor | None, mask: torch.Tensor, k: int = 5, *, null_rank: int = 5,
                      method: str = "auto", measure: bool = True, exact_max_n: int = EXACT_MAX_N,
                      **kwargs) -> MaskedDirections:
    """Top-k right singular vectors of ``P_mask f`` projected off the top-``null_rank`` right
    singular vectors of ``P_not_mask f``, unit-normalised (LOCO Edit's null-space projection).

    ``mask``: broadcastable to the sample shape, 1 inside the edit region (values in [0, 1]).
    ``measure``: spend ``2k`` JVPs to report how much of ``J d`` falls inside the mask.
    ``max_passes`` (optional) is the budget of *each* of the two Krylov searches (``method="auto"``
    takes the exact path when its ``n`` VJPs fit it); the ``2k`` measuring JVPs come on top.
    """
    op_keys = tuple(kk for kk in OPERATOR_KEYS if kk != "output_mask")
    base = _as_operator(f_or_op, x, **{kk: kwargs.pop(kk) for kk in op_keys if kk in kwargs})
    if base.mask is not None:
        raise UserError("pass the mask to masked_directions, not to the operator")
    m = torch.as_tensor(mask, dtype=base.dtype, device=base.device)
    try:
        m = torch.broadcast_to(m, base.shape)
    except RuntimeError as e:
        raise UserError(f"mask of shape {tuple(m.shape)} does not broadcast to {base.shape}") from e
    if not bool(((m >= 0) & (m <= 1)).all()):
        raise UserError("mask values must lie in [0, 1]")
    inside_count = float(m.sum())
    if inside_count == 0 or inside_count == base.n:
        raise UserError("the mask must cover part of the image, not none or all of it")
    check_range("null_rank", null_rank, 0, base.n - 1)
    start_count = base.counter.snapshot()
    t0 = time.perf_counter()
    if method == "auto":
        method = "exact" if exact_fits(base.n, kwargs.get("max_passes"), exact_max_n) else "krylov"
    if method == "exact":
        J = exact_jacobian(base, progress=kwargs.get("progress", False)).double()
        mf = m.reshape(-1, 1).double()
        res = []
        for P, kk in ((mf, k), (1 - mf, max(null_rank, 1))):
            Uf, s, Vh = torch.linalg.svd(P * J)
            res.append(JacobianSVD(singular_values=s[:kk].to(base.dtype).cpu(),
                                   U=_unflat(Uf[:, :kk], base.shape, base.dtype),
                                   V=_unflat(Vh[:kk].T, base.shape, base.dtype), method="exact",
                                   spectrum=s.to(base.dtype).cpu()))
        inside, outside = res
    else:
        inside = jacobian_svd(base.with_output_mask(m), k=k, method=method, **kwargs)
        outside = jacobian_svd(base.with_output_mask(1 - m), k=max(null_rank, 1), method=method, **kwargs)
    Vin = inside.V.reshape(k, -1).double()
    D = Vin
    if null_rank > 0:
        Vout = outside.V.reshape(-1, base.n)[:null_rank].double()
        Qo, _ = torch.linalg.qr(Vout.T)
        D = Vin - (Vin @ Qo) @ Qo.T
    norms = D.norm(dim=1, keepdim=True)
    if bool((norms < 1e-8).any()):
        raise UserError("a masked direction lies in the null-space projection; lower null_rank")
    D = (D / norms).to(base.dtype).reshape(k, *base.shape)
    frac = frac0 = None
    if measure:
        JD = base.jvp(torch.cat([D, inside.V.to(base.dtype)]))
        frac, frac0 = mask_energy_fraction(JD[:k], m).cpu(), mask_energy_fraction(JD[k:], m).cpu()
    used = base.counter.since(start_count)
    return MaskedDirections(directions=D, inside=inside, outside=outside, null_rank=null_rank,
                            inside_fraction=frac, inside_fraction_unprojected=frac0, passes=used.passes,
                            wall_time_s=time.perf_counter() - t0)


# ------------------------------------------------------------------------ diffusion models
def x0_hat_fn(model, t: int, cond=None, dtype: torch.dtype = torch.float32) -> Callable[[torch.Tensor], torch.Tensor]:
    """Batched ``x_t -> x0_hat(x_t, t, c)`` of a :class:`~lowdim_app.diffusion.DiffusionModel`
    in ``dtype`` (float32 for Jacobians, even when sampling runs in fp16)."""
    t = int(t)

    def f(xb: torch.Tensor) -> torch.Tensor:
        return model.x0_hat(xb, t, cond, dtype=dtype)

    return f


def x0_hat_operator(model, x_t: torch.Tensor, t: int, cond=None, **op_kwargs) -> JacobianOperator:
    """:class:`JacobianOperator` of ``x_t -> x0_hat(x_t, t, c)`` at one sample ``x_t`` (shape
    ``model.sample_shape`` or ``(1, *sample_shape)``), float32. The default ``jvp_mode="forward"``
    (exact forward-mode AD) enters ``model.forward_ad_safe()`` around each JVP call by itself;
    ``jvp_mode="central"`` needs no switch. A half-precision model builds its float32 U-Net per
    call unless the calls run inside ``with model.float32_unet():`` (the solvers below do that)."""
    op_kwargs.setdefault("jvp_context", getattr(model, "forward_ad_safe", None))
    return _x0_hat_operator(model, x_t, t, cond, **op_kwargs)


def _x0_hat_operator(model, x_t, t, cond, **op_kwargs) -> JacobianOperator:
    x = torch.as_tensor(x_t).to(device=model.device, dtype=torch.float32)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if tuple(x.shape) != tuple(model.sample_shape):
        raise UserError(f"x_t must have shape {tuple(model.sample_shape)} (one sample), got {tuple(x_t.shape)}")
    model.check_timestep(int(t))
    return JacobianOperator(x0_hat_fn(model, t, cond), x, **op_kwargs)


def per_direction_bytes(profile: dict, kind: str) -> float:
    """Bytes one direction adds to a batched call of ``kind`` (``jvp_forward``, ``jvp_central``, ``vjp``,
    ``vjp_math``), from a model's :meth:`activation_profile` and :data:`MEMORY_COEFFICIENTS`."""
    a, q = MEMORY_COEFFICIENTS[kind]
    return MEMORY_SAFETY * (a * profile["activations"] + q * profile["attention"])


def default_budget(device) -> tuple[float, str]:
    """The memory budget when none is given: ``CUDA_BUDGET_FRACTION`` of the free CUDA memory, or on
    the CPU ``CPU_BUDGET_FRACTION`` of the available RAM (``MemAvailable``; 8 GB if unreadable)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return CUDA_BUDGET_FRACTION * free, f"{CUDA_BUDGET_FRACTION:.0%} of the free CUDA memory"
    avail = 8 * GIB
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    return CPU_BUDGET_FRACTION * avail, f"{CPU_BUDGET_FRACTION:.0%} of the available RAM"


def solver_workspace_bytes(n: int, k: int) -> float:
    """Float64 Krylov basis ``V`` and ``W = J V`` (``max_basis`` columns each, as :func:`top_k_svd`
    sizes them) plus the blocks in flight."""
    b = k + (0 if k == 1 else 1)
    basis = min(max(4 * b, min(300, int(256e6 / (16 * n)))), n)
    return 8.0 * n * (2 * basis + 4 * b)


def memory_plan(model, jvp_mode: str = DEFAULT_JVP_MODE, memory_gb: float | None = None, *, k: int = 5,
                margin_gb: float = 0.25) -> MemoryPlan | None:
    """The :class:`MemoryPlan` of JVP/VJP work on ``model`` (``None`` for a model without an
    :meth:`activation_profile`): per-direction bytes from the profile, the budget ``memory_gb`` (or
    :func:`default_budget` of the model's device), fixed = solver workspace + ``margin_gb``. Make it
    inside ``model.float32_unet()`` so the free CUDA memory already excludes the float32 copy."""
    if not hasattr(model, "activation_profile"):
        return None
    if jvp_mode not in JVP_MODES:
        raise UserError(f"jvp mode must be one of {', '.join(JVP_MODES)}, got {jvp_mode!r}")
    prof = model.activation_profile()
    per = {"jvp": per_direction_bytes(prof, "jvp_" + jvp_mode), "vjp": per_direction_bytes(prof, "vjp")}
    if memory_gb is not None:
        if not (memory_gb > 0 and math.isfinite(memory_gb)):
            raise UserError(f"the memory budget must be a positive number of GB, got {memory_gb!r}")
        budget, source = memory_gb * GIB, f"{memory_gb:g} GB (given)"
    else:
        budget, source = default_budget(model.device)
    fixed = solver_workspace_bytes(model.n, k) + margin_gb * GIB
    plan = MemoryPlan(budget_bytes=budget, per_direction=per, fixed_bytes=fixed, source=source)
    for kind in per:   # a budget that cannot hold one direction fails here, before any work
        plan.directions(kind)
    return plan


_MODEL_KEYS = ("batching", "chunk_size", "math_attention", "fd_step")


@contextlib.contextmanager
def _x0_hat_session(model, x_t, t, cond, k, kwargs) -> "contextlib.AbstractContextManager[JacobianOperator]":
    """The float32 U-Net held for the whole search, the memory plan made inside it, the operator."""
    jvp_mode = kwargs.pop("jvp_mode", DEFAULT_JVP_MODE)
    memory_gb = kwargs.pop("memory_gb", None)
    plan = kwargs.pop("memory", None)
    check = kwargs.pop("check", None)
    op_kw = {kk: kwargs.pop(kk) for kk in _MODEL_KEYS if kk in kwargs}
    with model.float32_unet():
        if plan is None:
            plan = memory_plan(model, jvp_mode, memory_gb, k=k)
        yield _x0_hat_operator(model, x_t, t, cond, jvp_mode=jvp_mode, jvp_context=model.forward_ad_safe,
                               memory=plan, check=check, **op_kw)


def jacobian_of_x0_hat(model, x_t: torch.Tensor, t: int, cond=None, k: int = 5, *, method: str = "auto",
                       **kwargs) -> JacobianSVD:
    """Top-k singular triplets of ``J_t = d x0_hat / d x_t`` at ``(x_t, t, c)`` (Wang et al. 2024, §4.2).

    Operator options: ``jvp_mode`` (default :data:`DEFAULT_JVP_MODE`), ``memory_gb`` (budget; default
    :func:`default_budget`) or a ready ``memory`` plan, ``check`` (called before every batched call),
    ``batching``, ``chunk_size``, ``math_attention``, ``fd_step``; the rest (``max_passes``, ``tol``,
    ``seed``, ``V0``, ``callback``, ``progress``) go to :func:`jacobian_svd`. The float32 U-Net is held
    for the whole search (:meth:`~lowdim_app.diffusion.DiffusionModel.float32_unet`)."""
    with _x0_hat_session(model, x_t, t, cond, k, kwargs) as op:
        res = jacobian_svd(op, k=k, method=method, **kwargs)
        res.memory = op.memory.describe() if op.memory is not None else None
        return res


def top_singular(model, x_t: torch.Tensor, t: int, k: int = 5, cond=None, **kwargs) -> JacobianSVD:
    """Alias of :func:`jacobian_of_x0_hat` with ``k`` before ``cond``: top-k ``(s_i, u_i, v_i)``
    of ``J_t`` (exact for ``n <= EXACT_MAX_N`` unless ``method=`` says otherwise)."""
    return jacobian_of_x0_hat(model, x_t, t, cond, k=k, **kwargs)


def masked_directions_of_x0_hat(model, x_t: torch.Tensor, t: int, mask: torch.Tensor, cond=None, k: int = 5,
                                **kwargs) -> MaskedDirections:
    """:func:`masked_directions` for ``x0_hat`` of a diffusion model (mask in sample space); operator
    options as in :func:`jacobian_of_x0_hat`."""
    with _x0_hat_session(model, x_t, t, cond, max(k, kwargs.get("null_rank", 5)), kwargs) as op:
        return masked_directions(op, None, mask, k=k, **kwargs)



# ----------------------------------------------------------------------------- solver choice
SOLVERS = ("auto", "exact", "krylov", "power")


def krylov_block(k: int, rule: str = "default") -> int:
    """Block size of :func:`top_k_svd`. ``default``: ``k + 1`` (``1`` for ``k = 1``); ``auto`` (what
    ``jacobian_svd(method="auto")`` uses): ``1`` for ``k <= 3`` (plain Golub-Kahan-Lanczos: the fewest
    passes of every solver bench/jacobian.py measured at k = 1 and 3), else ``ceil(k / 2) + 1`` (fewer
    passes than ``k + 1`` for a few more sequential calls, about a quarter of ARPACK's calls)."""
    if rule == "auto":
        return 1 if k <= 3 else math.ceil(k / 2) + 1
    return k + (0 if k == 1 else 1)


# Passes and sequential calls of the ``auto`` Krylov search to cosine 0.999: the most bench/jacobian.py
# measured over its three digits-gen points (t = 699, 500, 300) at k = 1, 3 (block 1), 5 (block 4) and
# 10 (block 6). Flatter spectra need more (the random-weight tiny SD: 30/30, 62/62, 152/38, 228/38).
_KRYLOV_MEASURED = {1: (10, 10), 3: (22, 22), 5: (48, 12), 10: (96, 16)}


def _measured(k: int) -> tuple[int, int]:
    return _KRYLOV_MEASURED[next(kk for kk in sorted(_KRYLOV_MEASURED) if k <= kk or kk == 10)]


def predicted_krylov_calls(k: int) -> int:
    """Sequential batched calls the ``auto`` Krylov search is predicted to need (``_KRYLOV_MEASURED``):
    10, 22, 12, 16 at k = 1, 3, 5, 10 (k in between: the next measured k; above 10: k = 10's)."""
    return _measured(k)[1]


def predicted_krylov_passes(k: int) -> int:
    """Passes (JVP + VJP directions) of the same measured runs: 10, 22, 48, 96."""
    return _measured(k)[0]


# On a CPU a batched call costs about c0 + c1 b seconds for b directions (a fixed part and a per-direction
# part); bench/jacobian.py fits c0 and c1 to every run it timed and prints c0 / c1, the fixed part in
# passes: 5.6 on the tiny SD (n = 1024), 0.7 on the CIFAR-10 architecture, 11.6 and 20.1 on digits-gen in
# two runs (2 cores). With any of them the rule picks Krylov on the tiny SD, where it was 1.6-4.6x faster
# than the exact path (its own stop rule); on digits-gen (n = 256) the two took 0.4-1.2 s against 1.0 s.
# On a CPU the rule compares passes + CPU_PASSES_PER_CALL x calls; on an accelerator, where a block of
# directions costs about as much as one, it compares calls.
CPU_PASSES_PER_CALL = 5.6


@dataclass(frozen=True)
class SolverChoice:
    """What ``method="auto"`` runs and why: ``method`` (exact | krylov), ``block`` (Krylov block size)."""

    method: str
    block: int | None
    reason: str


def choose_solver(n: int, k: int, max_passes: int | None = None, exact_max_n: int = EXACT_MAX_N,
                  directions_per_call: int = 32, device_type: str = "cuda") -> SolverChoice:
    """The measured rule of ``method="auto"``: the exact path when ``n <= exact_max_n``, its ``n`` VJPs fit
    ``max_passes`` and its cost is at most what the Krylov search is predicted
    to cost (:func:`predicted_krylov_calls`, :func:`predicted_krylov_passes`: the hardest of the measured
    points, so the prediction errs towards the exact path, whose cost is known and bounded); else Krylov with the
    ``auto`` block (:func:`krylov_block`). The cost is ``passes + CPU_PASSES_PER_CALL x calls`` when
    ``device_type`` is ``"cpu"``, else the number of sequential batched calls (``ceil(n /
    directions_per_call)`` for the exact path)."""
    b = min(krylov_block(k, "auto"), n)
    if max_passes is not None and max_passes < 2 * b * math.ceil(k / b):   # the budget only fits block k + 1
        b = min(krylov_block(k), n)
    exact_calls = math.ceil(n / max(1, directions_per_call))
    kry_calls = predicted_krylov_calls(k)
    if device_type == "cpu":
        unit = f"pass-equivalents (passes + {CPU_PASSES_PER_CALL:g} x calls, CPU)"
        exact_cost = n + CPU_PASSES_PER_CALL * exact_calls
        kry_cost = predicted_krylov_passes(k) + CPU_PASSES_PER_CALL * kry_calls
    else:
        unit, exact_cost, kry_cost = "batched calls", exact_calls, kry_calls
    if exact_fits(n, max_passes, exact_max_n) and exact_cost <= kry_cost:
        return SolverChoice("exact", None, f"exact: {exact_cost:g} {unit} for the n = {n} VJPs <= "
                                           f"the ~{kry_cost:g} Krylov is predicted "
                                           f"to need at k = {k}")
    why = (f"n = {n} > {exact_max_n}" if n > exact_max_n else
           f"n = {n} VJPs exceed the budget" if not exact_fits(n, max_passes, exact_max_n) else
           f"exact would take {exact_cost:g} {unit} > ~{kry_cost:g} for Krylov")
    return SolverChoice("krylov", b, f"krylov block {b}: {why}")
