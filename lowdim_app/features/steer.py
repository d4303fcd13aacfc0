"""``steer``: representation steering with a strength sweep (Zhang et al. 2025, arXiv:2512.20963,
§4.2, eq. 11, App. B.3-B.4, Fig. 8).

The steering vector ``v`` is the mean U-Net representation of a concept set read at ``t~``; sampling
adds ``a * v`` to the same layers during the last ``window`` DDIM steps (with classifier-free guidance
on the conditional half only), once per strength ``a``, all from one source. The concept strength of
each steered sample is the disclosed digit classifier's probability of the class (``digit:K``) or the
CLIP similarity to the concept prompt (text models, when a CLIP model is available locally).

Seeds: ``source=seed:N`` is the source noise; ``seed`` draws everything else -- the images of a
``prompt:`` concept set and the noise that takes the concept images to ``t~``. The contrast pair (a
memorized and a generalized sample, Fig. 8) are fixed samples of the built-in model (noise seed 0).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..diffusion.hooks import get_module
from ..errors import UserError, check_range
from ..methods import steering as st
from .base import Cost, Feature, Progress, Result, csv_text, runtime_or_default
from .common import conditioning, load, model_setting, upscale_for
from .settings import SEED_MAX, Settings, seed_setting, setting

CONCEPT_HELP = ("digit:K (built-in digit models: training digits of class K minus all digits), prompt:TEXT "
                "(text models: images generated from TEXT), a folder of images, or image files")
SOURCE_FILE = "source.png"          # the name the UI gives an uploaded source image
DIGIT_CONCEPT_SHAPE = (1, 16, 16)
CONTRAST_ORDER = ("memorized", "generalized")
MAX_STRENGTH = st.MAX_STRENGTH


def concept_file_names(n: int) -> tuple[str, ...]:
    """The names the UI gives ``n`` uploaded concept images (and offers them under)."""
    return tuple(f"concept_{i:03d}.png" for i in range(n))


@dataclass(frozen=True)
class SteerSettings(Settings):
    COMMAND = "steer"
    model: str = model_setting()
    concept: tuple[str, ...] = setting((), help=CONCEPT_HELP, max_chars=1000)
    concept_n: int = setting(100, lo=1, hi=10_000, help="images in a digit:K or prompt:TEXT concept set "
                             "(Zhang et al. 2025, App. B.3: 100; a folder or files use all their images)")
    source: str = setting("seed:0", help="seed:N (sample from noise seed N) or an image (DDIM-inverted, then steered)",
                          max_chars=1000)
    strengths: tuple[float, ...] = setting((0.0, 2.0, 4.0, 6.0, 8.0), lo=-MAX_STRENGTH, hi=MAX_STRENGTH,
                                           max_items=16, range_style="linspace",
                                           help="steering strengths a (LO:HI:COUNT or A,B,C)")
    kind: str | None = setting(None, choices=("channel", "spatial"),
                               help="vector kind: channel (mean over H, W, the paper's) or spatial; "
                                    "auto: the model's recipe")
    layers: str = setting("", help="comma-separated U-Net module names ('': the recipe's)", max_chars=4000)
    t_tilde: int | None = setting(None, lo=0, hi=100_000, help="timestep of the concept features (auto: 10 of 1000)")
    steps: int | None = setting(None, lo=1, hi=1000, help="DDIM steps (auto: 40)")
    window: int | None = setting(None, lo=0, hi=1000, help="steer during the last W of the steps (auto: 20)")
    prompt: str = setting("", help="text models: the source prompt")
    guidance: float | None = setting(None, lo=0.0, hi=30.0, help="text models: classifier-free guidance scale (auto: 3.5)")
    contrast: bool = setting(False, help="digit:K on a built-in model: also steer a memorized and a generalized "
                                         "sample (Fig. 8)")
    seed: int = seed_setting(help="seed of a prompt: concept set and of the noise taking concept images to t~")

    def check(self) -> None:
        c = self.concept
        if not c:
            raise UserError("give a concept: digit:K, prompt:TEXT, a folder of images or image files")
        if self.digit is not None or self.concept_prompt is not None:
            if len(c) > 1:
                raise UserError(f"a {c[0].split(':', 1)[0]}: concept is one value, got {len(c)}")
            if self.digit is not None:
                check_range("digit class", self.digit, 0, 9)
            elif not self.concept_prompt.strip():
                raise UserError("enter the concept prompt (prompt:TEXT)")
        elif any(x.startswith(("digit:", "prompt:")) for x in c):
            raise UserError("a digit: or prompt: concept is one value, not mixed with files")
        src = self.source.strip()
        if not src:
            raise UserError("source must be seed:N or an image file")
        if src.startswith("seed:"):
            n = src[5:].strip()
            if not n.isdigit():
                raise UserError(f"source seed:N needs a whole number N, got {src!r}")
            check_range("source seed", int(n), 0, SEED_MAX)
        if self.steps is not None and self.window is not None and self.window > self.steps:
            raise UserError(f"window must be at most steps ({self.steps}), got {self.window}")

    @property
    def digit(self) -> int | None:
        head = self.concept[0] if self.concept else ""
        if not head.startswith("digit:"):
            return None
        k = head[6:].strip()
        if not k.lstrip("+-").isdigit():
            raise UserError(f"digit:K needs a whole number K, got {head!r}")
        return int(k)

    @property
    def concept_prompt(self) -> str | None:
        head = self.concept[0] if self.concept else ""
        return head[7:] if head.startswith("prompt:") else None

    @property
    def source_seed(self) -> int | None:
        return int(self.source.strip()[5:]) if self.source.strip().startswith("seed:") else None

    @property
    def layer_list(self) -> list[str]:
        return [x.strip() for x in self.layers.split(",") if x.strip()]


# ----------------------------------------------------------------------------- result
def _values(ys) -> list[float]:
    return np.round(np.asarray(ys, dtype=float), 4).tolist()


@dataclass
class SteerResult(Result):
    model_id: str = ""
    layers: list[str] = field(default_factory=list)
    kind: str = ""
    t_tilde: int = 0
    steps: int = 0
    window: int = 0
    cfg: float | None = None                     # text models: guidance scale while sampling
    n_concept: int = 0
    vector_norms: dict[str, float] = field(default_factory=dict)
    samples: torch.Tensor | None = None          # one steered sample per strength, pixels in [-1, 1]
    contrast: dict[str, tuple[int, torch.Tensor]] = field(default_factory=dict)  # label -> (index, samples)
    curves: dict[str, np.ndarray] = field(default_factory=dict)                  # legend label -> strength
    measure: str = ""
    ylabel: str = ""
    probability: bool = True
    concept_images: torch.Tensor | None = None   # the concept set, when it came from image files
    source_pixels: torch.Tensor | None = None    # the source image at the model's size, when not noise
    upscale: int = 1

    def contrast_label(self, label: str) -> str:
        return f"{label} sample (#{self.contrast[label][0]})"

    def numbers(self) -> dict:
        s = self.settings
        out = {"model": self.model_id, "layers": list(self.layers), "kind": self.kind, "t_tilde": self.t_tilde,
               "steps": self.steps, "window": self.window, "strengths": list(s.strengths),
               "vector_norms": dict(self.vector_norms),
               "concept": s.concept[0] if len(s.concept) == 1 else list(s.concept), "source": s.source}
        if "this source" in self.curves:
            out["concept_strength"] = {"measure": self.measure, "values": _values(self.curves["this source"])}
        if self.contrast:
            out["contrast"] = {label: {"sample_index": i, "values": _values(self.curves[self.contrast_label(label)])}
                               for label, (i, _) in self.contrast.items()}
        if self.notes:
            out["notes"] = list(self.notes)
        return out

    def images(self) -> dict:
        from ..data.images import make_grid

        n = len(self.settings.strengths)
        out = {"strip": make_grid(self.samples, nrow=n, upscale=self.upscale)}
        if self.contrast:
            rows = torch.cat([self.contrast[k][1] for k in CONTRAST_ORDER if k in self.contrast])
            out["contrast"] = make_grid(rows, nrow=n, upscale=self.upscale)
        return out

    def figure(self):
        from ..plots.steering import strength_curve_figure

        if not self.curves:
            return None
        return strength_curve_figure(self.settings.strengths, self.curves, self.ylabel, self.probability)

    def to_csv(self) -> str | None:
        if not self.curves:
            return None
        labels = list(self.curves)
        rows = [[a, *(float(self.curves[k][i]) for k in labels)] for i, a in enumerate(self.settings.strengths)]
        return csv_text(["a", *labels], rows)

    def summary(self) -> str:
        text = (f"{self.kind} vector from {self.n_concept} images at t~ = {self.t_tilde}, layers "
                f"{', '.join(self.layers)}; steering during the last {self.window} of {self.steps} DDIM steps"
                + (f", CFG {self.cfg:g} on the conditional half only" if self.cfg is not None else "") + ".")
        if self.notes:
            text += " " + " ".join(self.notes)
        if "this source" in self.curves:
            strengths = ", ".join(f"{a:g}" for a in self.settings.strengths)
            vals = ", ".join(f"{v:.3f}" for v in self.curves["this source"])
            text += f"\nConcept strength ({self.measure}) at a = {strengths}: {vals}"
        return text

    # -- files
    def write(self, out: str | Path) -> list[str]:
        """The command's folder: strip.png, steer.json, and contrast.png, curve.png, steer.csv where they exist."""
        from ..plots.common import to_pil as fig_to_pil

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        images = self.images()
        written = ["strip.png", "steer.json"]
        images["strip"].save(out / "strip.png")
        self.write_json(out / "steer.json")
        if "contrast" in images:
            images["contrast"].save(out / "contrast.png")
            written.append("contrast.png")
        if self.curves:
            fig_to_pil(self.figure()).save(out / "curve.png")
            self.write_csv(out / "steer.csv")
            written += ["curve.png", "steer.csv"]
        return [f"wrote {out}/{written[0]}, " + ", ".join(written[1:])]

    def write_inputs(self, folder: str | Path) -> list[Path]:
        """The image files the reproduce line names (concept images, source image) as PNGs in ``folder``:
        exactly the pixels that were used, so the command line reads back the same tensors."""
        from ..data.images import to_pil

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        if self.concept_images is not None:
            for name, img in zip(self.settings.concept, to_pil(self.concept_images)):
                img.save(folder / Path(name).name)
                paths.append(folder / Path(name).name)
        if self.source_pixels is not None:
            to_pil(self.source_pixels)[0].save(folder / Path(self.settings.source).name)
            paths.append(folder / Path(self.settings.source).name)
        return paths


# ----------------------------------------------------------------------------- inputs
def _stop_check(prog: Progress):
    """A sampler step callback that raises :class:`~.base.Cancelled` once the caller asked to stop."""
    return lambda _i, _t: prog.check()


@dataclass
class Concept:
    images: torch.Tensor
    baseline: torch.Tensor | None = None
    cbar: object = None                 # c_bar of eq. 11 (text models)
    target: int | None = None           # digit class
    text: str | None = None             # concept prompt
    from_files: bool = False
    notes: list[str] = field(default_factory=list)


def _pixels(model, source, what: str) -> torch.Tensor:
    """One image source (path, PIL, array, or a tensor at the model's size) -> ``1 x C x H x W``."""
    from ..data.images import load_image

    shape = tuple(model.image_shape)
    if isinstance(source, torch.Tensor):
        t = source if source.ndim == 4 else source.unsqueeze(0)
        if tuple(t.shape[1:]) != shape or len(t) != 1:
            raise UserError(f"{what}: a tensor image must be 1 x {' x '.join(map(str, shape))} for {model.model_id}, "
                            f"got {' x '.join(map(str, source.shape))}")
        return t.detach().float().cpu()
    return load_image(source, shape[1:], channels=shape[0])


def _batch(model, sources, what: str) -> torch.Tensor:
    if isinstance(sources, torch.Tensor) and sources.ndim == 4:
        sources = list(sources.split(1))
    if not isinstance(sources, (list, tuple)):
        sources = [sources]
    if not sources:
        raise UserError(f"{what}: no images")
    return torch.cat([_pixels(model, s, what) for s in sources])


def _concept(model, s: SteerSettings, recipe: dict, images, prog: Progress) -> Concept:
    from ..data.images import load_folder

    if s.digit is not None:
        if images is not None:
            raise UserError("concept images were given but the concept is digit:K")
        if model.is_text or tuple(model.image_shape) != DIGIT_CONCEPT_SHAPE:
            raise UserError("digit:K concepts are for the built-in digit models")
        concept, baseline = st.digit_concept(s.digit, s.concept_n)
        return Concept(concept, baseline=baseline, target=s.digit)
    if s.concept_prompt is not None:
        if images is not None:
            raise UserError("concept images were given but the concept is prompt:TEXT")
        if not model.is_text:
            raise UserError("prompt: concepts need a text model (e.g. CompVis/stable-diffusion-v1-4); "
                            "use digit:K or images")
        text = s.concept_prompt
        gen = model.encode_prompt(text, guidance_scale=recipe["guidance_scale"])
        concept = model.generate(s.concept_n, seed=s.seed, steps=recipe["steps"], cond=gen, progress=prog.bars,
                                 step_callback=_stop_check(prog))
        return Concept(concept, cbar=model.encode_prompt(text), text=text)
    if images is not None:
        batch = _batch(model, images, "concept images")
        if len(batch) != len(s.concept):
            raise UserError(f"{len(batch)} concept images for {len(s.concept)} concept file names")
        return Concept(batch, from_files=True)
    if len(s.concept) == 1 and Path(s.concept[0]).is_dir():
        batch, _, problems = load_folder(s.concept[0], model.image_shape[1], model.image_shape[0])
        return Concept(batch, notes=[f"Skipped {p}." for p in problems])
    for p in s.concept:
        if not Path(p).is_file():
            raise UserError(f"concept {p!r} is not digit:K, prompt:TEXT, a folder or an image file")
    return Concept(_batch(model, list(s.concept), "concept images"), from_files=True)


def _source_pixels(model, s: SteerSettings, image) -> torch.Tensor | None:
    """The source image at the model's size, or ``None`` for a ``seed:N`` source."""
    if s.source_seed is not None:
        if image is not None:
            raise UserError(f"a source image was given but the source is {s.source}")
        return None
    if image is None:
        if not Path(s.source).is_file():
            raise UserError(f"source {s.source!r} is neither seed:N nor an image file")
        image = s.source
    return _pixels(model, image, "source image")


# ----------------------------------------------------------------------------- the feature
class Steer(Feature):
    name = "steer"
    help = "steer generation by adding a representation vector (Zhang et al. 2025, eq. 11)"
    Settings = SteerSettings

    def cost(self, s: SteerSettings) -> Cost:
        """U-Net evaluations (one per sample) at the recipe's defaults where a setting is auto (40 steps).
        Every model but the built-in digit models counts as a text model, with CFG doubling each sampling
        step; a folder concept counts as ``concept_n`` images. Exact otherwise, except for the contrast,
        whose search for the pair stops early (upper bound)."""
        from ..diffusion.registry import BUILTIN_MODELS

        steps = 40 if s.steps is None else s.steps
        text = s.concept_prompt is not None or s.model.strip() not in BUILTIN_MODELS
        cfg = 2 if text and (s.guidance is None or s.guidance != 1.0) else 1
        n = len(s.strengths)
        if s.digit is not None:
            images, baseline = st.digit_concept(s.digit, s.concept_n)
            concept = len(images) + len(baseline)           # class images + the all-digits baseline
        elif s.concept_prompt is not None:
            concept = s.concept_n * (40 * 2 + 1)            # generate with CFG, then one feature pass each
        elif len(s.concept) == 1 and Path(s.concept[0]).is_dir():
            concept = s.concept_n                           # a folder: estimated at concept_n images
        else:
            concept = len(s.concept)                        # image files
        forward = concept + n * steps * cfg + (0 if s.source_seed is not None else steps * cfg)
        if s.contrast and s.digit is not None:
            forward += 48 * 40 + 2 * n * steps              # at most: find the pair, then steer both
        return Cost(forward=forward, note="concept features + strengths x steps (x2 with CFG) "
                                          "+ inversion of an image source + the contrast pair")

    def run(self, s: SteerSettings, *, runtime=None, progress=None, should_stop=None, model=None,
            concept_images=None, source_image=None) -> SteerResult:
        """``concept_images``: the images of a file concept (paths, PIL, arrays or tensors) when the
        caller already holds them (the UI); ``source_image``: likewise for an image source. The
        settings name the files those images are saved as (:meth:`SteerResult.write_inputs`)."""
        from ..methods.clip_score import load_clip

        prog = Progress.wrap(progress, should_stop)
        rt = runtime_or_default(runtime)
        prog(0.0, "loading the model")
        model = load(s.model, rt, model)
        d_layers, recipe = st.default_recipe(model)
        layers = s.layer_list or d_layers
        kind = s.kind or recipe["kind"]
        steps = recipe["steps"] if s.steps is None else s.steps
        window = recipe["window"] if s.window is None else s.window
        guidance = recipe["guidance_scale"] if s.guidance is None else s.guidance
        step = _stop_check(prog)

        t_start = model.num_train_timesteps - 1
        check_range("steering window", window, 0, len(model.timesteps(t_start, steps)))
        for layer in layers:
            get_module(model.unet, layer)
        cond = conditioning(model, s.prompt, guidance)
        pixels = _source_pixels(model, s, source_image)

        prog(0.05, "concept set")
        concept = _concept(model, s, recipe, concept_images, prog)
        prog(0.3, "steering vector")
        sv = st.steering_vector(model, concept.images, layers, s.t_tilde, kind, concept.cbar, concept.baseline, s.seed,
                                step_callback=step)
        if pixels is None:
            x_T = model.randn(1, s.source_seed)
        else:
            prog(0.4, "inverting the source image (DDIM)")
            x_T = model.ddim_invert(model.encode(pixels), t_start, steps, cond, progress=prog.bars)
        prog(0.45, "steering")
        samples = st.steered_samples(model, x_T, sv, s.strengths, t_start, steps, window, cond,
                                     progress=prog.bars, step_callback=step)

        res = SteerResult(settings=s, model_id=model.model_id, layers=list(layers), kind=sv.kind, t_tilde=sv.t_tilde,
                          steps=steps, window=window, cfg=guidance if cond is not None and cond.uses_cfg else None,
                          n_concept=sv.n_images, vector_norms=sv.norms(), samples=samples,
                          concept_images=concept.images if concept.from_files else None, source_pixels=pixels,
                          upscale=upscale_for(model, 96), notes=list(concept.notes))
        if concept.target is not None:
            res.curves["this source"] = st.concept_strength_digits(samples, concept.target)
            res.measure = f"classifier probability of digit {concept.target}"
            res.ylabel = f"P(digit {concept.target}) (logistic-regression classifier)"
        elif concept.text is not None:
            scorer = load_clip(rt.clip)
            if scorer is None:
                res.notes.append("No CLIP model available locally (LOWDIM_CLIP), so no concept-strength curve.")
            else:
                prog(0.8, "CLIP similarity")
                res.curves["this source"] = scorer.similarity(samples, concept.text)
                res.measure = f"CLIP cosine similarity to {concept.text!r} ({scorer.source})"
                res.ylabel, res.probability = f"CLIP similarity to '{concept.text[:40]}'", False
        if s.contrast:
            self._contrast(model, s, res, sv, concept, steps, window, prog)
        prog(1.0, "done")
        return res

    @staticmethod
    def _contrast(model, s, res: SteerResult, sv, concept: Concept, steps: int, window: int, prog) -> None:
        """Steer a memorized and a generalized sample of a built-in model the same way (Fig. 8)."""
        if concept.target is None:
            res.notes.append("The contrast needs a digit:K concept; skipped.")
            return
        if not model.card.get("train_index"):
            res.notes.append(f"{model.model_id} has no training index, so no contrast.")
            return
        prog(0.6, "contrast: a memorized and a generalized sample")
        step = _stop_check(prog)
        sources = st.contrast_sources(model, avoid_class=concept.target, step_callback=step)
        for label in CONTRAST_ORDER:
            if label not in sources:
                res.notes.append(f"No {label} sample among the model's first 48; that contrast row is missing.")
                continue
            i, noise = sources[label]
            im = st.steered_samples(model, noise, sv, s.strengths, model.num_train_timesteps - 1, steps, window,
                                    progress=prog.bars, step_callback=step)
            res.contrast[label] = (i, im)
            res.curves[res.contrast_label(label)] = st.concept_strength_digits(im, concept.target)

    # CLI
    def add_output_arguments(self, p) -> None:
        p.add_argument("--out", default="steer_out",
                       help="folder for strip.png, steer.json, contrast.png, curve.png, steer.csv (default: steer_out)")

    def write_outputs(self, result: SteerResult, args) -> list[str]:
        return [result.summary(), *result.write(args.out)]


FEATURE = Steer()
