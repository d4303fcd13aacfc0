"""``calibrate-builtin``: regenerate the shipped calibrations of the built-in digit models from
their own seeded samples, labelled by nearest-neighbour distance (the offline stand-in for the SSCD
labels of Zhang et al. 2025, arXiv:2512.20963, App. B.2), with the per-layer AUROC sweep.

Per model it compares, on these calibration sets, the spikiness measures of Zhang et al. 2025
(std = Alg. 1; l4_l2, entropy, max_min = App. B.2) at the best std layer and the denoising error
(Carlini et al. 2023, arXiv:2301.13188), each the mean over ``noise_draws`` draws; the default
detector is the paper's std when it reaches AUROC >= 0.99 and TPR@1%FPR >= 0.95, else the detector
with the highest TPR@1%FPR (then AUROC). ``digits-gen`` memorizes nothing, so it takes
``digits-dup``'s detector (same architecture). The out-of-domain threshold is the 99th percentile
of the denoising error of the first half of the held-out real test digits (``OOD_REFERENCE``);
the second half and fresh samples are left for ``bench/detectors.py``.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from .base import Cost, Feature, Progress, Result, csv_text, runtime_or_default
from .common import load
from .settings import Settings, seed_setting, setting

LAYERS_SCANNED = 12   # ResNet and mid blocks of the digits U-Net, each scored in the layer sweep
OOD_REFERENCE = slice(0, 180)      # held-out test digits used for calibration (the rest: evaluation)
HELD_OUT = slice(180, None)
GOAL = (0.99, 0.95)                # AUROC, TPR@1%FPR a default detector should reach
DETECTOR_METRICS = ("std", "l4_l2", "entropy", "max_min", "denoising_error")


@dataclass(frozen=True)
class CalibrateBuiltinSettings(Settings):
    COMMAND = "calibrate-builtin"
    n_samples: int = setting(384, lo=8, hi=100_000, help="DDIM samples drawn per model for the reference sets")
    steps: int = setting(50, lo=1, hi=1000, help="DDIM steps of those samples")
    seed: int = seed_setting(7, help="seed of the reference samples")
    t: int = setting(50, lo=0, hi=999, label="timestep t", help="timestep of the representation")
    target_fpr: float = setting(0.01, lo=0.0, hi=0.5, label="target FPR",
                                help="false-positive rate on the generalized reference at the threshold")
    noise_draws: int = setting(4, lo=1, hi=64, label="noise draws", help="noise draws averaged per score")


@dataclass
class CalibrateBuiltinResult(Result):
    calibrations: dict = field(default_factory=dict)     # model id -> methods.memorization.Calibration
    layer_rows: list[dict] = field(default_factory=list)
    assets: Path | None = None                           # where the shipped calibrations live

    def numbers(self) -> dict:
        return {"calibrations": {mid: c.headline() for mid, c in self.calibrations.items()}, "layers": self.layer_rows}

    def to_csv(self) -> str:
        header = list(self.layer_rows[0])
        return csv_text(header, [[r[k] for k in header] for r in self.layer_rows])

    def summary(self) -> str:
        return "\n".join(f"{mid}: {c.detector_name()}, AUROC {c.auroc}, TPR@1%FPR {c.tpr_at_1pct_fpr}, "
                         f"threshold {c.threshold:.4g}, out-of-domain above {c.ood_threshold:.4g}"
                         for mid, c in self.calibrations.items())

    def write(self, assets: str | Path | None = None) -> list[Path]:
        """``<assets>/calibrations/<model>.json`` and ``layer_auroc.csv`` (default: the run's assets folder)."""
        from ..methods.memorization import calibration_path

        assets = Path(assets or self.assets)
        paths = [c.save(calibration_path(assets, mid)) for mid, c in self.calibrations.items()]
        csv_path = assets / "calibrations" / "layer_auroc.csv"
        csv_path.write_text(self.to_csv())
        return paths + [csv_path]


class CalibrateBuiltin(Feature):
    name = "calibrate-builtin"
    help = "regenerate the shipped calibrations of the built-in models (seeded)"
    Settings = CalibrateBuiltinSettings
    uses_model = True
    outputs = ("json",)

    def cost(self, s: CalibrateBuiltinSettings) -> Cost:
        return Cost(forward=3 * s.n_samples * (s.steps + LAYERS_SCANNED + 6 * s.noise_draws),
                    note="per built-in model: n_samples x steps DDIM evaluations, then one early-stopped pass per "
                         "reference image and layer (at most n_samples each)")

    def run(self, s: CalibrateBuiltinSettings, *, runtime=None, progress=None, should_stop=None) -> CalibrateBuiltinResult:
        from ..data.digits import load_digits_split
        from ..methods import memorization as mz
        from ..methods.memorization_builtin import BUILTIN_MODELS, best_layer, layer_auroc, reference_sets

        rt = runtime_or_default(runtime)
        prog = Progress.wrap(progress, should_stop)
        cals, all_rows, ref = {}, [], None
        ood_ref = load_digits_split().test_images[OOD_REFERENCE]
        for i, mid in enumerate(BUILTIN_MODELS):
            prog(i / len(BUILTIN_MODELS), f"{mid}: reference samples and layer sweep")
            model = load(mid, rt)
            mem, gen, how = reference_sets(model, s.n_samples, s.seed, s.steps, prog.bars)
            if mid == "digits-mem":
                gen, how = ood_ref, f"memorized: near-copy samples; generalized: {len(ood_ref)} held-out real test digits"
            rows = layer_auroc(model, mem, gen, s.t) if len(mem) else []
            all_rows += rows
            layer = best_layer(rows) if rows else (ref or {}).get("layer") or "mid_block"
            prog.check()
            cands = []
            for metric in DETECTOR_METRICS:
                lay = "" if metric == mz.DENOISING_ERROR else layer
                sm = mz.scores(model, mem, lay, s.t, metric, s.noise_draws, s.seed) if len(mem) else []
                sg = mz.scores(model, gen, lay, s.t, metric, s.noise_draws, s.seed)
                cands.append(mz.calibrate(sm, sg, mid, lay, s.t, metric, s.target_fpr, s.noise_draws))
                prog.check()
            if len(mem):
                good = [c for c in cands if c.auroc >= GOAL[0] and c.tpr_at_1pct_fpr >= GOAL[1]]
                chosen = cands[0] if cands[0] in good else max(cands, key=lambda c: (c.tpr_at_1pct_fpr, c.auroc))
                why = ("the paper's std reaches the goal" if chosen is cands[0] else
                       f"std does not reach AUROC {GOAL[0]} / TPR@1%FPR {GOAL[1]}; highest TPR@1%FPR")
            else:
                ref = ref or {"metric": "std", "layer": layer}
                chosen = next(c for c in cands if (c.metric, c.layer) == (ref["metric"], ref["layer"] or ""))
                why = ("no near-copies among this model's samples: digits-dup's detector (same architecture)"
                       if mid != "digits-dup" else "no near-copies among the samples: the paper's std")
            chosen.notes = (f"{how}; {len(mem)} memorized, {len(gen)} generalized; samples: {s.n_samples} DDIM "
                            f"({s.steps} steps, seed {s.seed}); layer by per-layer std AUROC; detector: {why}")
            chosen.detectors = [{k: getattr(c, k) for k in ("metric", "layer", "t", "direction", "threshold", "fpr",
                                                            "tpr", "auroc", "tpr_at_1pct_fpr")} for c in cands]
            err = mz.denoising_error_draws(model, ood_ref, mz.OOD_T, s.noise_draws, s.seed).mean(1)
            mz.fit_ood(chosen, err, mz.OOD_T, 0.01, f"the first {len(ood_ref)} held-out real test digits")
            if mid == "digits-dup":
                ref = {"metric": chosen.metric, "layer": chosen.layer}
            cals[mid] = chosen
        return CalibrateBuiltinResult(settings=s, calibrations=cals, layer_rows=all_rows, assets=rt.assets)

    # CLI: the files go into the assets folder (LOWDIM_ASSETS)
    def write_outputs(self, result: CalibrateBuiltinResult, args) -> list[str]:
        lines = result.summary().splitlines()
        paths = result.write()
        if getattr(args, "json", None):
            paths.append(result.write_json(args.json))
        print("\n".join(f"wrote {p}" for p in paths), file=sys.stderr)
        return lines


FEATURE = CalibrateBuiltin()
