"""``card``: re-measure a built-in digits model's regime evidence (near-copy share, classifier
confidence, duplicated-subset enrichment) and the low-dimensional structure of its denoiser (rank and
subspace energy of the exact Jacobian, edits along v1 against random), and rewrite its model card."""
from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import UserError
from .base import Cost, Feature, Progress, Result, runtime_or_default
from .common import model_setting
from .settings import Settings, setting


@dataclass(frozen=True)
class CardSettings(Settings):
    COMMAND = "card"
    model: str = model_setting()
    name: str = setting("", help="model name in the card (default: the folder name)")
    summary: str = setting("", help="one line for the card (default: keep the current one)")
    evidence_samples: int = setting(512, lo=8, hi=100_000, help="samples drawn for the evidence")
    structure_digits: int = setting(20, lo=0, hi=359, help="held-out digits on which the Jacobian's rank and subspace "
                                    "energy and edits along v1 are measured (0: skip)")


@dataclass
class CardResult(Result):
    evidence: dict | None = None

    def numbers(self) -> dict:
        return {"evidence": self.evidence}

    def summary(self) -> str:
        return json.dumps(self.evidence, indent=1)


class Card(Feature):
    name = "card"
    help = "(re)measure a digits model's regime evidence and rewrite its card"
    Settings = CardSettings

    def cost(self, s: CardSettings) -> Cost:
        return Cost(forward=s.evidence_samples * 50 + s.structure_digits * 4 * 120, vjp=s.structure_digits * 4 * 256,
                    note="evidence samples x 50 DDIM steps; per structure digit and t: inversion, edits and an "
                         "exact Jacobian (256 VJPs)")

    def run(self, s: CardSettings, *, runtime=None, progress=None, should_stop=None) -> CardResult:
        from ..data.images import make_grid
        from ..diffusion.registry import load_model, resolve
        from ..methods.model_card import measure_card, write_card

        rt = runtime_or_default(runtime)
        prog = Progress.wrap(progress, should_stop)
        _, folder = resolve(s.model, rt)
        if not (folder / "card.json").is_file():
            raise UserError(f"{s.model} has no card.json (only models trained here have cards)")
        card = json.loads((folder / "card.json").read_text())
        if "train_index" not in card:
            raise UserError(f"{s.model} was not trained on the built-in digits; its regime cannot be measured here")
        if s.summary:
            card["summary"] = s.summary
        model = load_model(str(folder), "cpu", runtime=rt)
        prog(0.0, "sampling")
        samples = measure_card(model, card, evidence_samples=s.evidence_samples, structure_digits=s.structure_digits,
                               progress=prog.bars)
        evidence = card["evidence"]
        make_grid(samples[:64], upscale=4).save(folder / "samples.png")
        write_card(folder, s.name or folder.name, card)
        return CardResult(settings=s, evidence=evidence)

    outputs = ()


FEATURE = Card()
