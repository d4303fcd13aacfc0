"""Phase transition in learning MoLRG subspaces (seed 000 §4.1, Fig. 4 and Fig. 8, App. E.1).

For every cell ``(d, N)`` of a grid and ``trials`` independent instances: draw a MoLRG with
``K`` orthogonal ``d``-dimensional subspaces in ``R^n``, draw ``N`` samples **per component**
(``N_k = N``, so the theory boundary of Thm. 2 / Thm. 4 is the diagonal ``N = d``; with
``balanced=False`` the ``K N`` labels are drawn i.i.d. from ``pi`` instead), recover the
subspaces with one of

* ``svd``     -- PCA (Thm. 1, eq. 12), K = 1 only;
* ``cluster`` -- subspace clustering (Thm. 3, eq. 18) by K-subspaces (see ``subspace.py``);
* ``dae``     -- SGD on the DAE loss with the low-rank parameterisation (Algorithm 1, see
  ``dae.py``),

and count a success when the App. E.1 error (best permutation) is at most ``threshold``.

Data are a function of ``(seed, K, n, d, N)`` only, so a cell gets the same instances however
the grid is batched. Solver randomness (random completion, init, SGD noise) is seeded per
batch. Work is batched: by default one batch per ``N`` column (all ``d`` and trials at once,
padded with masks); :func:`iter_phase` yields a partial result after each batch.
"""
from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from ..errors import UserError, check_range
from .dae import DAEConfig, default_dae_config, train_dae
from .subspace import k_subspaces, pca_subspaces, stiefel_retract, subspace_error

METHODS = ("svd", "cluster", "dae")
CHUNKS = ("column", "grid", "cell", "problem")
LIMITS = dict(n=(4, 256), K=(1, 3), d=(1, 64), N=(1, 200), trials=(1, 200), noise=(0.0, 1.0),
              threshold=(0.0, 2.0), cells=(1, 2000), seed=(0, 2**31 - 1))


@dataclass
class PhaseSettings:
    n: int = 48
    K: int = 2
    d_values: list[int] = field(default_factory=lambda: list(range(2, 9)))
    N_values: list[int] = field(default_factory=lambda: list(range(2, 16)))
    trials: int = 20
    method: str = "cluster"
    noise: float = 0.0
    seed: int = 0
    norm: str = "spectral"
    threshold: float = 0.5
    balanced: bool = True
    cluster_init: str = "spectral"
    cluster_restarts: int = 1
    cluster_iters: int = 20
    dae_variant: str = "hardmax"
    dae_preset: str = "fast"
    dae_iters: int | None = None
    dae_lr: float | None = None
    dae_batch: int | None = None
    chunk: str = "column"

    def validate(self) -> "PhaseSettings":
        """Check every parameter (raises :class:`UserError` with one line)."""
        for name in ("n", "K", "trials", "seed"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
                raise UserError(f"{name} must be an integer, got {v!r}")
            check_range(name, int(v), *LIMITS[name])
        check_range("noise", float(self.noise), *LIMITS["noise"])
        check_range("threshold", float(self.threshold), *LIMITS["threshold"])
        if not self.d_values or not self.N_values:
            raise UserError("d and N ranges must not be empty")
        for d in self.d_values:
            check_range("d", int(d), *LIMITS["d"])
        for N in self.N_values:
            check_range("N", int(N), *LIMITS["N"])
        if self.K * max(self.d_values) > self.n:
            raise UserError(f"K * max(d) = {self.K * max(self.d_values)} exceeds n = {self.n}")
        check_range("number of cells", len(self.d_values) * len(self.N_values), *LIMITS["cells"])
        if self.method not in METHODS:
            raise UserError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.method == "svd" and self.K != 1:
            raise UserError("method 'svd' (PCA, Thm. 1) is for K = 1; use 'cluster' or 'dae' for K > 1")
        if self.norm not in ("spectral", "fro"):
            raise UserError(f"norm must be spectral or fro, got {self.norm!r}")
        if self.cluster_init not in ("spectral", "random"):
            raise UserError(f"cluster init must be spectral or random, got {self.cluster_init!r}")
        check_range("cluster restarts", int(self.cluster_restarts), 1, 50)
        check_range("cluster iterations", int(self.cluster_iters), 1, 500)
        if self.dae_variant not in ("softmax", "hardmax"):
            raise UserError(f"DAE variant must be softmax or hardmax, got {self.dae_variant!r}")
        if self.dae_preset not in ("fast", "paper"):
            raise UserError(f"DAE preset must be fast or paper, got {self.dae_preset!r}")
        if self.dae_iters is not None:
            check_range("DAE iterations", int(self.dae_iters), 1, 200_000)
        if self.dae_lr is not None:
            check_range("DAE learning rate", float(self.dae_lr), 1e-8, 10.0)
        if self.dae_batch is not None:
            check_range("DAE batch", int(self.dae_batch), 0, 8192)
        if self.chunk not in CHUNKS:
            raise UserError(f"chunk must be one of {', '.join(CHUNKS)}")
        self.d_values = sorted({int(d) for d in self.d_values})
        self.N_values = sorted({int(N) for N in self.N_values})
        return self

    def dae_config(self) -> DAEConfig:
        cfg = default_dae_config(self.K, self.dae_variant, self.dae_preset)
        if self.dae_iters is not None:
            cfg.iters = int(self.dae_iters)
        if self.dae_lr is not None:
            cfg.lr = float(self.dae_lr)
        if self.dae_batch is not None:
            cfg.batch = int(self.dae_batch)
        return cfg

    def to_dict(self) -> dict:
        out = asdict(self)
        if self.method == "dae":
            out["dae_config"] = self.dae_config().to_dict()
        return out


def _seed(*parts) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def cell_data(st: PhaseSettings, d: int, N: int):
    """The ``trials`` instances of cell ``(d, N)``: ``U_true (T, K, n, d)``, ``X (T, S, n)`` and
    ``labels (T, S)`` with ``S = K N`` samples (float64)."""
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


def _solve(st: PhaseSettings, cells: list[tuple[int, int]], problems: list[tuple[int, int]] | None,
           data: dict, gen: torch.Generator, should_stop=None):
    """Solve a batch: ``cells`` (all trials of each) or explicit ``problems`` [(cell, trial)].
    Returns the per-problem errors ``(B,)`` in order."""
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
                               restarts=st.cluster_restarts, generator=gen)
    else:
        if len(set(Ns.tolist())) != 1:
            raise ValueError("a DAE batch must share N (the batch size depends on N_k)")
        cfg = st.dae_config()
        Uh = train_dae(X, K, ds, cfg, n_valid=smask.sum(-1), U_true=Ut, generator=gen,
                       N_k=int(Ns[0]), should_stop=should_stop)
    err, _ = subspace_error(Uh, Ut, ds, norm=st.norm)
    return err


@dataclass
class PhaseResult:
    """Success-rate grid (rows: ``d_values``, columns: ``N_values``; ``None`` = not yet run)."""
    settings: dict
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

    def to_dict(self) -> dict:
        return {"settings": self.settings, "d_values": self.d_values, "N_values": self.N_values,
                "success_rate": self.success, "mean_error": self.mean_error,
                "cells_done": self.cells_done, "cells_total": self.cells_total,
                "wall_s": round(self.wall_s, 4), "finished": self.finished,
                "layout": "success_rate[i][j] is for d = d_values[i], N = N_values[j] (N per component)"}

    def to_json(self, path=None) -> str:
        s = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            with open(path, "w") as f:
                f.write(s)
        return s

    @classmethod
    def from_dict(cls, obj: dict) -> "PhaseResult":
        return cls(settings=obj["settings"], d_values=obj["d_values"], N_values=obj["N_values"],
                   success=obj["success_rate"], mean_error=obj["mean_error"],
                   cells_done=obj.get("cells_done", 0), wall_s=obj.get("wall_s", 0.0),
                   finished=obj.get("finished", False))

    def to_csv(self, path=None) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["d", "N", "success_rate", "mean_error", "trials"])
        for i, d in enumerate(self.d_values):
            for j, N in enumerate(self.N_values):
                sr, me = self.success[i][j], self.mean_error[i][j]
                w.writerow([d, N, "" if sr is None else f"{sr:.4f}", "" if me is None else f"{me:.6f}",
                            self.settings.get("trials")])
        s = buf.getvalue()
        if path is not None:
            with open(path, "w", newline="") as f:
                f.write(s)
        return s

    def table(self) -> str:
        """Plain-text grid (rows d, columns N)."""
        head = "d\\N " + " ".join(f"{N:>5d}" for N in self.N_values)
        rows = [head]
        for i, d in enumerate(self.d_values):
            rows.append(f"{d:>3d} " + " ".join("    ." if v is None else f"{v:5.2f}"
                                                for v in self.success[i]))
        return "\n".join(rows)


def _batches(st: PhaseSettings):
    cells = [(d, N) for N in st.N_values for d in st.d_values]
    if st.chunk == "column" or (st.chunk == "grid" and st.method == "dae"):
        for N in st.N_values:
            yield [(d, N) for d in st.d_values], None
    elif st.chunk == "grid":
        yield cells, None
    elif st.chunk == "cell":
        for c in cells:
            yield [c], None
    else:  # one problem at a time
        for c in cells:
            for t in range(st.trials):
                yield [c], [(0, t)]


def iter_phase(st: PhaseSettings, should_stop: Callable[[], bool] | None = None) -> Iterator[PhaseResult]:
    """Run the grid, yielding the partial :class:`PhaseResult` after every batch (the last one
    has ``finished=True``). Stops early (unfinished result) when ``should_stop()`` is true."""
    st.validate()
    t0 = time.perf_counter()
    di = {d: i for i, d in enumerate(st.d_values)}
    Nj = {N: j for j, N in enumerate(st.N_values)}
    succ = [[None] * len(st.N_values) for _ in st.d_values]
    merr = [[None] * len(st.N_values) for _ in st.d_values]
    acc: dict[tuple[int, int], list[float]] = {}
    res = PhaseResult(st.to_dict(), list(st.d_values), list(st.N_values), succ, merr)
    data: dict = {}
    for bno, (cells, problems) in enumerate(_batches(st)):
        for c in cells:
            if c not in data:
                data[c] = cell_data(st, *c)
        key = cells[0] if problems is None else (cells[0][0], cells[0][1], problems[0][1])
        gen = torch.Generator().manual_seed(_seed(st.seed, st.K, st.n, *key, len(cells), 2))
        err = _solve(st, cells, problems, data, gen, should_stop)
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
                if succ[i][j] is None:
                    res.cells_done += 1
                succ[i][j] = float((e <= st.threshold).mean())
                merr[i][j] = float(e.mean())
                data.pop(c, None)
        res.wall_s = time.perf_counter() - t0
        res.finished = res.cells_done == res.cells_total
        yield res
        if should_stop is not None and should_stop():
            return


def run_phase(st: PhaseSettings, should_stop=None, progress: Callable[[PhaseResult], None] | None = None) -> PhaseResult:
    """Run the whole grid and return the final :class:`PhaseResult`."""
    res = None
    for res in iter_phase(st, should_stop):
        if progress is not None:
            progress(res)
    return res
