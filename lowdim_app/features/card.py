"""``card``: re-measure a built-in digits model's regime evidence (near-copy share, classifier
confidence, duplicated-subset enrichment) and rewrite its model card."""
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
        return Cost(forward=s.evidence_samples * 50, note="evidence samples x 50 DDIM steps")

    def run(self, s: CardSettings, *, runtime=None, progress=None, should_stop=None) -> CardResult:
        from ..data.images import make_grid
        from ..diffusion.registry import load_model, resolve
        from ..methods.model_card import regime_evidence, write_card

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
        evidence, samples = regime_evidence(model, card, n_samples=s.evidence_samples)
        card["evidence"] = evidence
        make_grid(samples[:64], upscale=4).save(folder / "samples.png")
        write_card(folder, s.name or folder.name, card)
        return CardResult(settings=s, evidence=evidence)

    outputs = ()


FEATURE = Card()
