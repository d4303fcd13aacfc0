"""``molr-mog``: MoLR-MoG data and mixture-of-experts latent scores (Yang et al. 2026, arXiv:2601.01475).

Data from eq. 2 (a union of K subspaces, each with a mixture of ``n_k`` Gaussians in its latent space)
or the built-in digits with one PCA encoder per class. Three scores share the encoders and are trained
by denoising score matching (§4, App. F): the MoE-latent MoG score (eq. 3), the MoE-latent Gaussian
(MoLRG, Wang et al. 2024, arXiv:2409.02426) and a generic latent MLP; each then samples with DDIM.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..errors import UserError
from .base import Cost, Feature, Progress, StagedResult
from .settings import Settings, seed_setting, setting

DATA_SETS = ("synthetic", "digits")


@dataclass(frozen=True)
class MolrMogSettings(Settings):
    """Every parameter of the lab."""

    COMMAND = "molr-mog"
    data: str = setting("synthetic", choices=DATA_SETS,
                        help="eq. 2 data, or the built-in digits with one PCA encoder per class (K = 10)")
    K: int = setting(3, lo=1, hi=10, help="subspaces (synthetic data; digits: the 10 classes)", label="subspaces K")
    D: int = setting(16, lo=2, hi=256, help="ambient dimension (synthetic data; digits: 256)", label="ambient D")
    d: int = setting(2, lo=1, hi=32, help="latent dimension d_k of every subspace", label="latent d_k")
    n_modes: int = setting(4, lo=1, hi=16, help="Gaussian modes n_k per subspace", label="modes n_k")
    radius: float = setting(2.0, lo=0.0, hi=20.0, help="norm of the latent mode means (synthetic data)")
    spread: float = setting(0.15, lo=0.01, hi=5.0, help="latent standard deviation of each mode (synthetic data)")
    steps: int = setting(300, lo=1, hi=20_000, help="Adam steps per score", label="training steps")
    batch: int = setting(256, lo=8, hi=4096, help="rows per step")
    lr: float = setting(0.02, lo=1e-5, hi=1.0, help="learning rate of the two MoE scores")
    mlp_hidden: int = setting(64, lo=4, hi=1024, help="hidden width of the latent MLP experts")
    mlp_lr: float = setting(3e-3, lo=1e-5, hi=1.0, help="learning rate of the latent MLP")
    gamma_min: float = setting(0.05, lo=0.005, hi=0.9, help="smallest training noise gamma_t")
    gamma_max: float = setting(0.95, lo=0.005, hi=0.999, help="largest training noise gamma_t")
    n_samples: int = setting(300, lo=1, hi=5000, help="DDIM samples per score")
    sample_steps: int = setting(40, lo=2, hi=1000, help="DDIM steps")
    seed: int = seed_setting()

    def check(self) -> None:
        if self.data == "synthetic" and self.d > self.D:
            raise UserError(f"latent d_k ({self.d}) must be at most the ambient D ({self.D})")
        if self.gamma_max < self.gamma_min:
            raise UserError(f"gamma_max ({self.gamma_max:g}) must be at least gamma_min ({self.gamma_min:g})")


@dataclass
class MolrMogResult(StagedResult):
    curves: dict = field(default_factory=dict)     # score -> DSM loss every 10 steps
    samples: dict = field(default_factory=dict)    # score -> n x D
    data: object = None                            # synthetic.molr_mog.LabData (encoders, ground truth)

    def figure(self):
        from ..plots.theory import molr_mog_figure

        return molr_mog_figure(self)

    def summary_lines(self) -> list[str]:
        n = self.values
        if not n.get("eval_loss"):
            return []
        return ["eval DSM loss: " + ", ".join(f"{k} {v:.3f}" for k, v in n["eval_loss"].items())
                + (f" (true score {n['oracle_loss']:.3f})" if "oracle_loss" in n else ""),
                "parameters: " + ", ".join(f"{k} {v}" for k, v in n["param_counts"].items())]


# one Adam step: overhead + rows x experts x modes x (d^2 + 8) for the MoE scores, rows x experts x
# (3 width^2 + D d) for the MLP; a DDIM step costs about a third (no backward pass).
# Fitted on one core of a 2-core CPU (about +-50%).
_STEP_S, _MOE_S, _MLP_S, _FORWARD = 2e-3, 7e-8, 6e-10, 1 / 3


class MolrMog(Feature):
    name = "molr-mog"
    help = "MoLR-MoG data and mixture-of-experts latent scores (Yang et al. 2026)"
    Settings = MolrMogSettings
    outputs = ("json", "png")
    echo_command = True

    def cost(self, s: MolrMogSettings) -> Cost:
        K, D = (10, 256) if s.data == "digits" else (s.K, s.D)

        def work(rows: int) -> float:     # the three scores on ``rows`` rows
            moe = rows * K * (s.n_modes + 1) * (s.d ** 2 + 8) * _MOE_S
            return 3 * _STEP_S + moe + rows * K * (3 * s.mlp_hidden ** 2 + D * s.d) * _MLP_S
        seconds = s.steps * work(s.batch) + s.sample_steps * _FORWARD * work(s.n_samples)
        return Cost(cpu_seconds=seconds, note="3 scores x (Adam steps + DDIM steps), one CPU core")

    def stream(self, s: MolrMogSettings, *, runtime=None, progress=None, should_stop=None):
        from ..synthetic import molr_mog as mm

        prog = Progress.wrap(progress, should_stop)
        t0 = time.perf_counter()
        stages = [f"training and sampling the {name} score" for name in mm.MODELS]
        res = MolrMogResult(settings=s, finished=False, stages=stages)
        timings: dict = {}
        res.values["timings_s"] = timings

        def stage(k: int, within: float = 0.0) -> None:
            prog((k + within) / len(stages), f"stage {k + 1}/{len(stages)}: {stages[k]}")

        stage(0)
        if s.data == "synthetic":
            data = mm.synthetic_lab_data(s.K, s.D, s.d, s.n_modes, s.radius, s.spread, s.seed)
            res.values["oracle_loss"] = mm.eval_loss(mm.true_score(data.truth), data.x_eval, s.seed + 9,
                                                     s.gamma_min, s.gamma_max)
        else:
            data = mm.digits_lab_data(s.d, s.n_modes, s.seed)
            res.values.update(data.info)
        res.data = data
        models = mm.lab_models(data, s.n_modes, s.mlp_hidden, s.seed)
        res.values["param_counts"] = {k: m.n_params() for k, m in models.items()}
        res.values["K"], res.values["D"] = data.A.shape[0], data.D
        final, evals, quality = {}, {}, {}
        res.values.update(final_loss=final, eval_loss=evals, sample_quality=quality)
        for k, (name, model) in enumerate(models.items()):
            ts = time.perf_counter()
            res.curves[name] = mm.train_score(
                model, data.sample, steps=s.steps, batch=s.batch, lr=s.mlp_lr if name == "latent_mlp" else s.lr,
                gamma_min=s.gamma_min, gamma_max=s.gamma_max, seed=s.seed + 13 * (k + 1),
                callback=lambda step, _loss, k=k: stage(k, (step + 1) / s.steps))
            final[name] = res.curves[name][-1]
            evals[name] = mm.eval_loss(model, data.x_eval, s.seed + 9, s.gamma_min, s.gamma_max)
            res.samples[name] = mm.ddim_sample(model, s.n_samples, data.D, steps=s.sample_steps, seed=s.seed + 77)
            quality[name] = mm.sample_quality(res.samples[name], data, s.spread, s.d)
            timings[name] = round(time.perf_counter() - ts, 2)
            res.completed, res.wall_s = k + 1, time.perf_counter() - t0
            if k + 1 < len(stages):
                yield res
                stage(k + 1)
        timings["total"] = round(time.perf_counter() - t0, 2)
        res.finished = True
        prog(1.0, f"done in {res.wall_s:.1f} s")
        yield res


FEATURE = MolrMog()
