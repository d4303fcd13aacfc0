"""``calibrate-builtin``: regenerate the shipped calibrations of the built-in digit models from
their own seeded samples, labelled by nearest-neighbour distance (the offline stand-in for the SSCD
labels of Zhang et al. 2025, arXiv:2512.20963, App. B.2), with the per-layer AUROC sweep."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from .base import Cost, Feature, Progress, Result, csv_text, runtime_or_default
from .common import load
from .settings import Settings, seed_setting, setting

LAYERS_SCANNED = 12   # ResNet and mid blocks of the digits U-Net, each scored in the layer sweep


@dataclass(frozen=True)
class CalibrateBuiltinSettings(Settings):
    COMMAND = "calibrate-builtin"
    n_samples: int = setting(384, lo=8, hi=100_000, help="DDIM samples drawn per model for the reference sets")
    steps: int = setting(50, lo=1, hi=1000, help="DDIM steps of those samples")
    seed: int = seed_setting(7, help="seed of the reference samples")
    t: int = setting(50, lo=0, hi=999, label="timestep t", help="timestep of the representation")
    target_fpr: float = setting(0.01, lo=0.0, hi=0.5, label="target FPR",
                                help="false-positive rate on the generalized reference at the threshold")


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
        return "\n".join(f"{mid}: layer {c.layer}, AUROC {c.auroc}, TPR@1%FPR {c.tpr_at_1pct_fpr}, "
                         f"threshold {c.threshold:.4g}" for mid, c in self.calibrations.items())

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
        return Cost(forward=3 * s.n_samples * (s.steps + LAYERS_SCANNED + 1),
                    note="per built-in model: n_samples x steps DDIM evaluations, then one early-stopped pass per "
                         "reference image and layer (at most n_samples each)")

    def run(self, s: CalibrateBuiltinSettings, *, runtime=None, progress=None, should_stop=None) -> CalibrateBuiltinResult:
        from ..methods.memorization_builtin import BUILTIN_MODELS, calibrate_builtin

        rt = runtime_or_default(runtime)
        prog = Progress.wrap(progress, should_stop)
        cals, all_rows, ref_rows = {}, [], None
        for i, mid in enumerate(BUILTIN_MODELS):
            prog(i / len(BUILTIN_MODELS), f"{mid}: reference samples and layer sweep")
            cal, rows = calibrate_builtin(load(mid, rt), t=s.t, target_fpr=s.target_fpr, reference_layer_rows=ref_rows,
                                          n=s.n_samples, seed=s.seed, steps=s.steps, progress=prog.bars)
            if mid == "digits-dup":
                ref_rows = rows
            cals[mid] = cal
            all_rows += rows
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
