"""``rank``: numerical rank of ``J_t = d x0_hat / d x_t`` along one seeded DDIM trajectory.

Wang et al. 2024 (arXiv:2409.02426), Fig. 3a: the rank of the denoiser's Jacobian against the SNR
``1 / sigma_t``; the numerical rank is App. D.1 eq. 46 (energy threshold ``eta``, the paper: 0.99).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..methods.lowrank import RankPoint, rank_along_trajectory
from .base import Cost, Feature, Progress, Result, csv_text, runtime_or_default
from .common import load, model_setting
from .edit import REFERENCE_N
from .settings import Settings, seed_setting, setting

CSV_HEADER = ["t", "sigma_t", "snr", "numerical_rank", "rank_over_n", "rank_is_lower_bound"]


@dataclass(frozen=True)
class RankSettings(Settings):
    COMMAND = "rank"
    model: str = model_setting()
    steps: int = setting(50, lo=2, hi=1000, help="DDIM steps of the trajectory from T")
    points: int = setting(12, lo=2, hi=200, help="timesteps at which the rank is measured")
    eta: float = setting(0.99, lo=0.01, hi=1.0, help="energy threshold of the numerical rank (eq. 46; the paper: 0.99)")
    k: int = setting(32, lo=1, hi=1024, help="top-k for large n (the rank is reported as a lower bound if exceeded)")
    seed: int = seed_setting(help="seed of the trajectory's starting noise")


@dataclass
class RankResult(Result):
    model_id: str = ""
    points: list[RankPoint] = field(default_factory=list)

    def rows(self) -> list[list]:
        return [[p.t, f"{p.sigma:.6g}", f"{p.snr:.6g}", p.rank, f"{p.rank_fraction:.6g}", int(p.rank_is_lower_bound)]
                for p in self.points]

    def to_csv(self) -> str:
        return csv_text(CSV_HEADER, self.rows())

    def numbers(self) -> dict:
        return {"model": self.model_id,
                "points": [{"t": p.t, "sigma_t": p.sigma, "snr": p.snr, "numerical_rank": p.rank, "n": p.n,
                            "rank_over_n": p.rank_fraction, "rank_is_lower_bound": p.rank_is_lower_bound,
                            "top_singular_values": p.top_singular_values} for p in self.points]}

    def figure(self):
        from ..plots.editing import rank_snr_figure

        return rank_snr_figure(self.points, title=f"{self.model_id}: rank of J_t along a DDIM trajectory "
                                                  f"(seed {self.settings.seed})")

    def summary(self) -> str:
        fr = [p.rank_fraction for p in self.points]
        return f"rank/n from {min(fr):.3f} to {max(fr):.3f}"

    def write(self, out: str | Path) -> tuple[Path, Path]:
        """``<out>.png`` and ``<out>.csv``."""
        out = Path(out)
        return self.write_figure(out.with_suffix(".png")), self.write_csv(out.with_suffix(".csv"))


class Rank(Feature):
    name = "rank"
    help = "numerical rank of J_t vs SNR along a sampling trajectory (PNG + CSV)"
    Settings = RankSettings
    outputs = ("json",)

    def cost(self, s: RankSettings) -> Cost:
        return Cost(forward=s.steps, vjp=s.points * REFERENCE_N,
                    note=f"the trajectory + an exact Jacobian (n VJPs) per point at the reference n = {REFERENCE_N}")

    def run(self, s: RankSettings, *, runtime=None, progress=None, should_stop=None, model=None) -> RankResult:
        prog = Progress.wrap(progress, should_stop)
        model = load(s.model, runtime_or_default(runtime), model)
        prog(0.0, "rank of J_t along the trajectory")
        pts = rank_along_trajectory(model, steps=s.steps, points=s.points, seed=s.seed, eta=s.eta, k=s.k,
                                    progress=prog.bars, on_point=lambda i, total: prog(i / total, f"point {i}/{total}"))
        return RankResult(settings=s, model_id=model.model_id, points=pts)

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
