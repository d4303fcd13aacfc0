"""Top-k singular triplets of ``J`` by block Golub-Kahan-Lanczos with full reorthogonalisation.

Wang et al. 2024 (arXiv:2409.02426), §4.2 and App. E.4: the right singular vectors ``v_i`` of
``J_t = d x0_hat / d x_t`` are the edit directions. The search keeps an orthonormal right basis ``V`` with
``W = J V`` and an orthonormal left basis ``U`` containing ``span(W)`` with ``Z = J^T U``; each iteration is one
batched JVP and one batched VJP of ``b`` directions (block Krylov: Musco & Musco 2015, arXiv:1504.05477).

The iterate is the one-sided SVD of ``U^T J = Z^T`` after each VJP (Halko, Martinsson & Tropp 2011,
arXiv:0909.4061): right vectors in ``span(Z)``, one Krylov step beyond ``span(V)``, with ``J^T u_i = s_i v_i``
exact. The next JVP measures their residuals ``r_i = J v_i - s_i u_i`` outside ``span(U)`` (inside it they vanish
for exact products; what is left there is the JVP/VJP disagreement of a central difference, reported as
``jvp_error``).

Error estimate (:meth:`BlockGKL.estimate`). With ``E = (I - U U^T) J``,
``J^T J = (U U^T J)^T (U U^T J) + E^T E``: the iterate is exact for the first term, and ``E^T E`` (norm
``||E||^2``, measured on ``span(V)``) moves it. Where first-order perturbation theory holds the top-k right
vectors turn by ``<r_j, r_i> / (s_i^2 - s_j^2)`` towards the other pairs ``j`` (Davis & Kahan 1970) and by
``||(I - P P^T) J^T r_i|| / (s_k^2 - ||E||^2)`` off them (``J^T r_i``: the next VJP). First order is trusted
for a wide block (:func:`wide_block`: each iteration adds half the subspace sought and more), and for a narrower
one once ``s_{k+1}`` has settled and ``||E||^2`` is at most half the gap ``s_k^2 - s_{k+1}^2`` (or Wedin's
bound at most 0.5). Elsewhere the estimate is Wedin's bound ``||R|| / (s_k - s_{k+1})`` (Wedin 1972).

Stop rule. After the VJP that follows the measurement the search has the next iterate. Its space holds the
measured iterate's first-order correction, so where first order holds and puts the measured iterate within
``2 tol`` (at most 0.3) the new iterate is the closer by a wide margin and the angle between the two bounds its
error; elsewhere the estimate is the larger of the measured iterate's and that angle. The search stops when the
estimate is at most ``tol`` and returns the new iterate: one iteration after the first iterate within the
tolerance at the earliest. ``bench/jacobian.py`` (part ``stop``) measures where it stops; ``docs/editing.md``
has the table.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm.auto import tqdm

from ...errors import UserError, check_range
from .memory import max_basis as basis_room
from .operator import TINY, apply, as_operator, unflat
from .result import JacobianSVD

# The perturbation estimate is trusted for a wide block, or where ||E||^2 <= FIRST_ORDER_GAP x (s_k^2 - s_{k+1}^2)
# or Wedin's bound is at most FIRST_ORDER_WEDIN (the residual is well below the gap); and only where
# ||E||^2 <= FIRST_ORDER_SPECTRUM x s_k^2. Calibrated on DDIM-inverted digits; measured by bench/jacobian.py's
# stop part (bench/results/jacobian_stop.csv).
FIRST_ORDER_GAP = 0.5
FIRST_ORDER_WEDIN = 0.5
FIRST_ORDER_SPECTRUM = 0.9
# ... and, for a narrow block, only once s_{k+1} has settled: it moved by at most FIRST_ORDER_SETTLED x (s_k - s_{k+1}) since the
# iterate before (Ritz-type values rise towards the true ones; a (k+1)-th value still rising means the space has
# not yet seen the spectrum behind the gap)
FIRST_ORDER_SETTLED = 0.25
# Where first order holds and puts the previous iterate within this x tol (at most CONTRACTION_CAP), the new
# iterate's space holds that iterate's first-order correction, so the new one is the closer by a wide margin
# and the angle between the two bounds the new one's error.
CONTRACTION_TOL = 2.0
CONTRACTION_CAP = 0.3


def wide_block(k: int, block: int) -> bool:
    """A block of at least ``k / 2 + 1`` directions: each iteration widens the space by half the subspace sought
    and more, and the stop rule trusts its first-order estimate as soon as it is measured (see the module
    docstring)."""
    return 2 * block >= k + 2


def orthonormal_block(Z: torch.Tensor, V: torch.Tensor | None, gen: torch.Generator,
                      rel_tol: float = 1e-9) -> torch.Tensor:
    """Orthonormal basis of ``Z``'s columns projected off ``span(V)`` (two Gram-Schmidt passes); columns that
    vanish (rank deficiency, an exhausted Krylov space) are replaced by random ones."""
    n, b = Z.shape
    scale = float(Z.norm(dim=0).max()) if b else 0.0
    for _ in range(4):
        W = Z
        for _ in range(2):
            if V is not None and V.shape[1]:
                W = W - V @ (V.T @ W)
        Q, R = torch.linalg.qr(W)
        bad = R.diagonal().abs() <= rel_tol * max(scale, TINY)
        if not bool(bad.any()):
            if V is not None and V.shape[1]:
                Q, _ = torch.linalg.qr(Q - V @ (V.T @ Q))
            return Q
        Z = Z.clone()
        Z[:, bad] = torch.randn(n, int(bad.sum()), generator=gen, dtype=torch.float64).to(Z) * max(scale, 1.0)
        scale = float(Z.norm(dim=0).max())
    raise RuntimeError("could not build an orthonormal block (n too small for the requested size?)")


def _norm2(M: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(M, ord=2)) if M.numel() else 0.0


def subspace_sine(A: torch.Tensor, B: torch.Tensor) -> float:
    """Sine of the largest principal angle between the spans of the orthonormal columns of ``A`` and ``B``."""
    cos = float(torch.linalg.svdvals(A.T @ B).min().clamp(max=1.0))
    return math.sqrt(max(0.0, 1.0 - cos * cos))


@dataclass
class Iterate:
    """One-sided pairs of ``U^T J``: all of them (``P`` right vectors, ``s``), the top
    ``k`` as the estimate, and once measured its ``error`` estimate, the rule that gave it, ``jvp_error`` and
    the residual norms ``||J v_i - s_i u_i||``."""

    P: torch.Tensor
    s: torch.Tensor
    U: torch.Tensor
    k: int
    error: float = math.inf
    rule: str = ""
    jvp_error: float = math.nan
    residuals: torch.Tensor | None = None
    R: torch.Tensor | None = None
    before: torch.Tensor | None = None     # the previous iterate's singular values
    E: float = math.nan
    leak: float = 0.0

    @property
    def V(self) -> torch.Tensor:
        return self.P[:, :self.k]

    @property
    def gap(self) -> float:
        return float(self.s[self.k - 1] - self.s[self.k]) if self.s.numel() > self.k else 0.0


class BlockGKL:
    """The state of a block Golub-Kahan-Lanczos search: bases, products and the next block."""

    def __init__(self, op, k: int, block: int, seed: int, V0: torch.Tensor | None, max_basis: int):
        self.op, self.k, self.b, self.n = op, k, block, op.n
        self.max_basis = max_basis
        self.gen = torch.Generator().manual_seed(int(seed))
        dev, wd = op.device, torch.float64
        start = torch.randn(self.n, block, generator=self.gen, dtype=wd).to(dev)
        if V0 is not None:
            v0 = torch.as_tensor(V0).reshape(-1, self.n).to(device=dev, dtype=wd).T[:, :block]
            start[:, :v0.shape[1]] = v0 / v0.norm(dim=0, keepdim=True).clamp(min=TINY)
        self.cold = V0 is None
        self.V_new = orthonormal_block(start, None, self.gen)
        empty = torch.zeros(self.n, 0, dtype=wd, device=dev)
        self.V, self.W, self.U, self.Z = empty, empty, empty, empty
        self.fro2 = None

    @property
    def m(self) -> int:
        return self.V.shape[1]

    def jvp(self) -> None:
        W_new = apply(self.op, "jvp", self.V_new)
        if self.fro2 is None and self.cold:   # Haar-random orthonormal block: E ||J v||^2 = ||J||_F^2 / n
            self.fro2 = float(W_new.pow(2).sum()) * self.n / W_new.shape[1]
        self.V = torch.cat([self.V, self.V_new], 1)
        self.W = torch.cat([self.W, W_new], 1)
        self.W_new = W_new

    def vjp(self) -> None:
        self.U_new = orthonormal_block(self.W_new, self.U, self.gen)
        self.Z_new = apply(self.op, "vjp", self.U_new)
        self.U = torch.cat([self.U, self.U_new], 1)
        self.Z = torch.cat([self.Z, self.Z_new], 1)

    def one_sided(self) -> Iterate | None:
        """The one-sided pairs of ``U^T J = Z^T`` (``J^T u_i = s_i v_i`` exactly), unmeasured."""
        if self.m < self.k:
            return None
        P, s, Qh = torch.linalg.svd(self.Z, full_matrices=False)
        return Iterate(P, s, self.U @ Qh.T[:, :self.k], self.k)

    def exact_pairs(self) -> Iterate:
        """``span(V)`` is everything: the SVD of ``W = J V`` in the basis ``V`` is ``J``'s."""
        Uw, s, Xh = torch.linalg.svd(self.W, full_matrices=False)
        it = Iterate(self.V @ Xh.T, s, Uw[:, :self.k], self.k, error=0.0, rule="exact")
        it.residuals = torch.zeros(self.k, dtype=s.dtype)
        return it

    def certify(self, it: Iterate) -> Iterate:
        """Measure ``it`` once ``span(V)`` holds ``span(Z)`` (after the next JVP): residuals, ``||E||`` and the
        JVP/VJP disagreement; the error estimate follows in :meth:`estimate` after the next VJP."""
        k, s, P, U = self.k, it.s, it.P, self.U
        C = self.V.T @ P
        JP = self.W @ C                        # J p_j for every pair (p_j lies in span(V))
        UJP = U.T @ JP
        it.R = JP - U @ UJP                    # r_j, outside span(U)
        it.jvp_error = _norm2(UJP[:, :k] - (U.T @ it.U) * s[:k]) / max(float(s[0]), TINY)
        it.residuals = it.R[:, :k].norm(dim=0)
        it.E = _norm2(self.W - U @ (U.T @ self.W))
        it.leak = _norm2(P[:, :k] - self.V @ C[:, :k])     # the part outside span(V): rounding and restarts
        return it

    def estimate(self, it: Iterate) -> Iterate:
        """The error estimate of a measured iterate after the VJP that follows (see the module docstring)."""
        k, s, P, R, E = self.k, it.s, it.P, it.R, it.E
        sk2 = float(s[k - 1]) ** 2
        gap2 = sk2 - float(s[k]) ** 2 if s.numel() > k else 0.0
        wedin = (_norm2(R[:, :k]) + it.leak * float(s[0])) / it.gap if it.gap > 0 else math.inf
        settled = (it.before is not None and it.before.numel() > k and s.numel() > k
                   and abs(float(s[k] - it.before[k])) <= FIRST_ORDER_SETTLED * it.gap)
        trusted = gap2 > 0 and (wide_block(k, self.b) or settled and (E * E <= FIRST_ORDER_GAP * gap2
                                                                       or wedin <= FIRST_ORDER_WEDIN))
        if not (trusted and E * E <= FIRST_ORDER_SPECTRUM * sk2):
            it.error, it.rule = wedin, "Wedin"
            return it
        it.error, it.rule = self._perturbation(it), "perturbation"
        return it

    def _perturbation(self, it: Iterate) -> float:
        """The first-order estimate (see the module docstring)."""
        k, s, P, R, E = self.k, it.s, it.P, it.R, it.E
        sk2 = float(s[k - 1]) ** 2
        # J^T J on span(P) is diag(s^2) + R^T R exactly; the part off span(P) couples through
        # C = (I - P P^T) J^T R (the residuals lie in span(U_new), so J^T R = Z_new U_new^T R) across a spectrum
        # below ||E||^2: eliminated, it adds C^T C / (s_k^2 - ||E||^2) at most.
        JtR = self.Z_new @ (self.U_new.T @ R)
        C = JtR - P @ (P.T @ JtR)
        H = torch.diag(s.pow(2)) + R.T @ R + (C.T @ C) / (sk2 - E * E)
        lam, Y = torch.linalg.eigh(0.5 * (H + H.T))
        lam, Y = lam.flip(0), Y.flip(1)
        within = math.sqrt(max(0.0, 1.0 - float(torch.linalg.svdvals(Y[:k, :k]).min().clamp(max=1.0)) ** 2))
        off = (_norm2(C @ Y[:, :k]) + it.leak * float(s[0]) ** 2) / max(float(lam[k - 1]) - E * E, TINY)
        return math.hypot(within, off)

    def ritz_vectors(self) -> torch.Tensor:
        """The top-k Ritz vectors of ``span(V)`` (``J V = U B``), for comparison with the one-sided iterate."""
        _, _, Xh = torch.linalg.svd(self.U.T @ self.W, full_matrices=False)
        return self.V @ Xh.T[:, :self.k]

    def advance(self) -> bool:
        """Set the next block: the part of ``Z`` outside ``span(V)``, after a thick restart to the top Ritz
        pairs of ``span(V)`` when the basis would outgrow ``max_basis``. ``False`` when the space is exhausted."""
        b_next = min(self.b, self.n - self.m)
        if b_next <= 0:
            return False
        if self.m + b_next > self.max_basis:
            Y, _, Xh = torch.linalg.svd(self.U.T @ self.W, full_matrices=False)
            keep = min(self.m, max(self.max_basis - b_next, self.k + 1))
            X = Xh.T[:, :keep]
            self.V, self.W = self.V @ X, self.W @ X
            self.U, self.Z = self.U @ Y[:, :keep], self.Z @ Y[:, :keep]
        R = self.Z - self.V @ (self.V.T @ self.Z)
        R = R - self.V @ (self.V.T @ R)
        P, sz, _ = torch.linalg.svd(R, full_matrices=False)
        self.V_new = orthonormal_block(P[:, :b_next] * sz[:b_next].clamp(min=TINY), self.V, self.gen)
        return True


def top_k_svd(f_or_op, x: torch.Tensor | None = None, k: int = 5, *, block: int | None = None,
              tol: float = 0.141, max_passes: int = 2000, V0: torch.Tensor | None = None, seed: int = 0,
              max_basis: int | None = None, callback: Callable[[dict], None] | None = None,
              progress: bool = False, **op_kwargs) -> JacobianSVD:
    """Top-k singular triplets of ``J`` (see the module docstring).

    ``f_or_op``: a :class:`~.operator.JacobianOperator` or a batched callable (then ``x`` is needed; ``op_kwargs``
    go to the operator). ``block``: directions per batched call (default ``k + 1``; it may be smaller than ``k``).
    ``tol``: stop when the estimated sine of the largest principal angle to the true top-k right singular
    subspace is at most this (0.141: principal cosine >= 0.99). ``max_passes``: budget in network evaluations (a
    central-difference JVP direction costs two). ``V0``: warm start ``(k0, *shape)``. ``callback(info)`` after
    each iteration with ``iteration``, ``passes``, ``calls``, ``V`` (``n x k``: the iterate just formed, the one
    the search would return if stopped now), ``V_ritz`` (the Ritz vectors of the search basis, one half-step
    behind), ``error_estimate`` (of ``V``: see the module docstring), ``rule`` and ``singular_values``.
    """
    op = as_operator(f_or_op, x, **op_kwargs)
    n = op.n
    check_range("k", k, 1, n)
    b = min(k + 1, n) if block is None else int(block)
    check_range("block", b, 1, n)
    check_range("tol", tol, 0.0, 1.0)
    per_iteration = b * (op.jvp_evaluations + 1)
    first = per_iteration * math.ceil(k / b)      # until the basis holds k vectors
    if max_passes < first:
        raise UserError(f"max passes must be at least {first} network evaluations for k = {k} with block {b}")
    search = BlockGKL(op, k, b, seed, V0, basis_room(n, k, b) if max_basis is None else
                      min(max(max_basis, k + 2 * b), n))
    start, t0 = op.counter.snapshot(), time.perf_counter()
    history: list[dict] = []
    current: Iterate | None = None     # the latest iterate (what is returned)
    measured: Iterate | None = None    # the previous iterate, measured by this iteration's JVP
    reason, it, estimate = "budget", 0, math.inf

    def spent() -> int:
        return op.counter.since(start).passes

    bar = tqdm(total=max_passes, desc="Jacobian singular vectors", disable=not progress, leave=False, unit="eval")
    try:
        while True:
            it += 1
            search.jvp()
            measured = search.certify(current) if current is not None and search.m < n else None
            if spent() + b > max_passes:
                break
            search.vjp()
            if measured is not None:
                estimate = search.estimate(measured).error
            if search.m == n:                 # span(V) is everything: exact
                current, estimate, reason = search.exact_pairs(), 0.0, "converged"
                break
            previous, current = current, search.one_sided()
            if current is not None and previous is not None:
                current.before = previous.s
            step = math.nan
            if measured is not None and current is not None:
                step = subspace_sine(measured.V, current.V)
                contracting = (measured.rule == "perturbation"
                               and measured.error <= min(CONTRACTION_TOL * tol, CONTRACTION_CAP))
                estimate = step if contracting else max(measured.error, step)
            used = op.counter.since(start)
            info = {"iteration": it, "passes": used.passes, "calls": used.calls, "basis": search.m, "block": b,
                    "error_estimate": estimate, "rule": measured.rule if measured is not None else "",
                    "jvp_error": measured.jvp_error if measured is not None else math.nan,
                    "measured_error": measured.error if measured is not None else math.nan, "step": step,
                    "singular_values": current.s[:k].tolist() if current is not None else []}
            history.append(info)
            bar.update(used.passes - bar.n)
            if callback is not None and current is not None:
                callback({**info, "V": current.V, "V_ritz": search.ritz_vectors()})
            if estimate <= tol:
                reason = "converged"
                break
            if spent() + per_iteration > max_passes:
                break
            if not search.advance():
                reason = "exhausted"
                break
    finally:
        bar.close()
    if current is None:
        raise RuntimeError("the Krylov space ran out before k vectors")
    used = op.counter.since(start)
    res = JacobianSVD(singular_values=current.s[:k].to(op.dtype).cpu(), U=unflat(current.U, op.shape, op.dtype),
                      V=unflat(current.V, op.shape, op.dtype), method="krylov", iterations=it,
                      converged=reason == "converged", wall_time_s=time.perf_counter() - t0,
                      residuals=(current.residuals if current.residuals is not None
                                 else torch.full((k,), math.nan, dtype=torch.float64)).float().cpu(),
                      error_estimate=estimate, history=history, max_passes=max_passes, tol=tol,
                      stop_reason=reason, fro2_estimate=search.fro2,
                      fro2_probes=b if search.fro2 is not None else 0, basis=search.V.detach().cpu(),
                      basis_energy=float(search.W.pow(2).sum()), jvp_mode=op.jvp_mode,
                      jvp_error=None if measured is None or math.isnan(measured.jvp_error) else measured.jvp_error,
                      block=b, pairs="ritz" if current.rule == "exact" else "one-sided")
    return res.count(used)
