"""``mog-ddpm``: gradient descent on the DDPM objective for a Gaussian mixture (Shah et al. 2023,
arXiv:2307.01178).

K = 2 (``1/2 N(mu*, I) + 1/2 N(-mu*, I)``, eq. 1, the tanh student of Lemma 4): at large noise GD on
eq. 5 is power iteration (Lemma 8 / C.3, the angle contracts by Lemma 9 / C.5); at small noise it is
gradient EM (Lemma C.7/C.8); the two-stage schedule warm-starts the small-noise run from the
large-noise estimate. K > 2: the soft-max student, two-stage empirical GD against EM on samples.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..errors import UserError
from .base import Cost, Feature, Progress, StagedResult, dumps
from .settings import Settings, seed_setting, setting


@dataclass(frozen=True)
class MogDdpmSettings(Settings):
    """Every parameter of the lab (defaults run in a few seconds)."""

    COMMAND = "mog-ddpm"
    d: int = setting(8, lo=1, hi=256, help="dimension")
    mu_norm: float = setting(4.0, lo=0.1, hi=20.0, help="||mu*||, the norm of the true means", label="||mu*||")
    t_large: float = setting(2.5, lo=0.01, hi=10.0, help="large noise time t (||mu_t*|| = e^-t ||mu*||)",
                             label="large-noise t")
    t_small: float = setting(0.05, lo=0.001, hi=10.0, help="small noise time t (below t_large)", label="small-noise t")
    eta_large: float = setting(1.0, lo=1e-4, hi=10.0, help="GD step size at large noise", label="eta (large)")
    eta_small: float = setting(0.5, lo=1e-4, hi=2.0, help="GD step size at small noise", label="eta (small)")
    iters_large: int = setting(40, lo=1, hi=2000, help="GD iterations at large noise", label="iterations (large)")
    iters_small: int = setting(30, lo=1, hi=2000, help="GD iterations at small noise", label="iterations (small)")
    init_norm: float = setting(0.5, lo=0.01, hi=10.0, help="||mu_t|| at the large-noise start, relative to ||mu_t*||")
    n_batch: int = setting(8192, lo=16, hi=200_000, help="fresh samples per empirical GD step",
                           label="samples per step")
    K: int = setting(2, lo=2, hi=10, help="mixture components (K > 2: soft-max student, empirical GD and EM only)")
    seed: int = seed_setting()

    def check(self) -> None:
        if self.t_small >= self.t_large:
            raise UserError(f"small-noise t ({self.t_small:g}) must be smaller than large-noise t ({self.t_large:g})")


@dataclass
class MogDdpmResult(StagedResult):
    curves: dict = field(default_factory=dict)     # stage -> line -> {"angle": [...], "dist": [...]}

    def figure(self):
        from ..plots.theory import mog_ddpm_figure

        return mog_ddpm_figure(self)

    def summary_lines(self) -> list[str]:
        n, out = self.values, []
        if "large_noise" in n:
            L = n["large_noise"]
            out.append(f"large noise: angle {L['angle_start_deg']:.1f} -> {L['angle_end_deg']['gd_population']:.2f} deg "
                       f"(empirical GD {L['angle_end_deg']['gd_empirical']:.2f}); |grad-F|/|F| first step "
                       f"{L['grad_vs_power_rel_err_first']:.3f} (cubic 2: {L['grad_vs_power_cubic2_rel_err_first']:.3f}); "
                       f"Lemma 8 bound holds: {L['lemma8_bound_holds_all_steps']}")
        if "small_noise" in n:
            out.append("small noise: final distance " + ", ".join(
                f"{k} {v:.2e}" for k, v in n["small_noise"]["dist_end"].items()))
        if "K_components" in n:
            out.append(dumps(n["K_components"], indent=None))
        return out


# one GD step: overhead + samples x d (draws and the autograd gradient); one 96^2-node quadrature.
# Fitted on one core of a 2-core CPU (about +-50%).
_ITER_S, _SAMPLE_S, _QUAD_S = 2e-4, 8e-8, 2e-3


class MogDdpm(Feature):
    name = "mog-ddpm"
    help = "DDPM objective on a Gaussian mixture: power iteration / EM (Shah et al. 2023)"
    Settings = MogDdpmSettings
    outputs = ("json", "png")
    echo_command = True

    def cost(self, s: MogDdpmSettings) -> Cost:
        step = _ITER_S + _SAMPLE_S * s.n_batch * s.d * (1 if s.K == 2 else 1 + s.K / 4)
        if s.K == 2:   # large: 1 quadrature per step; small and two-stage: 4 (GD, EM of GD, gradient EM, EM)
            seconds = s.iters_large * (step + _QUAD_S) + 2 * s.iters_small * (step + 4 * _QUAD_S)
        else:          # two-stage GD, then as many EM steps on fresh samples
            seconds = 2 * (s.iters_large + s.iters_small) * step
        return Cost(cpu_seconds=seconds, note="GD steps x (samples x d + 96^2-node quadratures), one CPU core")

    def stream(self, s: MogDdpmSettings, *, runtime=None, progress=None, should_stop=None):
        import torch

        from ..synthetic import mog_ddpm as md

        prog = Progress.wrap(progress, should_stop)
        t0 = time.perf_counter()
        if s.K == 2:
            stages = ["large noise: GD vs power iteration", "small noise: GD vs gradient EM",
                      "two-stage: small-noise GD from the large-noise estimate"]
            iters = [s.iters_large, s.iters_small, s.iters_small]
        else:
            stages = [f"large noise: soft-max GD, K = {s.K}", "small noise: soft-max GD, then EM on samples"]
            iters = [s.iters_large, s.iters_small + s.iters_large + s.iters_small]
        res = MogDdpmResult(settings=s, finished=False, stages=stages)

        def step(k: int):
            def report(it: int) -> None:
                prog((k + it / iters[k]) / len(stages), f"stage {k + 1}/{len(stages)}: {stages[k]}")
            return report

        def done(k: int):
            res.completed, res.wall_s = k + 1, time.perf_counter() - t0
            return res

        g = torch.Generator().manual_seed(s.seed)
        means = md.true_means(s.K, s.d, s.mu_norm, g)
        res.values["mu_star"] = means[0].tolist()
        aL, _ = md.ou_coeffs(s.t_large)
        aS, _ = md.ou_coeffs(s.t_small)
        small = dict(t=s.t_small, eta=s.eta_small, iters=s.iters_small, n_batch=s.n_batch, g=g)
        if s.K == 2:
            mu_star = means[0]
            nums, res.curves["large"], pop = md.large_noise_run(
                means, t=s.t_large, eta=s.eta_large, iters=s.iters_large, init_norm=s.init_norm,
                n_batch=s.n_batch, g=g, step=step(0))
            res.values["large_noise"] = nums
            yield done(0)
            s_S = aS * mu_star
            start = md.random_start(s.d, float(s_S.norm()) * 0.5, g)
            nums, res.curves["small"] = md.small_noise_run(means, start, step=step(1), **small)
            res.values["small_noise"] = {"t": s.t_small, "norm_mu_t_star": float(s_S.norm()), "eta": s.eta_small, **nums}
            yield done(1)
            warm = pop / aL * aS        # the large-noise estimate, mapped to time 0 and then to t_small
            nums, res.curves["two_stage"] = md.small_noise_run(means, warm, step=step(2), **small)
            res.values["two_stage"] = {"warm_start_angle_deg": md.angle_deg(warm, s_S), **nums,
                                       "final_dist_time0": nums["dist_end"]["gd_population"] / aS}
            res.values["em_fixed_points_residual"] = md.em_fixed_point_residuals(mu_star)
        else:
            est, gd = md.k_large_noise_run(means, t=s.t_large, eta=s.eta_large, iters=s.iters_large,
                                           init_norm=s.init_norm, mu_norm=s.mu_norm, n_batch=s.n_batch, g=g,
                                           step=step(0))
            res.curves["K"] = {"gd_two_stage": {"dist": gd}, "em_samples": {"dist": []}}
            res.values["K_components"] = {"dist_after_large": gd[-1], "K": s.K}
            yield done(0)
            gd_small, em = md.k_small_noise_run(means, est / aL * aS, em_iters=s.iters_large + s.iters_small,
                                                mu_norm=s.mu_norm, step=step(1), **small)
            gd.extend(gd_small)
            res.curves["K"]["em_samples"]["dist"] = em
            res.values["K_components"].update(dist_end_gd_two_stage=gd[-1], dist_end_em_random_init=em[-1])
        done(len(stages) - 1)
        res.values["wall_s"] = round(res.wall_s, 3)
        res.finished = True
        prog(1.0, f"done in {res.wall_s:.1f} s")
        yield res


FEATURE = MogDdpm()
