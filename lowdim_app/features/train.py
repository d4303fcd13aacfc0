"""``train``: a small pixel DDPM on the built-in digits or a folder of the user's images, with a
model card that records the data, steps, loss, wall time, the reproducing command and (for the
digits) measured evidence of the memorization/generalization regime."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..diffusion.training import BETA_SCHEDULES, PREDICTION_TYPES
from ..errors import UserError
from .base import Cancelled, Cost, Feature, Progress, Result
from .settings import Settings, seed_setting, setting


@dataclass(frozen=True)
class TrainSettings(Settings):
    COMMAND = "train"
    data: str = setting("digits", help="'digits' or a folder of images", max_chars=1000)
    subset: int | None = setting(None, lo=1, hi=100_000, help="train on this many training digits (seeded)")
    duplicate: int = setting(0, lo=0, hi=100_000, help="number of training images to duplicate")
    copies: int = setting(0, lo=0, hi=100_000, help="extra copies of each duplicated image")
    steps: int = setting(4000, lo=1, hi=10_000_000, help="optimizer steps")
    batch_size: int = setting(64, lo=1, hi=65_536, help="batch size")
    lr: float = setting(2e-3, lo=1e-7, hi=1.0, help="learning rate (AdamW, warm-up then cosine)")
    ema: float = setting(0.999, lo=0.0, hi=0.99999, help="decay of the exponential moving average of the weights "
                                                          "(the saved model)")
    prediction: str = setting("sample", choices=PREDICTION_TYPES,
                              help="what the U-Net predicts (the scheduler's prediction_type): sample (x0) and "
                                   "v_prediction keep x0_hat's error unamplified at high noise; sample gave the "
                                   "lowest Jacobian rank and energy outside the data span (bench/builtin_recipe.py)")
    schedule: str = setting("squaredcos_cap_v2", choices=BETA_SCHEDULES,
                            help="noise schedule: squaredcos_cap_v2 (cosine, Nichol & Dhariwal 2021) or linear "
                                 "(DDPM, Ho et al. 2020)")
    antithetic: bool = setting(False, help="noise pairs (eps, -eps) per image: same loss, lower-variance slope")
    width: tuple[int, ...] = setting((16, 32, 32), lo=4, hi=1024, max_items=5,
                                     help="U-Net channels per resolution level")
    size: int = setting(16, lo=4, hi=512, unit="px", help="image size (folders are resized)")
    channels: int = setting(1, lo=1, hi=3, help="1 (grey) or 3 (colour)")
    seed: int = seed_setting()
    summary: str = setting("", help="one line for the model card")
    evidence: bool = setting(True, help="measure the regime evidence (digits only)")
    evidence_samples: int = setting(512, lo=8, hi=100_000, help="samples drawn for the regime evidence")
    structure_digits: int = setting(20, lo=0, hi=359, help="held-out digits on which the card measures the "
                                    "Jacobian's rank and subspace energy and edits along v1 (digits only; 0: skip)")

    def check(self) -> None:
        if self.channels not in (1, 3):
            raise UserError(f"channels must be 1 or 3, got {self.channels}")
        if not 2 <= len(self.width) <= 5 or any(w % 8 for w in self.width):
            raise UserError(f"width needs 2 to 5 levels, each a multiple of 8 (group norm), got {list(self.width)}")
        if self.data != "digits" and not Path(self.data).is_dir():
            raise UserError(f"data must be 'digits' or a folder of images, got {self.data!r}")


@dataclass
class TrainResult(Result):
    out: Path | None = None
    card: dict | None = None

    def numbers(self) -> dict:
        return {"out": str(self.out), "final_loss": self.card["final_loss_last200_mean"],
                "wall_time_s": self.card["wall_time_s"], "evidence": self.card.get("evidence"),
                "structure": self.card.get("structure")}

    def summary(self) -> str:
        return f"wrote {self.out} (loss {self.card['final_loss_last200_mean']:.4f}, {self.card['wall_time_s']:.0f} s)"


class Train(Feature):
    name = "train"
    help = "train a small pixel DDPM (diffusers UNet2DModel)"
    Settings = TrainSettings

    def cost(self, s: TrainSettings) -> Cost:
        return Cost(forward=3 * s.steps * s.batch_size, note="one forward + backward (~3 forwards) per image per step")

    def run(self, s: TrainSettings, *, runtime=None, progress=None, should_stop=None, out: str | Path = "") -> TrainResult:
        from ..data.images import make_grid
        from ..diffusion.registry import load_model
        from ..diffusion.training import TrainConfig, TrainingStopped, train
        from ..methods.model_card import measure_card, write_card

        if not str(out):
            raise UserError("train needs an output folder (--out)")
        prog = Progress.wrap(progress, should_stop)
        cfg = TrainConfig(data=s.data, subset=s.subset, duplicate=s.duplicate, copies=s.copies, steps=s.steps,
                          batch_size=s.batch_size, lr=s.lr, ema_decay=s.ema, prediction_type=s.prediction,
                          beta_schedule=s.schedule, antithetic=s.antithetic, block_out_channels=tuple(s.width),
                          seed=s.seed, out=str(out), image_size=s.size, channels=s.channels,
                          command=s.to_cli(extra=f"--out {out}"))
        prog(0.0, "training")
        try:
            result = train(cfg, progress=prog.bars, should_stop=prog.should_stop)
        except TrainingStopped:
            raise Cancelled() from None
        card = json.loads((result.out / "card.json").read_text())
        card["summary"] = s.summary
        model = load_model(str(result.out), "cpu")
        prog(0.8, "sampling for the model card")
        if s.data == "digits" and s.evidence:
            samples = measure_card(model, card, evidence_samples=s.evidence_samples,
                                   structure_digits=s.structure_digits, progress=prog.bars)
            make_grid(samples[:64], upscale=4).save(result.out / "samples.png")
        else:
            make_grid(model.generate(64, seed=s.seed, steps=50), upscale=4).save(result.out / "samples.png")
        write_card(result.out, Path(out).name, card)
        return TrainResult(settings=s, out=result.out, card=card)

    def add_output_arguments(self, p) -> None:
        p.add_argument("--out", required=True, help="output folder (a diffusers pipeline folder)")

    def write_outputs(self, result, args) -> list[str]:
        return [result.summary()]

    def cli_inputs(self, args) -> dict:
        return {"out": args.out}


FEATURE = Train()
