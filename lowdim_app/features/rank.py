"""``rank``: numerical rank of ``J_t = d x0_hat / d x_t`` along one seeded DDIM trajectory.

Wang et al. 2024 (arXiv:2409.02426), Fig. 3a: the rank of the denoiser's Jacobian against the SNR
``1 / sigma_t``; the numerical rank is App. D.1 eq. 46 (energy threshold ``eta``, the paper: 0.99).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from ..methods import jacobian as jac
from ..methods.lowrank import DEFAULT_HUTCHINSON, RANK_SOLVERS, RankPoint, min_passes, rank_along_trajectory
from ..methods.structure import data_span_dim
from .base import Cost, Feature, Progress, Result, csv_text, runtime_or_default
from .common import load, model_setting
from .edit import DEFAULT_TOL, MAX_PASSES, REFERENCE_N, model_n, search_cost
from .settings import Settings, seed_setting, setting

CSV_HEADER = ["t", "sigma_t", "snr", "numerical_rank", "rank_over_n", "rank_is_lower_bound"]
DEFAULT_MAX_PASSES = 300   # network evaluations per point: the exact path for n <= 300, else a few Krylov iterations


@dataclass(frozen=True)
class RankSettings(Settings):
    COMMAND = "rank"
    model: str = model_setting()
    steps: int = setting(50, lo=2, hi=1000, help="DDIM steps of the trajectory from T")
    points: int = setting(12, lo=2, hi=200, help="timesteps at which the rank is measured")
    eta: float = setting(0.99, lo=0.01, hi=1.0, help="energy threshold of the numerical rank (eq. 46; the paper: 0.99)")
    k: int = setting(32, lo=1, hi=1024, help="top-k for large n (the rank is reported as a lower bound if exceeded)")
    seed: int = seed_setting(help="seed of the trajectory's starting noise")
    max_passes: int = setting(DEFAULT_MAX_PASSES, lo=2, hi=MAX_PASSES, label="max passes",
                              help="network evaluations per point (a central-difference JVP is two): the exact "
                                   "Jacobian (n VJPs) when n <= 1024 fits, else the top-k (Krylov) and the Hutchinson "
                                   "probes of ||J||_F^2 share it")
    tol: float = setting(DEFAULT_TOL, lo=1e-6, hi=1.0, label="tolerance",
                         help="Krylov stop rule per point (estimated sine of the top-k subspace's largest angle)")
    jvp: str = setting(jac.DEFAULT_JVP_MODE, choices=jac.JVP_MODES, label="JVP mode",
                       help="central: central difference in float32 (low memory); forward: exact forward-mode AD")
    memory_gb: float | None = setting(None, lo=0.01, hi=4096.0, unit="GB", label="memory budget",
                                      help="memory for batched JVP/VJP calls (auto: 80% of the free CUDA memory, "
                                           "on the CPU half of the available RAM)")
    solver: str = setting("auto", choices=RANK_SOLVERS, label="solver",
                          help="auto: the exact Jacobian (n VJPs, the whole spectrum) when n <= 1024 fits max passes, "
                               "else block Krylov + Hutchinson; exact / krylov force one")

    def check(self) -> None:
        need = min_passes(self.k, DEFAULT_HUTCHINSON, self.jvp)
        if self.solver != "exact" and self.max_passes < need:
            raise UserError(f"max passes must be at least {need} network evaluations for k = {self.k} (the first "
                            f"Krylov iterations + {DEFAULT_HUTCHINSON} Hutchinson probes, {self.jvp} JVPs), got "
                            f"{self.max_passes}")


@dataclass
class RankResult(Result):
    model_id: str = ""
    points: list[RankPoint] = field(default_factory=list)
    data_dim: int | None = None      # dimension of the span of the training images (when the card says)

    def rows(self) -> list[list]:
        return [[p.t, f"{p.sigma:.6g}", f"{p.snr:.6g}", p.rank, f"{p.rank_fraction:.6g}", int(p.rank_is_lower_bound)]
                for p in self.points]

    def to_csv(self) -> str:
        return csv_text(CSV_HEADER, self.rows())

    def numbers(self) -> dict:
        return {"model": self.model_id, "unresolved": self.unresolved_count, "data_dim": self.data_dim,
                "points": [{"t": p.t, "sigma_t": p.sigma, "snr": p.snr, "numerical_rank": p.rank, "n": p.n,
                            "rank_over_n": p.rank_fraction, "rank_is_lower_bound": p.rank_is_lower_bound,
                            "top_singular_values": p.top_singular_values, "method": p.method, "passes": p.passes,
                            "converged": p.converged, "error_estimate": p.error_estimate,
                            "energy_fraction": p.energy_fraction, "hutchinson_probes": p.fro2_probes,
                            "reason": p.reason} for p in self.points]}

    @property
    def unresolved_count(self) -> int:
        return sum(not p.resolved for p in self.points)

    def unresolved_lines(self) -> list[str]:
        """One line per point the budget could not resolve: a lower bound or an unconverged estimate, and why."""
        return [f"t = {p.t}: rank {'>= ' if p.rank_is_lower_bound else '~ '}{p.rank} ({p.reason})"
                for p in self.points if not p.resolved]

    def figure(self):
        from ..plots.editing import rank_snr_figure

        return rank_snr_figure(self.points, title=f"{self.model_id}: rank of J_t along a DDIM trajectory "
                                                  f"(seed {self.settings.seed})", data_dim=self.data_dim)

    def summary(self) -> str:
        fr = [p.rank_fraction for p in self.points]
        text = f"rank/n from {min(fr):.3f} to {max(fr):.3f}"
        bounds = sum(p.rank_is_lower_bound for p in self.points)
        if bounds:
            text += f" ({bounds} of {len(self.points)} points are lower bounds)"
        unresolved = self.unresolved_lines()
        if unresolved:
            text += "\nnot resolved within the budget:\n  " + "\n  ".join(unresolved)
        return text

    def write(self, out: str | Path) -> tuple[Path, Path]:
        """``<out>.png`` and ``<out>.csv``."""
        out = Path(out)
        return self.write_figure(out.with_suffix(".png")), self.write_csv(out.with_suffix(".csv"))


class Rank(Feature):
    name = "rank"
    help = "numerical rank of J_t vs SNR along a sampling trajectory (PNG + CSV)"
    Settings = RankSettings
    outputs = ("json",)

    def cost(self, s: RankSettings, unet_config: dict | None = None) -> Cost:
        """The trajectory (forwards) and, per point, at most what the search plan spends (the exact Jacobian's
        ``n`` VJPs where they fit, else the Krylov search and the Hutchinson JVPs within ``max_passes``), at the
        model's ``n`` (from ``unet_config`` when given, else the known size of ``s.model``, else n = 256)."""
        n = model_n(s.model, unet_config)
        known = n is not None
        n = n if known else REFERENCE_N
        plan = jac.plan_search(n, min(s.k, n if s.solver == "exact" else n - 1), solver=s.solver,
                               max_passes=s.max_passes, tol=s.tol, jvp_mode=s.jvp, spectrum=True, needs_basis=True,
                               extra_jvps=0 if s.solver == "exact" else DEFAULT_HUTCHINSON)
        one = search_cost(plan)
        where = "" if known else f" at the reference n = {REFERENCE_N} (n unknown)"
        return Cost(forward=s.steps + s.points * one.forward, jvp=s.points * one.jvp, vjp=s.points * one.vjp,
                    note=f"the trajectory + per point{where}: {one.note}")

    def run(self, s: RankSettings, *, runtime=None, progress=None, should_stop=None, model=None) -> RankResult:
        prog = Progress.wrap(progress, should_stop)
        model = load(s.model, runtime_or_default(runtime), model)
        prog(0.0, "rank of J_t along the trajectory")
        pts = rank_along_trajectory(model, steps=s.steps, points=s.points, seed=s.seed, eta=s.eta, k=s.k,
                                    progress=prog.bars, on_point=lambda i, total: prog(i / total, f"point {i}/{total}"),
                                    max_passes=s.max_passes, tol=s.tol, jvp_mode=s.jvp, memory_gb=s.memory_gb,
                                    check=prog.check, solver=s.solver)
        return RankResult(settings=s, model_id=model.model_id, points=pts, data_dim=data_span_dim(model))

    def add_output_arguments(self, p) -> None:
        p.add_argument("--out", default="rank", help="output path without suffix: writes OUT.png and OUT.csv")
        super().add_output_arguments(p)

    def write_outputs(self, result: RankResult, args) -> list[str]:
        png, csv = result.write(args.out)
        lines = [f"wrote {png} and {csv}; {result.summary()}"]
        if getattr(args, "json", None):
            lines.append(f"wrote {result.write_json(args.json)}")
        return lines


FEATURE = Rank()
