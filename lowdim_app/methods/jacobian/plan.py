"""The search plan: the one place that decides, for every caller (edit, rank, directions, their cost estimates
and the UI's bounds), which solver runs, its block size, the JVP kind, the pass budget in network evaluations and
the memory plan -- and says why.

The rule is a prediction from measurements (``bench/jacobian.py``, ``bench/results/jacobian.csv``,
``docs/editing.md``): the passes and sequential batched calls each solver and Krylov block needed to reach
principal cosine 0.99 on DDIM-inverted points, priced on the device -- passes plus the fixed cost of a call in
passes on a CPU, calls on an accelerator.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from ...errors import UserError, check_range
from .krylov import wide_block
from .memory import MemoryPlan, memory_plan, solver_workspace_bytes
from .operator import JVP_EVALUATIONS, check_jvp_mode

SOLVERS = ("auto", "exact", "krylov", "power", "arpack")
EXACT_MAX_N = 1024          # the exact path (n VJPs + SVD) is considered up to this n
MAX_K = 64                  # the most singular vectors an edit search returns (the UI's and the CLI's bound)
DEFAULT_JVP_MODE = "central"   # forward passes only: fused attention, the least memory (bench/jacobian_memory.py)
DEFAULT_TOL = 0.141         # estimated sine of the largest principal angle: principal cosine >= 0.99
DEFAULT_MAX_PASSES = 2000   # library default budget (network evaluations); the features set their own
DEFAULT_CHUNK = 32          # directions per batched call when no memory plan limits them
NULL_RANK = 5               # LOCO Edit's null-space rank of a masked search

# Passes (network evaluations with forward-mode JVPs: an iteration of b directions costs 2b) and sequential calls
# to principal cosine 0.99 of the Krylov search per block, and of ARPACK (one direction per call, the cheapest of
# its tolerances): medians over the DDIM-inverted points of bench/jacobian.py (bench/results/jacobian.csv, printed
# by its summary), per measured model size n: 256 the trained digits model, 1024 the tiny text-to-image model
# (random weights: a flat spectrum, the hard case). Keys: n, then k, then the block (0: k + 1).
_KRYLOV_MEASURED = {
    256: {1: {1: (5, 5), 2: (8, 4), 3: (12, 4), 4: (12, 3), 6: (12, 2)},
          3: {1: (13, 13), 2: (18, 9), 3: (21, 7), 0: (24, 6), 6: (24, 4)},
          5: {1: (21, 21), 2: (24, 12), 3: (27, 9), 4: (24, 6), 0: (36, 6)},
          10: {1: (31, 31), 0: (55, 5), 2: (32, 16), 3: (39, 13), 4: (40, 10), 6: (42, 7)}},
    1024: {1: {1: (15, 15), 2: (18, 9), 4: (40, 10)},
           3: {1: (32, 32), 2: (40, 20), 0: (48, 12)},
           5: {1: (49, 49), 2: (54, 27), 4: (76, 19), 0: (78, 13)},
           10: {1: (74, 74), 0: (154, 14), 2: (84, 42), 4: (100, 25)}},
}
_ARPACK_MEASURED = {256: {1: (43, 43), 3: (46, 45), 5: (49, 47), 10: (57, 54)},
                    1024: {1: (43, 43), 3: (46, 45), 5: (72, 70), 10: (96, 93)}}
# On a CPU a batched call costs about c0 + c1 b seconds for b directions; bench/jacobian.py fits c0 / c1, the
# fixed part of a call in passes, per model size n (log-log interpolated, the end slopes past the ends).
_CPU_PASSES_PER_CALL = {256: 8.4, 1024: 2.1, 3072: 0.7}


def _measured_n(n: int) -> int:
    """The measured model size whose tables predict at ``n`` (the nearest on a log scale)."""
    return min(_KRYLOV_MEASURED, key=lambda m: abs(math.log(max(n, 1) / m)))


def _measured_k(table: dict, k: int) -> tuple[int, float]:
    """The measured k a prediction at ``k`` reads (the next measured one, else the largest) and how k scales it."""
    top = max(table)
    kk = next((c for c in sorted(table) if k <= c), top)
    return kk, (k / kk if k > top else 1.0)


def krylov_candidates(k: int, jvp_evaluations: int = 1, n: int = 256) -> dict[int, tuple[float, float]]:
    """Predicted (passes, calls) of the Krylov search per block at ``k`` until it stops: the measured cost to
    cosine 0.99 plus the iteration that certifies it (the stop rule reads an iterate's error from the next JVP and
    VJP). Past the largest measured k, blocks and passes scale with k; a central-difference JVP direction costs
    two passes."""
    table = _KRYLOV_MEASURED[_measured_n(n)]
    kk, scale = _measured_k(table, k)
    out = {}
    for b, (passes, calls) in table[kk].items():
        block = k + 1 if b == 0 else max(1, round(b * scale))
        if block == 1 and k > 1:      # one vector per step cannot hold a cluster of singular values apart
            continue
        out[block] = ((passes * scale + 2 * block) * (jvp_evaluations + 1) / 2, float(calls + 2))
    return out


def arpack_predicted(k: int, jvp_evaluations: int = 1, n: int = 256) -> tuple[float, float]:
    table = _ARPACK_MEASURED[_measured_n(n)]
    kk, scale = _measured_k(table, k)
    passes, calls = table[kk]
    return passes * scale * (jvp_evaluations + 1) / 2, calls * scale


def passes_per_call(n: int, device: str) -> float:
    """The fixed cost of one batched call in passes: on a CPU from :data:`_CPU_PASSES_PER_CALL`; on an
    accelerator, where a block of directions costs about as much as one, ``inf`` (calls decide, passes break
    ties)."""
    if device != "cpu":
        return math.inf
    pts = sorted(_CPU_PASSES_PER_CALL.items())
    i = next((j for j in range(len(pts) - 2) if n <= pts[j + 1][0]), len(pts) - 2)
    (n0, c0), (n1, c1) = pts[i], pts[i + 1]
    w = math.log(max(n, 1) / n0) / math.log(n1 / n0)
    return math.exp((1 - w) * math.log(c0) + w * math.log(c1))


def _price(passes: float, calls: float, c: float) -> float:
    return calls + passes * 1e-9 if math.isinf(c) else passes + c * calls


def search_min_passes(k: int, block: int, jvp_evaluations: int) -> int:
    """The smallest budget of one Krylov search: the iterations until its basis holds ``k`` vectors."""
    return block * (jvp_evaluations + 1) * math.ceil(k / block)


def _smallest_search(k: int, je: int) -> int:
    """The smallest budget in which some candidate block fits at every model size."""
    return max(min(search_min_passes(k, b, je) for b in krylov_candidates(k, je, n)) for n in _KRYLOV_MEASURED)


def krylov_block(k: int, n: int = 256, device: str = "cpu", jvp_evaluations: int = 1,
                 directions_per_call: int = DEFAULT_CHUNK, budget: int | None = None) -> int:
    """The Krylov block of least predicted cost at ``k`` among those whose first iterations fit ``budget``
    (:func:`krylov_candidates`; a block over ``directions_per_call`` takes more calls), preferring the blocks
    predicted to need no more passes than ARPACK and at most a quarter of its calls -- among them first the wide
    blocks (:func:`~.krylov.wide_block`) that reach the tolerance after two iterations or more: the stop rule
    certifies their iterates one iteration later, at most half the passes more -- then those within ARPACK's
    passes."""
    c = passes_per_call(n, device)
    cands = {b: (p, q * math.ceil(b / max(1, directions_per_call)))
             for b, (p, q) in krylov_candidates(k, jvp_evaluations, n).items()
             if b <= n and (budget is None or search_min_passes(k, b, jvp_evaluations) <= budget)}
    if not cands:
        raise UserError(f"no Krylov block fits {budget} network evaluations at k = {k}")
    ap, ac = arpack_predicted(k, jvp_evaluations, n)
    je1 = jvp_evaluations + 1

    def certified_early(b, p):       # a wide block, and the certifying iteration at most half the passes before it
        return wide_block(k, b) and p >= 3 * b * je1

    for keep in (lambda b, p, q: p <= ap and q <= ac / 4 and certified_early(b, p),
                 lambda b, p, q: p <= ap and q <= ac / 4, lambda b, p, q: p <= ap, lambda b, p, q: True):
        kept = {b: v for b, v in cands.items() if keep(b, *v)}
        if kept:
            return min(kept, key=lambda b: _price(*kept[b], c))
    raise AssertionError("unreachable")


def min_passes(k: int, jvp_mode: str = DEFAULT_JVP_MODE, *, masked: bool = False, null_rank: int = NULL_RANK,
               measure: bool = True, extra_jvps: int = 0) -> int:
    """The smallest budget (network evaluations) a request at ``k`` runs under: one Krylov search until its basis
    holds ``k`` vectors (the smallest block's), two for a masked request, plus the measuring and extra JVPs."""
    check_jvp_mode(jvp_mode)
    je = JVP_EVALUATIONS[jvp_mode]
    need = _smallest_search(k, je)
    if masked:
        need = 2 * max(need, _smallest_search(max(null_rank, 1), je)) + (2 * k * je if measure else 0)
    return need + extra_jvps * je


@dataclass(frozen=True)
class SearchPlan:
    """How one request searches the top-k singular triplets of ``J``.

    ``method``: exact | krylov | power | arpack; ``block``: directions per call; ``jvp_mode``: central | forward;
    ``tol``: the stop rule's tolerance; ``max_passes``: the request's budget in network evaluations;
    ``search_passes``: the budget of one search (a masked request runs two, inside and outside the mask);
    ``measure_passes``: the JVP evaluations that measure masked directions; ``extra_passes``: other JVP
    evaluations the caller spends (Hutchinson probes); ``memory``: the memory plan of batched calls; ``reason``."""

    method: str
    k: int
    n: int
    block: int | None
    jvp_mode: str
    tol: float
    max_passes: int
    search_passes: int
    reason: str
    device: str = "cpu"
    masked: bool = False
    null_rank: int = 0
    measure_passes: int = 0
    extra_passes: int = 0
    directions_per_call: int = DEFAULT_CHUNK
    memory: MemoryPlan | None = None

    @property
    def jvp_evaluations(self) -> int:
        return JVP_EVALUATIONS[self.jvp_mode]

    def outside(self) -> "SearchPlan":
        """The plan of a masked request's second search: the top ``null_rank`` right vectors outside the mask."""
        k = max(self.null_rank, 1)
        if self.method != "krylov":
            return replace(self, k=k)
        return replace(self, k=k, block=krylov_block(k, self.n, self.device, self.jvp_evaluations,
                                                     self.directions_per_call, self.search_passes))

    def evaluations(self) -> dict:
        """At most how many network evaluations the request spends: ``jvp_directions``, ``jvp_evaluations`` (two
        per central-difference direction) and ``vjp``."""
        je = self.jvp_evaluations
        if self.method == "exact":
            jvp_eval, vjp = 0, self.n
        else:
            searches = 2 if self.masked else 1
            jvp_eval = self.search_passes * je // (je + 1)
            jvp_eval, vjp = searches * jvp_eval, searches * (self.search_passes - jvp_eval)
        jvp_eval += self.measure_passes + self.extra_passes
        return {"jvp_directions": jvp_eval // je, "jvp_evaluations": jvp_eval, "vjp": vjp}

    def describe(self) -> dict:
        return {"method": self.method, "k": self.k, "block": self.block, "jvp_mode": self.jvp_mode, "tol": self.tol,
                "max_passes": self.max_passes, "search_passes": self.search_passes, "reason": self.reason,
                "memory": self.memory.describe() if self.memory is not None else None}


def plan_search(n: int, k: int, *, solver: str = "auto", max_passes: int | None = None, tol: float | None = None,
                jvp_mode: str | None = None, block: int | None = None, masked: bool = False,
                null_rank: int = NULL_RANK, measure: bool = True, spectrum: bool = False, extra_jvps: int = 0,
                needs_basis: bool = False, device: str = "cpu", directions_per_call: int = DEFAULT_CHUNK,
                memory: MemoryPlan | None = None) -> SearchPlan:
    """The :class:`SearchPlan` of a top-k search on an ``n``-dimensional operator.

    ``solver``: ``auto`` or one of :data:`SOLVERS` (run as given, within the budget). ``auto``: with ``spectrum``
    (the caller shows the spectrum and the numerical rank) the exact path wherever its ``n`` VJPs fit the budget;
    otherwise the solver and Krylov block of least predicted cost on ``device`` -- passes + the fixed cost of a
    call in passes x calls on a CPU (:func:`passes_per_call`), calls on an accelerator -- from the measured passes
    and calls (:func:`krylov_candidates`, :func:`arpack_predicted`; the exact path: ``n`` passes in
    ``ceil(n / directions_per_call)`` calls). ``masked``: LOCO Edit's local search (two searches and ``2k``
    measuring JVPs when ``measure``); ``extra_jvps``: JVP directions the caller spends besides (Hutchinson
    probes); ``needs_basis``: the caller reuses the Krylov basis (the rank's deflated Hutchinson estimate), so
    only exact or Krylov run."""
    if solver not in SOLVERS:
        raise UserError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    if needs_basis and solver not in ("auto", "exact", "krylov"):
        raise UserError(f"solver must be auto, exact or krylov here, got {solver!r}")
    check_range("k", k, 1, n)
    jvp_mode = DEFAULT_JVP_MODE if jvp_mode is None else jvp_mode
    check_jvp_mode(jvp_mode)
    je = JVP_EVALUATIONS[jvp_mode]
    tol = DEFAULT_TOL if tol is None else float(tol)
    check_range("tol", tol, 0.0, 1.0)
    budget = DEFAULT_MAX_PASSES if max_passes is None else int(max_passes)
    measure_passes = 2 * k * je if masked and measure else 0
    extra = extra_jvps * je
    left = budget - measure_passes - extra
    search = left // 2 if masked else left
    exact_fits = n <= left and (n <= EXACT_MAX_N or solver == "exact")
    jvp_note = f"{jvp_mode} JVPs ({je} network evaluation{'s' if je > 1 else ''} per direction)"
    common = dict(k=k, n=n, jvp_mode=jvp_mode, tol=tol, max_passes=budget, device=device, masked=masked,
                  null_rank=null_rank, measure_passes=measure_passes, extra_passes=extra,
                  directions_per_call=directions_per_call, memory=memory)

    if solver == "exact" or (solver == "auto" and spectrum and exact_fits):
        if not exact_fits:
            raise UserError(f"the exact path needs n = {n} VJPs; raise max passes to {n + measure_passes + extra} "
                            "or use the Krylov solver")
        why = ("exact (given)" if solver == "exact" else
               f"exact: its n = {n} VJPs fit the budget of {budget} and give the whole spectrum and the numerical rank")
        return SearchPlan(method="exact", block=None, search_passes=left, reason=why, **common)
    need = min_passes(k, jvp_mode, masked=masked, null_rank=null_rank, measure=measure, extra_jvps=extra_jvps)
    if budget < need:
        raise UserError(f"max passes must be at least {need} network evaluations for k = {k}"
                        + (" with a mask" if masked else "") + f" ({jvp_note}), got {budget}")
    c = passes_per_call(n, device)
    b = int(block) if block is not None else krylov_block(k, n, device, je, directions_per_call, search)
    check_range("block", b, 1, n)
    if solver != "auto":
        return SearchPlan(method=solver, block={"krylov": b, "arpack": 1, "power": k}[solver], search_passes=search,
                          reason=f"{solver} (given){f' block {b}' if solver == 'krylov' else ''}, {jvp_note}",
                          **common)
    kp, kc = krylov_candidates(k, je, n).get(b, (math.nan, math.nan))
    costs = {"krylov": (kp, kc * math.ceil(b / max(1, directions_per_call)))}
    if exact_fits:
        costs["exact"] = (float(n), float(math.ceil(n / max(1, directions_per_call))))
    if not (masked or needs_basis) and k < n - 1 and 2 * arpack_predicted(k, je, n)[0] <= search:
        costs["arpack"] = arpack_predicted(k, je, n)      # ARPACK cannot stop early: only with room to spare
    method = min(costs, key=lambda m: _price(*costs[m], c) if not math.isnan(costs[m][0]) else math.inf)
    unit = "calls (accelerator)" if math.isinf(c) else f"passes + {c:.3g} x calls (CPU)"
    why = ", ".join(f"{m}{f' block {b}' if m == 'krylov' else ''} {p:.0f} passes / {q:.0f} calls"
                    for m, (p, q) in sorted(costs.items(), key=lambda i: _price(*i[1], c)))
    if n > EXACT_MAX_N:
        why += f"; exact not considered (n = {n} > {EXACT_MAX_N})"
    elif not exact_fits:
        why += f"; exact needs n = {n} VJPs, over the budget"
    return SearchPlan(method=method, block={"krylov": b, "arpack": 1, "exact": None}[method],
                      search_passes=left if method == "exact" else search,
                      reason=f"{method}{f' block {b}' if method == 'krylov' else ''}: least predicted cost in {unit} to "
                             f"its stop at cosine 0.99 ({why}); {jvp_note}", **common)


def plan_for_model(model, k: int, *, memory_gb: float | None = None, **kwargs) -> SearchPlan:
    """:func:`plan_search` for a diffusion model: ``n``, its device, and the memory plan of its batched calls from
    its activation profile within ``memory_gb`` (default: a share of the free memory)."""
    jvp_mode = kwargs.get("jvp_mode") or DEFAULT_JVP_MODE
    check_jvp_mode(jvp_mode)
    n = model.n
    profile = model.activation_profile() if hasattr(model, "activation_profile") else None
    widest = max(krylov_candidates(max(k, kwargs.get("null_rank", NULL_RANK)), JVP_EVALUATIONS[jvp_mode], model.n))
    mem = memory_plan(profile, model.device, jvp_mode, memory_gb,
                      solver_workspace_bytes(n, max(k, kwargs.get("null_rank", NULL_RANK)), min(widest, n)))
    per_call = min(DEFAULT_CHUNK, mem.directions("vjp")) if mem is not None else DEFAULT_CHUNK
    return plan_search(n, k, device=model.device.type, directions_per_call=per_call, memory=mem, **kwargs)
