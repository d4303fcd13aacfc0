"""``calibrate``: fit the memorization threshold and its sign from known images -- ROC, AUROC and
TPR at 1% FPR (Zhang et al. 2025, arXiv:2512.20963, §4.1, Alg. 1's THRES, Table 1's measures)."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from .base import Cost, Feature, Progress, Result, dumps, runtime_or_default
from .common import load, model_setting
from .score import METRICS, load_images
from .settings import Settings, seed_setting, setting


@dataclass(frozen=True)
class CalibrateSettings(Settings):
    COMMAND = "calibrate"
    model: str = model_setting()
    memorized: tuple[str, ...] = setting((), help="known-memorized image files or folders")
    generalized: tuple[str, ...] = setting((), help="known-generalized image files or folders")
    layer: str = setting("", help="U-Net module (empty: the model's calibrated layer)", max_chars=200)
    t: int = setting(50, lo=0, hi=999, label="timestep t", help="timestep")
    metric: str = setting("std", choices=METRICS, help="detector: a spikiness measure or denoising_error")
    noise_draws: int = setting(4, lo=1, hi=64, label="noise draws", help="noise draws averaged")
    target_fpr: float = setting(0.01, lo=0.0, hi=0.5, label="target FPR",
                                help="false-positive rate on the generalized images at the threshold")
    seed: int = seed_setting(help="seed of the noise draws")

    def check(self) -> None:
        if not self.memorized:
            raise UserError("give known-memorized images (upload them, or --memorized FILES_OR_FOLDER)")
        if not self.generalized:
            raise UserError("give known-generalized images (upload them, or --generalized FILES_OR_FOLDER)")


@dataclass
class CalibrateResult(Result):
    calibration: object | None = None        # methods.memorization.Calibration
    memorized_names: list[str] = field(default_factory=list)
    generalized_names: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def numbers(self) -> dict:
        return {**self.calibration.headline(), "n_memorized": len(self.memorized_names),
                "n_generalized": len(self.generalized_names), "skipped": self.skipped}

    def figure(self):
        from ..plots.memorization import roc_figure

        c = self.calibration
        return roc_figure(c.roc_fpr, c.roc_tpr, c.auroc, c.tpr_at_1pct_fpr)

    def summary(self) -> str:
        c = self.calibration
        text = (f"AUROC {c.auroc:.3f}, TPR at 1% FPR {c.tpr_at_1pct_fpr:.3f}; threshold {c.threshold:.4g} "
                f"({'higher' if c.direction > 0 else 'lower'} score = memorized), FPR {c.fpr:.3f}, TPR {c.tpr:.3f} "
                f"on {len(self.memorized_names)} memorized / {len(self.generalized_names)} generalized images "
                f"(layer `{c.layer}`, t = {c.t}, metric `{c.metric}`).")
        return text + (" Skipped: " + "; ".join(self.skipped) if self.skipped else "")

    def write(self, path: str | Path) -> Path:
        """The calibration JSON that ``score --calibration`` and the app's upload read."""
        return self.calibration.save(path)


class Calibrate(Feature):
    name = "calibrate"
    help = "fit the memorization threshold from known images"
    Settings = CalibrateSettings
    outputs = ()

    def cost(self, s: CalibrateSettings) -> Cost:
        return Cost(forward=(len(s.memorized) + 2 * len(s.generalized)) * s.noise_draws,
                    note="one (early-stopped) U-Net pass per image and noise draw; a folder counts as one image")

    def run(self, s: CalibrateSettings, *, runtime=None, progress=None, should_stop=None, model=None,
            memorized_images=None, generalized_images=None) -> CalibrateResult:
        """``memorized_images`` / ``generalized_images``: what the UI holds (uploaded files or tensors)
        in place of the paths in ``s``, named by ``s.memorized`` / ``s.generalized``."""
        from ..methods import memorization as mz

        rt = runtime_or_default(runtime)
        prog = Progress.wrap(progress, should_stop)
        model = load(s.model, rt, model)
        layer = "" if s.metric == mz.DENOISING_ERROR else (s.layer or mz.default_layer(model, rt.assets))
        sets, skipped = [], []
        for label, paths, given in (("memorized", s.memorized, memorized_images),
                                    ("generalized", s.generalized, generalized_images)):
            tens, names, problems = load_images(model, given if given is not None else paths,
                                                list(paths) if given is not None else None)
            if tens is None:
                raise UserError(f"no readable {label} image: {problems[0]}" if problems else f"no {label} images")
            sets.append((tens, names))
            skipped += problems
        (mem, mem_names), (gen, gen_names) = sets
        prog(0.1, f"scoring {len(mem)} memorized images")
        sm = mz.scores(model, mem, layer, s.t, s.metric, s.noise_draws, s.seed)
        prog(0.5, f"scoring {len(gen)} generalized images")
        sg = mz.scores(model, gen, layer, s.t, s.metric, s.noise_draws, s.seed)
        cal = mz.calibrate(sm, sg, model.model_id, layer, s.t, s.metric, s.target_fpr, s.noise_draws,
                           notes=f"memorized: {' '.join(s.memorized)}; generalized: {' '.join(s.generalized)}")
        if len(gen) >= 2:   # out-of-domain reference: the known-generalized (real, in-domain) images
            prog(0.8, "out-of-domain reference")
            err = mz.denoising_error_draws(model, gen, mz.OOD_T, s.noise_draws, s.seed).mean(1)
            mz.fit_ood(cal, err, mz.OOD_T, 0.01, "the known-generalized images")
        return CalibrateResult(settings=s, calibration=cal, memorized_names=mem_names, generalized_names=gen_names,
                               skipped=skipped)

    # CLI: the calibration file, its headline numbers as JSON on stdout
    def add_output_arguments(self, parser) -> None:
        parser.add_argument("--out", required=True, metavar="PATH", help="write the calibration JSON here")

    def write_outputs(self, result: CalibrateResult, args) -> list[str]:
        notes = [f"skipped: {p}" for p in result.skipped] + [f"wrote {result.write(args.out)}"]
        print("\n".join(notes), file=sys.stderr)
        return [dumps(result.calibration.headline())]


FEATURE = Calibrate()
