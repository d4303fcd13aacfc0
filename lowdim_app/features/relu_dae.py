"""``relu-dae``: two-layer ReLU DAEs that memorize or generalize (Zhang et al. 2025, arXiv:2512.20963).

The same DAE ``f(x) = W2 [W1^T x]_+`` (eq. 5) is trained on eq. 6 in up to three regimes: few samples
(memorize: the columns are the samples, eq. 9, Cor. 3.2), many samples (generalize: the blocks span the
top principal components, eq. 8, Cor. 3.3) and many samples plus duplicated ones (hybrid, Cor. 3.4).
Then each regime samples with DAEs on a noise grid and DDIM (eq. 1, App. B.1).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..errors import UserError
from ..synthetic.relu_dae import data as rd_data
from .base import Cost, Feature, Progress, StagedResult
from .settings import Settings, seed_setting, setting

_DATA_HELP = "training data: the built-in digits (16x16) or a two-mode Gaussian mixture"


@dataclass(frozen=True)
class ReluDaeSettings(Settings):
    """Every parameter of the lab (defaults: a run takes ~10-30 s on a laptop CPU)."""

    COMMAND = "relu-dae"
    data: str = setting("digits", choices=rd_data.DATA_SETS, help=_DATA_HELP)
    p: int = setting(16, lo=1, hi=256, help="hidden units (the same in every regime)", label="hidden units p")
    sigma: float = setting(0.2, lo=0.0, hi=5.0, help="training noise level (paper: 0.2)")
    lam: float = setting(1e-3, lo=0.0, hi=1.0, help="weight decay lambda of eq. 6", label="weight decay lambda")
    tied: bool = setting(True, help="tied weights W1 = W2")
    n_mem: int | None = setting(None, lo=1, hi=512, label="memorization samples",
                                help="memorization set size (auto: digits 5, MoG 4 = 2 per mode)")
    n_gen: int | None = setting(None, lo=2, hi=rd_data.MOG_MAX_SIZE, label="generalization samples",
                                help="generalization set size (auto: digits all 1438, MoG 2000)")
    pick: str = setting("separable", choices=rd_data.PICKS,
                        help="memorized digits: pairwise cosine < 0 (Def. 3.1) or a random subset")
    hybrid: bool = setting(True, help="also train the hybrid regime (duplicated samples, Cor. 3.4)")
    n_dup: int | None = setting(None, lo=1, hi=32, label="duplicated samples",
                                help="duplicated samples in the hybrid regime (auto: digits 2, MoG 1)")
    copies: int = setting(200, lo=0, hi=5000, help="extra copies of each duplicated sample")
    d: int = setting(64, lo=2, hi=1024, help="MoG dimension (paper: 1000)")
    mu: float = setting(5.0, lo=0.1, hi=50.0, help="MoG means +-mu e_1 (paper: 5)")
    decay: float = setting(0.7, lo=0.05, hi=1.0, help="MoG covariance spectrum decay^j")
    steps: int = setting(1500, lo=1, hi=200_000, help="Adam steps per DAE", label="training steps")
    lr: float = setting(1e-2, lo=1e-6, hi=1.0, help="Adam learning rate (cosine decay)")
    batch: int = setting(128, lo=1, hi=8192, help="rows per step (small sets: all rows, repeated)")
    sample: bool = setting(True, help="DDIM samples from DAEs on a noise grid (eq. 1, App. B.1)")
    levels: int = setting(6, lo=2, hi=50, help="noise levels of the sampler (geometric grid)")
    level_steps: int = setting(150, lo=1, hi=20_000, help="fine-tuning steps per noise level")
    sigma_max: float = setting(2.0, lo=1e-3, hi=100.0, help="largest noise level of the sampler (paper: 2)")
    sigma_min: float = setting(0.02, lo=1e-4, hi=100.0, help="smallest noise level of the sampler (paper: 0.02)")
    n_samples: int = setting(16, lo=1, hi=256, help="DDIM samples per regime")
    seed: int = seed_setting()

    def check(self) -> None:
        n_all = rd_data.DIGITS_TRAIN_SIZE if self.data == "digits" else rd_data.MOG_MAX_SIZE
        if self.n_mem is not None and self.data == "mog" and self.n_mem < 2:
            raise UserError(f"memorization samples must be at least 2 for MoG data (one per mode), got {self.n_mem}")
        if self.n_gen is not None and self.n_gen > n_all:
            raise UserError(f"generalization samples must be at most {n_all} for {self.data} data, got {self.n_gen}")
        if self.sigma_min > self.sigma_max:
            raise UserError(f"sigma_min ({self.sigma_min:g}) must be at most sigma_max ({self.sigma_max:g})")

    def sizes(self) -> dict:
        """``n_mem``, ``n_gen``, ``n_dup`` with the data set's defaults filled in."""
        auto = rd_data.DEFAULT_SIZES[self.data]
        return {k: auto[k] if getattr(self, k) is None else getattr(self, k) for k in ("n_mem", "n_gen", "n_dup")}

    def regimes(self) -> list[str]:
        return ["memorize", "generalize"] + (["hybrid"] if self.hybrid else [])

    def regime_sizes(self) -> dict[str, int]:
        """Distinct samples each regime trains on (hybrid on MoG: half the generalization set, all of
        mode +, besides the duplicated samples)."""
        z = self.sizes()
        hybrid = z["n_gen"] if self.data == "digits" else max(2, z["n_gen"] // 2)
        every = {"memorize": z["n_mem"], "generalize": z["n_gen"], "hybrid": hybrid}
        return {r: every[r] for r in self.regimes()}


@dataclass
class ReluDaeResult(StagedResult):
    models: dict = field(default_factory=dict)     # regime -> ReluDAE
    data: dict = field(default_factory=dict)       # regime -> DAEData
    arrays: dict = field(default_factory=dict)     # regime -> tensors the figure draws

    def figure(self):
        from ..plots.theory import relu_dae_figure

        return relu_dae_figure(self)

    def summary_lines(self) -> list[str]:
        n, out = self.values, []
        e = n.get("memorize", {}).get("eq9")
        if e:
            out.append(f"memorize: cos(best column, x_i) min {min(e['best_cos']):.3f}; effective norm vs eq. 9: "
                       + ", ".join(f"{a:.3f}/{b:.3f}" for a, b in zip(e["effective_norm"], e["eq9_norm"])))
        if "auroc_std_mem_train_vs_gen_train" in n:
            out.append(f"AUROC(rep. std, memorizer train vs generalizer train) = {n['auroc_std_mem_train_vs_gen_train']:.3f}")
        for r in ("memorize", "generalize", "hybrid"):
            if r in n:
                out.append(f"{r}: one-step denoising MSE train {n[r]['denoise_mse_train']:.4f} "
                           f"test {n[r]['denoise_mse_test']:.4f}")
        return out


# one Adam step: overhead + noise draws (rows x d) + matrix products (rows x d x p); per regime: the
# analysis; once: loading the digits. Fitted on one core of a 2-core CPU (about +-50%).
_STEP_S, _DRAW_S, _MATMUL_S, _REGIME_S, _DIGITS_S = 1e-4, 4e-9, 1.5e-10, 0.2, 1.0


class ReluDae(Feature):
    name = "relu-dae"
    help = "two-layer ReLU DAE: memorization vs generalization (Zhang et al. 2025, §3)"
    Settings = ReluDaeSettings
    outputs = ("json", "png")
    echo_command = True

    def cost(self, s: ReluDaeSettings) -> Cost:
        dim = 256 if s.data == "digits" else s.d
        seconds = _DIGITS_S if s.data == "digits" else 0.0
        for regime, n in s.regime_sizes().items():
            n += s.sizes()["n_dup"] * s.copies if regime == "hybrid" else 0      # the duplicated copies
            rows = (s.batch // n) * n if n < s.batch else s.batch        # rows per step (see train_dae)
            per_step = _STEP_S + _DRAW_S * rows * dim + _MATMUL_S * rows * dim * s.p
            seconds += per_step * (s.steps + (s.levels * s.level_steps if s.sample else 0)) + _REGIME_S
        return Cost(cpu_seconds=seconds, note="Adam steps x (rows x d draws + rows x d x p products), one CPU core")

    def stream(self, s: ReluDaeSettings, *, runtime=None, progress=None, should_stop=None):
        from ..synthetic.relu_dae import analysis, lab
        from ..synthetic.relu_dae.sampling import noise_levels
        from ..synthetic.relu_dae.train import train_dae

        prog = Progress.wrap(progress, should_stop)
        t0 = time.perf_counter()
        z, regimes = s.sizes(), s.regimes()
        stages = [f"training the {r} DAE" for r in regimes]
        stages += [f"DDIM sampling with the {r} DAEs" for r in regimes] if s.sample else []
        res = ReluDaeResult(settings=s, finished=False, stages=stages)
        timings: dict = {}
        res.values.update(timings_s=timings, sizes=z)

        def stage(k: int, within: float = 0.0) -> None:
            prog((k + within) / len(stages), f"stage {k + 1}/{len(stages)}: {stages[k]}")

        def done(k: int):
            res.completed, res.wall_s = k + 1, time.perf_counter() - t0
            return res

        sizes = s.regime_sizes()
        for k, regime in enumerate(regimes):
            stage(k)
            ts = time.perf_counter()
            data = rd_data.make_data(s.data, regime, n=sizes[regime], n_dup=z["n_dup"], copies=s.copies, pick=s.pick,
                                     d=s.d, mu=s.mu, decay=s.decay, seed=s.seed)
            dae = train_dae(data.train, s.p, s.sigma, s.lam, tied=s.tied, steps=s.steps, lr=s.lr, batch=s.batch,
                            seed=s.seed + 17 * (k + 1),
                            callback=lambda step, _loss, k=k: stage(k, (step + 1) / s.steps))
            res.models[regime], res.data[regime] = dae, data
            nums, arrays = lab.regime_numbers(dae, data, s.seed + k, clustered=regime != "memorize")
            if regime == "memorize":
                nums["eq9"] = analysis.column_match(dae, data)
            if regime == "hybrid":
                more, more_arrays = lab.hybrid_numbers(dae, data, s.seed)
                nums.update(more)
                arrays.update(more_arrays)
            res.values[regime], res.arrays[regime] = nums, arrays
            timings[regime] = round(time.perf_counter() - ts, 2)
            if k == 1:
                res.values.update(lab.comparison_numbers(res.arrays["memorize"], res.arrays["generalize"]))
            if k + 1 < len(stages):
                yield done(k)
        if s.sample:
            ts = time.perf_counter()
            sig = noise_levels(s.sigma_max, s.sigma_min, s.levels)
            res.values["sampling"] = {"sigmas": sig, "level_steps": s.level_steps}
            for k, regime in enumerate(regimes):
                j = len(regimes) + k
                stage(j)
                nums, arrays = lab.sample_numbers(
                    res.models[regime], res.data[regime], sig, level_steps=s.level_steps, batch=s.batch,
                    n_samples=s.n_samples, seed=s.seed + 31 * (k + 1), sample_seed=s.seed + 41,
                    callback=lambda lvl, step, _loss, j=j: stage(j, (lvl + (step + 1) / s.level_steps) / s.levels))
                res.values["sampling"][regime] = nums
                res.arrays[regime].update(arrays)
                if j + 1 < len(stages):
                    yield done(j)
            timings["sampling"] = round(time.perf_counter() - ts, 2)
        timings["total"] = round(time.perf_counter() - t0, 2)
        done(len(stages) - 1)
        res.finished = True
        prog(1.0, f"done in {res.wall_s:.1f} s")
        yield res


FEATURE = ReluDae()
