"""``phase``: the phase transition of learning MoLRG subspaces (Wang et al. 2024, arXiv:2409.02426,
§4.1, Fig. 4 and Fig. 8, App. E.1).

A ``d`` x ``N`` grid of success rates: in each cell ``trials`` instances of ``K`` orthogonal
``d``-dimensional subspaces in ``R^n`` with ``N`` samples per component are solved by PCA
(Thm. 1, eq. 12), subspace clustering (Thm. 3, eq. 18) or SGD on the low-rank DAE loss
(Algorithm 1), and a trial succeeds when the App. E.1 error in the chosen norm is at most
``threshold``. Theory (Thm. 2 / 4): success once ``N_k >= d``. The mathematics is in
:mod:`lowdim_app.synthetic.phase`; the map fills in one ``N`` column at a time.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError
from ..synthetic.dae import DAEConfig
from ..synthetic.phase import CHUNKS, METHODS, NORMS, PhaseGrid, dae_config, iter_phase
from .base import Cost, Feature, Progress, Result, csv_text
from .settings import Settings, seed_setting, setting

MAX_CELLS = 2000
WEB_MAX_PROBLEMS = 20_000   # cells x trials one web request may run (the CLI has no such cap)

# CPU seconds measured by bench/phase.py (bench/results/phase.csv, n = 48; svd/cluster on one core,
# DAE-SGD on two) for batched runs: per problem (one trial of one cell), per DAE training sample,
# SGD step and component, and per SGD step of one batch; one problem at a time is ~9x slower
SVD_SECONDS = 3.2e-4
CLUSTER_SECONDS_PER_COMPONENT = 5.2e-4
DAE_SECONDS_PER_SAMPLE_STEP = 2.6e-7
DAE_STEP_SECONDS = 7e-4
UNBATCHED_FACTOR = 9.0


@dataclass(frozen=True)
class PhaseSettings(Settings):
    COMMAND = "phase"
    K: int = setting(2, lo=1, hi=3, help="number of subspaces (components)")
    n: int = setting(48, lo=4, hi=256, help="ambient dimension")
    d: tuple[int, ...] = setting(tuple(range(2, 9)), lo=1, hi=64,
                                 help="subspace dimensions, the grid's rows (A:B inclusive or A,B,C)")
    N: tuple[int, ...] = setting(tuple(range(2, 16)), lo=1, hi=200,
                                 help="training samples per component N_k, the grid's columns")
    trials: int = setting(20, lo=1, hi=200, help="instances per cell")
    method: str = setting("cluster", choices=METHODS,
                          help="svd: PCA (Thm. 1, K = 1); cluster: subspace clustering (Thm. 3); "
                               "dae: SGD on the low-rank DAE loss (Algorithm 1)")
    noise: float = setting(0.0, lo=0.0, hi=1.0, help="std of the isotropic noise e (eq. 15)")
    norm: str = setting("spectral", choices=NORMS, help="norm of the App. E.1 projector distance")
    threshold: float = setting(0.5, lo=0.0, hi=2.0, help="a trial succeeds if its error is at most this")
    balanced: bool = setting(True, help="exactly N samples per component (else K N labels drawn i.i.d.)")
    cluster_init: str = setting("spectral", choices=("spectral", "random"), help="K-subspaces initialisation")
    restarts: int = setting(1, lo=1, hi=50, help="K-subspaces restarts (the best objective, eq. 18, is kept)")
    cluster_iters: int = setting(20, lo=1, hi=500, help="K-subspaces iterations")
    dae_variant: str = setting("hardmax", choices=("softmax", "hardmax"),
                               help="DAE for K > 1: eq. 9 (softmax) or eq. 16 (hardmax)")
    dae_preset: str = setting("fast", choices=("fast", "paper"),
                              help="DAE-SGD settings: the lab's fast ones or App. E.1's")
    dae_iters: int | None = setting(None, lo=1, hi=200_000, help="DAE-SGD iterations (auto: the preset's)")
    dae_lr: float | None = setting(None, lo=1e-8, hi=10.0, help="DAE-SGD step size (auto: the preset's)")
    dae_batch: int | None = setting(None, lo=0, hi=8192,
                                    help="DAE-SGD batch (0: 128 N_k as in App. E.1; auto: the preset's)")
    chunk: str = setting("column", choices=CHUNKS,
                         help="batching: an N column, the grid, one cell or one problem at a time "
                              "(solver randomness is seeded per batch)")
    seed: int = seed_setting()

    def check(self) -> None:
        object.__setattr__(self, "d", tuple(sorted(set(self.d))))
        object.__setattr__(self, "N", tuple(sorted(set(self.N))))
        if self.K * max(self.d) > self.n:
            raise UserError(f"K * max(d) = {self.K * max(self.d)} exceeds n = {self.n}")
        if self.cells > MAX_CELLS:
            raise UserError(f"the grid has {self.cells} cells, at most {MAX_CELLS}")
        if self.method == "svd" and self.K != 1:
            raise UserError("method 'svd' (PCA, Thm. 1) is for K = 1; use 'cluster' or 'dae' for K > 1")

    @property
    def cells(self) -> int:
        return len(self.d) * len(self.N)

    @property
    def problems(self) -> int:
        return self.cells * self.trials

    def dae_config(self) -> DAEConfig:
        return dae_config(self)


@dataclass
class PhaseResult(Result):
    grid: PhaseGrid | None = None

    def numbers(self) -> dict:
        g, s = self.grid, self.settings
        out = {"d_values": g.d_values, "N_values": g.N_values, "success_rate": g.success,
               "mean_error": g.mean_error, "cells_done": g.cells_done, "cells_total": g.cells_total,
               "wall_s": round(g.wall_s, 4), "finished": self.finished,
               "layout": "success_rate[i][j] is for d = d_values[i], N = N_values[j] (N per component)"}
        if s.method == "dae":
            out["dae_config"] = dae_config(s).to_dict()
        return out

    def to_csv(self) -> str:
        g = self.grid
        rows = []
        for i, d in enumerate(g.d_values):
            for j, N in enumerate(g.N_values):
                sr, me = g.success[i][j], g.mean_error[i][j]
                rows.append([d, N, "" if sr is None else f"{sr:.4f}", "" if me is None else f"{me:.6f}",
                             self.settings.trials])
        return csv_text(["d", "N", "success_rate", "mean_error", "trials"], rows)

    def table(self) -> str:
        return self.grid.table()

    def figure(self):
        from ..plots.molrg import phase_heatmap

        g, s = self.grid, self.settings
        return phase_heatmap(g.grid(), g.d_values, g.N_values,
                             title=f"{s.method}  K={s.K}  n={s.n}  ({g.cells_done}/{g.cells_total} cells)")

    def summary(self) -> str:
        return f"{self.table()}\nwall {self.grid.wall_s:.2f} s"


class Phase(Feature):
    name = "phase"
    help = "phase transition of learning MoLRG subspaces (Wang et al. 2024, Fig. 4/8)"
    Settings = PhaseSettings
    outputs = ("json", "csv", "png")

    def cost(self, s: PhaseSettings) -> Cost:
        """``cells x trials`` problems times the method's measured cost per problem (n = 48)."""
        if s.method == "svd":
            sec = s.problems * SVD_SECONDS
        elif s.method == "cluster":
            sec = s.problems * CLUSTER_SECONDS_PER_COMPONENT * s.K * s.restarts
        else:
            cfg = dae_config(s)
            batches = {"cell": s.cells, "problem": s.problems}.get(s.chunk, len(s.N))
            sec = sum(len(s.d) * s.trials * cfg.iters * cfg.batch_size(N) * s.K * DAE_SECONDS_PER_SAMPLE_STEP
                      for N in s.N) + batches * cfg.iters * DAE_STEP_SECONDS
        if s.chunk == "problem" and s.method != "dae":
            sec *= UNBATCHED_FACTOR
        return Cost(cpu_seconds=sec, note=f"{s.problems} problems ({s.cells} cells x {s.trials} trials) x the "
                                          f"{s.method} cost per problem measured by bench/phase.py at n = 48")

    def check_web_budget(self, s: PhaseSettings) -> None:
        """The web app's cap on one request (cells x trials); the CLI runs any grid."""
        if s.problems > WEB_MAX_PROBLEMS:
            raise UserError(f"cells x trials = {s.problems} is over {WEB_MAX_PROBLEMS} in the web app; "
                            "use the CLI (python -m lowdim_app phase ...)")

    def stream(self, s: PhaseSettings, *, runtime=None, progress=None, should_stop=None):
        """The growing grid after each batch (one ``N`` column by default); the last is finished."""
        prog = Progress.wrap(progress, should_stop)
        prog(0.0, f"{s.cells} cells x {s.trials} trials ({s.method})")
        for grid in iter_phase(s, should_stop=prog.should_stop):
            prog(grid.cells_done / grid.cells_total, f"{grid.cells_done}/{grid.cells_total} cells")
            yield PhaseResult(settings=s, grid=grid, finished=grid.finished)
        prog.check()


FEATURE = Phase()
