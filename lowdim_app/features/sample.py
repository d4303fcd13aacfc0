"""``sample``: images from pure noise with deterministic DDIM (eta = 0), seeded."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .base import Cost, Feature, Progress, Result, runtime_or_default
from .common import conditioning, load, model_setting, upscale_for
from .settings import Settings, seed_setting, setting


TEXT_ONLY = ("prompt", "guidance")   # the settings only text-to-image models use


@dataclass(frozen=True)
class SampleSettings(Settings):
    COMMAND = "sample"
    model: str = model_setting()
    n: int = setting(16, lo=1, hi=10_000, help="number of images", label="number of images")
    seed: int = seed_setting()
    steps: int = setting(50, lo=1, hi=1000, help="DDIM steps")
    prompt: str = setting("", help="prompt (text models only)")
    guidance: float = setting(7.5, lo=0.0, hi=30.0, help="classifier-free guidance scale (text models)")


@dataclass
class SampleResult(Result):
    samples: torch.Tensor | None = None   # N x C x H x W in [-1, 1]
    upscale: int = 1
    text_model: bool = True               # False: prompt and guidance do nothing (left out of the reproduce line)

    def reproduce(self, **kw) -> str:
        return self.settings.to_cli(omit=() if self.text_model else TEXT_ONLY, **kw)

    def images(self) -> dict:
        from ..data.images import make_grid

        return {"grid": make_grid(self.samples, upscale=self.upscale)}

    def numbers(self) -> dict:
        return {"shape": list(self.samples.shape)}

    def summary(self) -> str:
        s = self.settings
        return f"{s.n} samples, seed {s.seed}, {s.steps} DDIM steps"

    def write(self, out: str | Path) -> str:
        """A ``.png`` path (one grid) or a folder (one PNG per image)."""
        from ..data.images import to_pil

        out = Path(out)
        if out.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"):
            out.parent.mkdir(parents=True, exist_ok=True)
            self.images()["grid"].save(out)
            return f"wrote {out} ({self.summary()})"
        out.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(to_pil(self.samples)):
            img.save(out / f"sample_{i:04d}.png")
        return f"wrote {len(self.samples)} PNGs to {out}/ ({self.summary()})"


class Sample(Feature):
    name = "sample"
    help = "sample images with DDIM"
    Settings = SampleSettings

    def cost(self, s: SampleSettings, unet_config: dict | None = None) -> Cost:
        text_model = bool((unet_config or {}).get("cross_attention_dim"))
        cfg = 2 if text_model and s.guidance != 1.0 else 1
        return Cost(forward=s.n * s.steps * cfg, note="n x steps U-Net evaluations (x2 with guidance on text models)")

    def run(self, s: SampleSettings, *, runtime=None, progress=None, should_stop=None, model=None) -> SampleResult:
        prog = Progress.wrap(progress, should_stop)
        model = load(s.model, runtime_or_default(runtime), model)
        cond = conditioning(model, s.prompt, s.guidance)
        prog(0.0, "sampling")
        images = model.generate(s.n, seed=s.seed, steps=s.steps, cond=cond, progress=prog.bars,
                                step_callback=lambda i, t: prog.check())
        return SampleResult(settings=s, samples=images, upscale=upscale_for(model), text_model=bool(model.is_text))

    # CLI
    def add_output_arguments(self, p) -> None:
        p.add_argument("--out", default="grid.png", help="a .png path (one grid) or a folder (one PNG per image)")

    def write_outputs(self, result: SampleResult, args) -> list[str]:
        return [result.write(args.out)]


FEATURE = Sample()
