"""Phase transition in learning MoLRG subspaces (Wang et al. 2024, arXiv:2409.02426, §4.1,
Fig. 4 and Fig. 8, App. E.1).

For every cell ``(d, N)`` of a grid and ``trials`` independent instances: draw a MoLRG with
``K`` orthogonal ``d``-dimensional subspaces in ``R^n``, draw ``N`` samples **per component**
(``N_k = N``, so the theory boundary of Thm. 2 / Thm. 4 is the diagonal ``N = d``; with
``balanced=False`` the ``K N`` labels are drawn i.i.d. from ``pi`` instead), recover the
subspaces with one of

* ``svd``     -- PCA (Thm. 1, eq. 12), K = 1 only;
* ``cluster`` -- subspace clustering (Thm. 3, eq. 18) by K-subspaces (see ``subspace.py``);
* ``dae``     -- SGD on the DAE loss with the low-rank parameterisation (Algorithm 1, see
  ``dae.py``),

and count a success when the App. E.1 error (best permutation, in the chosen ``norm``) is at
most ``threshold``.

The settings ``st`` are the phase lab's declared settings
(:class:`lowdim_app.features.phase.PhaseSettings`, or any object with its attributes): ``n``,
``K``, ``d`` and ``N`` (the grid's rows and columns, sorted), ``trials``, ``method``, ``noise``,
``norm``, ``threshold``, ``balanced``, ``cluster_init``, ``restarts``, ``cluster_iters``, the
``dae_*`` options, ``chunk`` and ``seed``.

Data are a function of ``(seed, K, n, d, N)`` only, so a cell gets the same instances however
the grid is batched. Solver randomness (random completion, init, SGD noise) is seeded per
batch. Work is batched: by default one batch per ``N`` column (all ``d`` and trials at once,
padded with masks); :func:`iter_phase` yields a snapshot of the grid after each batch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from .dae import DAEConfig, default_dae_config, train_dae
from .subspace import k_subspaces, pca_subspaces, stiefel_retract, subspace_error

__all__ = ["METHODS", "NORMS", "CHUNKS", "PhaseGrid", "cell_data", "dae_config", "iter_phase"]

METHODS = ("svd", "cluster", "dae")
NORMS = ("spectral", "fro")
CHUNKS = ("column", "grid", "cell", "problem")


def dae_config(st) -> DAEConfig:
    """Algorithm 1's settings for the grid: the preset for ``K`` with the explicit overrides."""
    cfg = default_dae_config(st.K, st.dae_variant, st.dae_preset)
    if st.dae_iters is not None:
        cfg.iters = int(st.dae_iters)
    if st.dae_lr is not None:
        cfg.lr = float(st.dae_lr)
    if st.dae_batch is not None:
        cfg.batch = int(st.dae_batch)
    return cfg


def _seed(*parts) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def cell_data(st, d: int, N: int):
    """The ``trials`` instances of cell ``(d, N)``: ``U_true (T, K, n, d)``, ``X (T, S, n)`` and
    ``labels (T, S)`` with ``S = K N`` samples (float64; eq. 15 with noise ``st.noise``)."""
    g = torch.Generator().manual_seed(_seed(st.seed, st.K, st.n, d, N, 1))
    T, K, n = st.trials, st.K, st.n
    # Haar bases: columns of the sign-fixed QR of a Gaussian n x Kd matrix, split in K blocks
    Q = stiefel_retract(torch.randn(T, n, K * d, generator=g, dtype=torch.float64))
    U = Q.view(T, n, K, d).permute(0, 2, 1, 3).contiguous()
    S = K * N
    if st.balanced or K == 1:
        labels = torch.arange(K).repeat_interleave(N).expand(T, S).clone()
    else:
        labels = torch.randint(0, K, (T, S), generator=g)
    a = torch.randn(T, S, d, generator=g, dtype=torch.float64)
    Ui = U[torch.arange(T).unsqueeze(-1), labels]                     # (T, S, n, d)
    X = torch.einsum("tsnd,tsd->tsn", Ui, a)
    if st.noise > 0:
        X = X + st.noise * torch.randn(T, S, n, generator=g, dtype=torch.float64)
    return U, X, labels


def _solve(st, cells: list[tuple[int, int]], problems: list[tuple[int, int]] | None,
           data: dict, gen: torch.Generator, should_stop=None):
    """Solve a batch: ``cells`` (all trials of each) or explicit ``problems`` [(cell, trial)].
    Returns the per-problem App. E.1 errors ``(B,)`` in order."""
    if problems is None:
        problems = [(c, t) for c in range(len(cells)) for t in range(st.trials)]
    K, n = st.K, st.n
    ds = torch.tensor([cells[c][0] for c, _ in problems])
    Ns = torch.tensor([cells[c][1] for c, _ in problems])
    dmax, Smax = int(ds.max()), K * int(Ns.max())
    B = len(problems)
    X = torch.zeros(B, Smax, n, dtype=torch.float64)
    Ut = torch.zeros(B, K, n, dmax, dtype=torch.float64)
    smask = torch.zeros(B, Smax, dtype=torch.bool)
    for b, (c, t) in enumerate(problems):
        U, Xc, _ = data[cells[c]]
        d, S = U.shape[-1], Xc.shape[1]
        X[b, :S] = Xc[t]
        Ut[b, :, :, :d] = U[t]
        smask[b, :S] = True
    if st.method == "svd":
        Uh = pca_subspaces(X, ds, smask=smask, generator=gen, dmax=dmax).unsqueeze(1)
    elif st.method == "cluster":
        Uh, _, _ = k_subspaces(X, K, ds, smask=smask, iters=st.cluster_iters, init=st.cluster_init,
                               restarts=st.restarts, generator=gen)
    else:
        if len(set(Ns.tolist())) != 1:
            raise ValueError("a DAE batch must share N (the batch size depends on N_k)")
        Uh = train_dae(X, K, ds, dae_config(st), n_valid=smask.sum(-1), U_true=Ut, generator=gen,
                       N_k=int(Ns[0]), should_stop=should_stop)
    err, _ = subspace_error(Uh, Ut, ds, norm=st.norm)
    return err


@dataclass
class PhaseGrid:
    """Success-rate grid (rows: ``d_values``, columns: ``N_values``; ``None`` = not yet run)."""

    d_values: list[int]
    N_values: list[int]
    success: list[list[float | None]]
    mean_error: list[list[float | None]]
    cells_done: int = 0
    wall_s: float = 0.0
    finished: bool = False

    @property
    def cells_total(self) -> int:
        return len(self.d_values) * len(self.N_values)

    def grid(self) -> np.ndarray:
        """``(len(d), len(N))`` float array with NaN for pending cells."""
        return np.array([[np.nan if v is None else v for v in row] for row in self.success], float)

    def snapshot(self) -> "PhaseGrid":
        return PhaseGrid(list(self.d_values), list(self.N_values), [list(r) for r in self.success],
                         [list(r) for r in self.mean_error], self.cells_done, self.wall_s, self.finished)

    def table(self) -> str:
        """Plain-text grid (rows d, columns N)."""
        rows = ["d\\N " + " ".join(f"{N:>5d}" for N in self.N_values)]
        for i, d in enumerate(self.d_values):
            rows.append(f"{d:>3d} " + " ".join("    ." if v is None else f"{v:5.2f}" for v in self.success[i]))
        return "\n".join(rows)


def _batches(st):
    cells = [(d, N) for N in st.N for d in st.d]
    if st.chunk == "column" or (st.chunk == "grid" and st.method == "dae"):
        for N in st.N:
            yield [(d, N) for d in st.d], None
    elif st.chunk == "grid":
        yield cells, None
    elif st.chunk == "cell":
        for c in cells:
            yield [c], None
    else:  # one problem at a time
        for c in cells:
            for t in range(st.trials):
                yield [c], [(0, t)]


def iter_phase(st, should_stop: Callable[[], bool] | None = None) -> Iterator[PhaseGrid]:
    """Run the grid, yielding a :class:`PhaseGrid` snapshot after every batch (the last one has
    ``finished=True``). When ``should_stop()`` turns true the run ends; the batch it interrupted
    (a DAE training stops early) is not recorded."""
    t0 = time.perf_counter()
    di = {d: i for i, d in enumerate(st.d)}
    Nj = {N: j for j, N in enumerate(st.N)}
    res = PhaseGrid(list(st.d), list(st.N), [[None] * len(st.N) for _ in st.d],
                    [[None] * len(st.N) for _ in st.d])
    acc: dict[tuple[int, int], list[float]] = {}
    data: dict = {}
    for cells, problems in _batches(st):
        for c in cells:
            if c not in data:
                data[c] = cell_data(st, *c)
        key = cells[0] if problems is None else (cells[0][0], cells[0][1], problems[0][1])
        gen = torch.Generator().manual_seed(_seed(st.seed, st.K, st.n, *key, len(cells), 2))
        err = _solve(st, cells, problems, data, gen, should_stop)
        if should_stop is not None and should_stop():
            return
        if problems is None:
            err = err.view(len(cells), st.trials)
            for ci, c in enumerate(cells):
                acc[c] = err[ci].tolist()
        else:
            acc.setdefault(cells[0], []).extend(err.tolist())
        for c in cells:
            if len(acc.get(c, [])) == st.trials:
                e = np.array(acc[c])
                i, j = di[c[0]], Nj[c[1]]
                if res.success[i][j] is None:
                    res.cells_done += 1
                res.success[i][j] = float((e <= st.threshold).mean())
                res.mean_error[i][j] = float(e.mean())
                data.pop(c, None)
        res.wall_s = time.perf_counter() - t0
        res.finished = res.cells_done == res.cells_total
        yield res.snapshot()

