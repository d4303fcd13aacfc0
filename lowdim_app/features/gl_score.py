"""``gl-score``: the generalization score of MLP denoisers vs ``N_k / d_k`` on MoLRG data (Wang et
al. 2024, arXiv:2409.02426, eq. 21, Fig. 5a, App. E.2).

For each ``d_k``, one network per ratio is trained on ``N_k = ratio x d_k`` samples per component;
their EDM samples are scored against fresh MoLRG samples (eq. 21: ~0 memorization, ~1
generalization). The curves fill in one ``d_k`` at a time. Mathematics:
:func:`lowdim_app.synthetic.gl_score.gl_curve`.

The training defaults were set by measurement (n = 48, K = 2, d_k = 3): with 1500 Adam steps of a
width-128 MLP the samples kept an off-subspace residual of ~0.4 and mixed the two subspaces, so GL
came out > 1 at every ratio; 12000 steps, width 256, depth 4, lr 2e-3 (cosine decay, EMA), batch
128 and noise levels ``log sigma ~ N(-2, 1.5^2)`` (the data scale is ~0.25, half EDM's 0.5) bring
the residual to ~0.02 and GL to ~0.08 at N_k/d_k = 1 and ~1 at 64.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..errors import UserError
from ..synthetic.gl_score import gl_curve
from .base import Cancelled, Cost, Feature, Progress, Result, csv_text
from .settings import Settings, seed_setting, setting

MAX_N_K = 20_000
# Reference CPU: the 2-core CI machine. bench/results/gl_score_fig5a.json: 28 networks x 12000 Adam
# steps (width 256, depth 4, batch 128) in 1002 s, i.e. 3.0e-3 s per network step; one batched
# step of a width-16 network takes 1.1e-3 s whatever the width (the per-step overhead)
SECONDS_PER_SAMPLE_UNIT = 3.0e-3 / (128 * 256 * 256 * 4)   # per network step x batch x width^2 x depth
SECONDS_PER_STEP = 1e-3                                     # per training step of a batch of networks


def mlp_training_seconds(networks: int, steps: int, batch: int, width: int, depth: int) -> float:
    """CPU seconds of :func:`~lowdim_app.synthetic.gl_score.train_denoisers` for ``networks`` MLPs
    trained together (reference CPU above)."""
    return steps * (SECONDS_PER_STEP + networks * SECONDS_PER_SAMPLE_UNIT * batch * width ** 2 * depth)


@dataclass(frozen=True)
class GLSettings(Settings):
    COMMAND = "gl-score"
    K: int = setting(2, lo=1, hi=3, help="number of components")
    n: int = setting(48, lo=4, hi=256, help="ambient dimension")
    d: tuple[int, ...] = setting((3, 4, 5, 6), lo=1, hi=32, max_items=32,
                                 help="subspace dimensions d_k, one curve each (A:B or A,B,C)")
    ratios: tuple[float, ...] = setting((1, 2, 4, 8, 16, 32, 64), lo=0.1, hi=1000.0, max_items=20,
                                        help="N_k / d_k values, e.g. 1,2,4,8")
    steps: int = setting(12000, lo=1, hi=50_000, help="Adam steps per network")
    lr: float = setting(2e-3, lo=1e-6, hi=1.0, help="learning rate (Adam, cosine decay, EMA weights)")
    batch: int = setting(128, lo=1, hi=4096, help="batch size")
    width: int = setting(256, lo=8, hi=1024, help="MLP width")
    depth: int = setting(4, lo=1, hi=8, help="MLP hidden layers")
    p_mean: float = setting(-2.0, lo=-6.0, hi=2.0, help="training noise: mean of log sigma")
    p_std: float = setting(1.5, lo=0.1, hi=4.0, help="training noise: std of log sigma")
    n_eval: int = setting(300, lo=10, hi=2000, help="generated and reference samples for eq. 21")
    sample_steps: int = setting(18, lo=2, hi=64, help="EDM Heun sampling steps")
    seed: int = seed_setting()

    def check(self) -> None:
        if self.K * max(self.d) > self.n:
            raise UserError(f"K * max(d) = {self.K * max(self.d)} exceeds n = {self.n}")
        top = round(max(self.ratios) * max(self.d))
        if top > MAX_N_K:
            raise UserError(f"N_k = ratio x d_k reaches {top}, at most {MAX_N_K}")


@dataclass
class GLResult(Result):
    rows: list[dict] = field(default_factory=list)   # d, N_k, ratio, gl, train_loss
    wall_s: float = 0.0

    def numbers(self) -> dict:
        return {"rows": self.rows, "finished": self.finished, "wall_s": round(self.wall_s, 3)}

    def to_csv(self) -> str:
        rows = [[r["d"], r["N_k"], f"{r['ratio']:g}", f"{r['gl']:.5f}", f"{r['train_loss']:.5f}"] for r in self.rows]
        return csv_text(["d_k", "N_k", "ratio", "gl_score", "train_loss"], rows)

    def figure(self):
        from ..plots.molrg import gl_figure

        return gl_figure(self.rows)

    def summary(self) -> str:
        return self.to_csv().rstrip("\n")


class GLScore(Feature):
    name = "gl-score"
    help = "GL score (eq. 21) of MLP denoisers vs N_k/d_k (Wang et al. 2024, Fig. 5a)"
    Settings = GLSettings
    outputs = ("json", "csv", "png")

    def cost(self, s: GLSettings) -> Cost:
        """One batched training of ``len(ratios)`` networks per ``d_k`` (the EDM sampling is small)."""
        sec = len(s.d) * mlp_training_seconds(len(s.ratios), s.steps, s.batch, s.width, s.depth)
        return Cost(cpu_seconds=sec, note=f"{len(s.d)} x {len(s.ratios)} networks x {s.steps} Adam steps, "
                                          "measured on the Fig. 5a grid (2-core CPU)")

    def stream(self, s: GLSettings, *, runtime=None, progress=None, should_stop=None):
        """The curves so far after each ``d_k``; the last result is finished."""
        prog = Progress.wrap(progress, should_stop)
        t0, rows = time.perf_counter(), []
        for i, d in enumerate(s.d):
            prog(i / len(s.d), f"training {len(s.ratios)} networks for d_k = {d}")

            def on_step(it: int, i=i, d=d) -> None:
                prog((i + 0.9 * it / s.steps) / len(s.d),
                     f"d_k = {d} ({i + 1}/{len(s.d)}): Adam step {it}/{s.steps} of {len(s.ratios)} networks at once")

            new = gl_curve(s, d, should_stop=prog.should_stop, on_step=on_step)
            if new is None:
                raise Cancelled()
            rows = rows + new
            yield GLResult(settings=s, rows=rows, finished=i + 1 == len(s.d), wall_s=time.perf_counter() - t0)


FEATURE = GLScore()
