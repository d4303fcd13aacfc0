"""``molrg-rank``: numerical rank / n of the denoiser Jacobian vs SNR on MoLRG data (Wang et al.
2024, arXiv:2409.02426, Fig. 3b and Fig. 7a, App. D.2; numerical rank eq. 46).

Along EDM Heun trajectories of the closed-form posterior mean (Lemma 1), the rank of the Jacobian
of (i) the closed form, (ii) the low-rank DAE (eq. 9) with bases trained by SGD (Algorithm 1) and
(iii) an MLP denoiser, against Lemma 2's bounds ``min_k d_k <= rank <= sum_k d_k`` (eq. 44). The
MLP predicts the clean sample by default (``mlp_param``): with EDM's skip connection its Jacobian stays
near the identity at high SNR. The curves arrive one model at a time. Mathematics: :func:`lowdim_app.synthetic.gl_score.iter_rank_vs_snr`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import UserError
from ..synthetic.gl_score import DAE_CURVE, PARAMETERIZATIONS, iter_rank_vs_snr, rank_curves
from .base import Cost, Feature, Progress, Result, csv_text
from .gl_score import mlp_training_seconds
from .phase import DAE_SECONDS_PER_SAMPLE_STEP, DAE_STEP_SECONDS
from .settings import Settings, seed_setting, setting

# Reference CPU: the 2-core CI machine (measured with the defaults, n = 48): one Jacobian of the
# closed form along a trajectory 4.4e-4 s, of the width-256 depth-4 MLP 3.6e-3 s; DAE-SGD as in
# features.phase; MLP training as in features.gl_score (bench/rank_budget.py: 6000 steps at width
# 256, batch 128 with everything else took 22 s)
CLOSED_FORM_JACOBIAN_SECONDS = 4.4e-4
MLP_JACOBIAN_SECONDS = 3.6e-3


@dataclass(frozen=True)
class RankSettings(Settings):
    COMMAND = "molrg-rank"
    n: int = setting(48, lo=4, hi=256, help="ambient dimension")
    dims: tuple[int, ...] = setting((6, 6), lo=1, hi=256, max_items=3,
                                    help="subspace dimensions d_k, one per component (1 to 3), e.g. 6,6")
    N: int = setting(1000, lo=2, hi=20_000, help="training samples (DAE and MLP)")
    steps: int = setting(18, lo=2, hi=64, help="EDM Heun steps (noise levels on the SNR axis)")
    trajectories: int = setting(15, lo=1, hi=100, help="sampling trajectories the rank is averaged over")
    eta: float = setting(0.99, lo=0.01, hi=1.0, help="numerical-rank energy threshold (eq. 46)")
    dae_iters: int = setting(300, lo=0, hi=20_000, help="SGD steps for the low-rank DAE (0: skip)")
    mlp_steps: int = setting(6000, lo=0, hi=50_000, help="Adam steps for the MLP denoiser (0: skip)")
    mlp_width: int = setting(256, lo=8, hi=1024, help="MLP width")
    mlp_depth: int = setting(4, lo=1, hi=8, help="MLP hidden layers")
    mlp_batch: int = setting(128, lo=1, hi=4096, help="MLP batch size")
    mlp_lr: float = setting(2e-3, lo=1e-6, hi=1.0, help="MLP learning rate (Adam, cosine decay)")
    mlp_param: str = setting("sample", choices=PARAMETERIZATIONS, label="MLP parameterization",
                             help="sample: the MLP predicts x0 (no skip; inside Lemma 2's band at every SNR, "
                                  "bench/molrg_parameterization.py); edm: EDM preconditioning (its skip keeps the "
                                  "Jacobian near the identity at high SNR)")
    # log sigma ~ N(p_mean, p_std^2): wide enough to cover the sampler's sigma range 0.002..80
    p_mean: float = setting(-1.2, lo=-6.0, hi=2.0, help="MLP training noise: mean of log sigma")
    p_std: float = setting(2.0, lo=0.1, hi=4.0, help="MLP training noise: std of log sigma")
    seed: int = seed_setting()

    def check(self) -> None:
        if sum(self.dims) > self.n:
            raise UserError(f"sum of dims {sum(self.dims)} exceeds n = {self.n}")


@dataclass
class RankResult(Result):
    sigma: list[float] = field(default_factory=list)
    snr: list[float] = field(default_factory=list)
    bounds: list[float] = field(default_factory=list)
    models: dict[str, list[float]] = field(default_factory=dict)

    def numbers(self) -> dict:
        return {"sigma": self.sigma, "snr": self.snr, "bounds": self.bounds, "models": self.models,
                "finished": self.finished}

    def to_csv(self) -> str:
        names = list(self.models)
        rows = [[f"{s:.6g}", f"{r:.6g}"] + [f"{self.models[k][i]:.5f}" for k in names]
                for i, (s, r) in enumerate(zip(self.sigma, self.snr))]
        return csv_text(["sigma", "snr"] + names, rows)

    def figure(self):
        from ..plots.molrg import rank_vs_snr_figure

        s = self.settings
        return rank_vs_snr_figure(self.snr, self.models, self.bounds,
                                  title=f"n={s.n}, d_k={list(s.dims)}")

    def summary(self) -> str:
        lines = ["SNR      " + " ".join(f"{v:7.3g}" for v in self.snr)]
        lines += [f"{name}: " + " ".join(f"{v:.3f}" for v in vals) for name, vals in self.models.items()]
        lines.append(f"Lemma 2 bounds (rank/n): {self.bounds[0]:.3f} .. {self.bounds[1]:.3f}")
        return "\n".join(lines + self.notes)


class MolrgRank(Feature):
    name = "molrg-rank"
    help = "Jacobian rank / n vs SNR with Lemma 2's bounds (Wang et al. 2024, Fig. 3b/7a)"
    Settings = RankSettings
    outputs = ("json", "csv", "png")

    def cost(self, s: RankSettings) -> Cost:
        """Jacobians along the trajectories per model, DAE-SGD steps and MLP Adam steps."""
        K, curves, points = len(s.dims), rank_curves(s), s.trajectories * s.steps
        scale = (s.n / 48) ** 2
        sec = points * CLOSED_FORM_JACOBIAN_SECONDS * scale
        if DAE_CURVE in curves:
            batch = 256 if K > 1 else 128 * max(1, s.N // K)
            sec += s.dae_iters * (DAE_STEP_SECONDS + batch * K * DAE_SECONDS_PER_SAMPLE_STEP)
            sec += points * CLOSED_FORM_JACOBIAN_SECONDS * scale
        if s.mlp_steps > 0:
            sec += mlp_training_seconds(1, s.mlp_steps, s.mlp_batch, s.mlp_width, s.mlp_depth)
            sec += points * MLP_JACOBIAN_SECONDS * scale * (s.mlp_width / 256) ** 2 * s.mlp_depth / 4
        return Cost(cpu_seconds=sec, note="Jacobians along the trajectories, DAE-SGD and MLP Adam steps "
                                          "(2-core CPU, n = 48)")

    def stream(self, s: RankSettings, *, runtime=None, progress=None, should_stop=None):
        """The curves so far after each model (closed form, low-rank DAE, MLP)."""
        prog = Progress.wrap(progress, should_stop)
        curves = rank_curves(s)
        notes = [] if len(set(s.dims)) == 1 or s.dae_iters == 0 else \
            ["low-rank DAE skipped: eq. 9 with one shared d needs equal d_k"]
        prog(0.0, curves[0])
        for i, out in enumerate(iter_rank_vs_snr(s, should_stop=prog.should_stop)):
            done = i + 1 == len(curves)
            prog((i + 1) / len(curves), f"{curves[i]}: done" + ("" if done else f"; next {curves[i + 1]}"))
            yield RankResult(settings=s, finished=done, notes=list(notes), **out)
        prog.check()


FEATURE = MolrgRank()
