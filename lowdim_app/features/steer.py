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

Budget: a vector is computed once. ``vector`` (CLI ``--vector FILE``) applies a saved one (CLI
``--save-vector FILE``, the tab's download) and skips the concept set; in a process, vectors of
``digit:``/``prompt:`` concepts are kept in :data:`~lowdim_app.methods.steering.CONCEPT_CACHE`. A
``prompt:`` concept set is generated with ``concept_steps`` DDIM steps per image (auto:
``min(steps, CONCEPT_STEPS)``) and the request's guidance, one image at a time (progress and stop
between images), and VAE-encoded in slices.
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
from .score import MAX_IMAGE_MB
from .settings import SEED_MAX, FileRef, Settings, file_texts, seed_setting, setting

CONCEPT_HELP = ("digit:K (built-in digit models: training digits of class K minus all digits), prompt:TEXT "
                "(text models: images generated from TEXT), a folder of images, or image files; "
                "leave it out with --vector (the file names its concept)")
SOURCE_FILE = "source.png"          # the name a library caller's in-memory source image is saved under
MAX_VECTOR_MB = 64                  # a saved steering vector (an SD v1.4 recipe vector is ~2 MB)
DIGIT_CONCEPT_SHAPE = (1, 16, 16)
CONTRAST_ORDER = ("memorized", "generalized")
MAX_STRENGTH = st.MAX_STRENGTH
DIGIT_CONCEPT_N = st.DIGITS_RECIPE["concept_n"]      # training digits of the class (App. B.3: 100 images)
PROMPT_CONCEPT_N = st.SD_RECIPE["concept_n"]         # generated images of a prompt concept (measured)
CONCEPT_STEPS = st.SD_RECIPE["concept_steps"]        # DDIM steps per generated concept image, at most (measured)
VECTOR_FILE = "steering_vector.safetensors"          # the name the UI offers a computed vector under


def concept_file_names(n: int) -> tuple[str, ...]:
    """The names ``n`` in-memory concept images of a library caller are saved under."""
    return tuple(f"concept_{i:03d}.png" for i in range(n))


@dataclass(frozen=True)
class SteerSettings(Settings):
    COMMAND = "steer"
    model: str = model_setting()
    concept: tuple[FileRef | str, ...] = setting((), help=CONCEPT_HELP, max_chars=1000, keywords=("digit:", "prompt:"),
                                                 max_mb=MAX_IMAGE_MB)
    concept_n: int | None = setting(None, lo=1, hi=10_000, help="images in a digit:K or prompt:TEXT concept set "
                                    f"(auto: {DIGIT_CONCEPT_N} for digit:K as in Zhang et al. 2025, App. B.3; "
                                    f"{PROMPT_CONCEPT_N} for prompt:TEXT, see bench/steering_concept.py; "
                                    "a folder or files use all their images)")
    concept_steps: int | None = setting(None, lo=1, hi=1000, help="DDIM steps per generated prompt:TEXT concept "
                                        f"image (auto: min(steps, {CONCEPT_STEPS}); the paper: 40)")
    vector: FileRef | None = setting(None, help="a saved steering vector (.safetensors from --save-vector or the "
                                                "Steer tab): used instead of computing one (no concept set)",
                                     max_chars=1000, max_mb=MAX_VECTOR_MB)
    source: FileRef | str = setting("seed:0", help="seed:N (sample from noise seed N) or an image (DDIM-inverted to "
                                                   "where steering starts, then steered)",
                                    max_chars=1000, keywords=("seed:",), max_mb=MAX_IMAGE_MB)
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
    contrast: bool = setting(False, help="digit:K on a built-in model: also steer a memorized sample of digits-mem "
                                         "and a generalized one of digits-gen, each with its own model's vector "
                                         "(Fig. 8)")
    seed: int = seed_setting(help="seed of a prompt: concept set and of the noise taking concept images to t~")

    def check(self) -> None:
        c = self.concept
        if not c:
            if self.vector is None:
                raise UserError("give a concept: digit:K, prompt:TEXT, a folder of images or image files")
            self._check_source_and_window()
            return
        if self.digit is not None or self.concept_prompt is not None:
            if len(c) > 1:
                raise UserError(f"a {c[0].split(':', 1)[0]}: concept is one value, got {len(c)}")
            if self.digit is not None:
                check_range("digit class", self.digit, 0, 9)
            elif not self.concept_prompt.strip():
                raise UserError("enter the concept prompt (prompt:TEXT)")
        elif any(isinstance(x, str) for x in c):
            raise UserError("a digit: or prompt: concept is one value, not mixed with files")
        if self.concept_n is None and (self.digit is not None or self.concept_prompt is not None):
            # auto is resolved here, so the reproduce line spells out the number of images used
            object.__setattr__(self, "concept_n", DIGIT_CONCEPT_N if self.digit is not None else PROMPT_CONCEPT_N)
        self._check_source_and_window()

    def _check_source_and_window(self) -> None:
        src = self.source
        if isinstance(src, str):
            n = src[5:].strip()
            if not n.isdigit():
                raise UserError(f"source seed:N needs a whole number N, got {src!r}")
            check_range("source seed", int(n), 0, SEED_MAX)
        if self.steps is not None and self.window is not None and self.window > self.steps:
            raise UserError(f"window must be at most steps ({self.steps}), got {self.window}")

    @property
    def digit(self) -> int | None:
        head = self.concept[0] if self.concept else ""
        if not isinstance(head, str) or not head.startswith("digit:"):
            return None
        k = head[6:].strip()
        if not k.lstrip("+-").isdigit():
            raise UserError(f"digit:K needs a whole number K, got {head!r}")
        return int(k)

    @property
    def concept_prompt(self) -> str | None:
        head = self.concept[0] if self.concept else ""
        return head[7:] if isinstance(head, str) and head.startswith("prompt:") else None

    @property
    def reads_files(self) -> bool:
        """Whether the run reads files: concept images, a source image or a saved vector."""
        return (self.vector is not None or isinstance(self.source, FileRef)
                or any(isinstance(c, FileRef) for c in self.concept))

    @property
    def source_seed(self) -> int | None:
        return int(self.source[5:]) if isinstance(self.source, str) else None

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
    contrast_models: dict[str, str] = field(default_factory=dict)                 # label -> the model sampled
    curves: dict[str, np.ndarray] = field(default_factory=dict)                  # legend label -> strength
    # the contrast measured over many samples of this model and target (bench/steer_contrast.py): label ->
    # {"strengths", "p_median", "p_q25", "p_q75", "n", ...}; drawn behind the contrast curves
    contrast_reference: dict = field(default_factory=dict)
    measure: str = ""
    ylabel: str = ""
    probability: bool = True
    concept_images: torch.Tensor | None = None   # the concept set, when it came from image files
    source_pixels: torch.Tensor | None = None    # the source image at the model's size, when not noise
    upscale: int = 1
    vector: st.SteeringVector | None = None      # the vector used (shared with the process cache: read only)
    vector_source: str = "computed"              # computed | cache | file

    @property
    def concept_spec(self) -> tuple[str, ...]:
        """The concept of the vector used: the settings', or the saved vector's under ``--vector``."""
        if self.settings.concept or self.vector is None:
            return file_texts(self.settings.concept)
        return tuple(self.vector.concept)

    def contrast_label(self, label: str) -> str:
        model = self.contrast_models.get(label)
        index = self.contrast[label][0]
        return f"{label} sample ({model} #{index})" if model else f"{label} sample (#{index})"

    def numbers(self) -> dict:
        s = self.settings
        out = {"model": self.model_id, "layers": list(self.layers), "kind": self.kind, "t_tilde": self.t_tilde,
               "steps": self.steps, "window": self.window, "strengths": list(s.strengths),
               "vector_norms": dict(self.vector_norms),
               "concept": self.concept_spec[0] if len(self.concept_spec) == 1 else list(self.concept_spec),
               "source": str(s.source)}
        if self.vector is not None:
            v = self.vector
            out["vector"] = {"from": self.vector_source, "n_images": v.n_images, "concept_n": v.concept_n,
                             "seed": v.seed, "concept_steps": v.concept_steps, "guidance": v.guidance}
        if "this source" in self.curves:
            out["concept_strength"] = {"measure": self.measure, "values": _values(self.curves["this source"])}
        if self.contrast:
            out["contrast"] = {label: {"sample_index": i, "values": _values(self.curves[self.contrast_label(label)])}
                               for label, (i, _) in self.contrast.items()}
            for label, model in self.contrast_models.items():
                out["contrast"][label]["model"] = model
        if self.contrast_reference:
            out["contrast_reference"] = self.contrast_reference
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
        return strength_curve_figure(self.settings.strengths, self.curves, self.ylabel, self.probability,
                                     reference=self.contrast_reference)

    def to_csv(self) -> str | None:
        if not self.curves:
            return None
        labels = list(self.curves)
        rows = [[a, *(float(self.curves[k][i]) for k in labels)] for i, a in enumerate(self.settings.strengths)]
        return csv_text(["a", *labels], rows)

    def summary(self) -> str:
        v = self.vector
        made = (f" ({v.concept_steps} DDIM steps each" + (f", CFG {v.guidance:g}" if v.guidance not in (None, 1.0) else "") + ")"
                if v is not None and v.concept_steps is not None else "")
        text = (f"{self.kind} vector from {self.n_concept} images{made} at t~ = {self.t_tilde}, layers "
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

    def save_vector(self, path: str | Path) -> Path:
        """The steering vector used, as a ``.safetensors`` file (``--vector`` applies it again)."""
        if self.vector is None:
            raise UserError("this result holds no steering vector")
        return self.vector.save(path)

    def write_inputs(self, folder: str | Path) -> list[Path]:
        """The files the reproduce line names (concept images and source image as PNGs, a saved vector as
        .safetensors) in ``folder``: exactly what was used, so the command line reads back the same tensors."""
        from ..data.images import to_pil

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        if self.concept_images is not None:
            for name, img in zip(file_texts(self.settings.concept), to_pil(self.concept_images)):
                img.save(folder / Path(name).name)
                paths.append(folder / Path(name).name)
        if self.source_pixels is not None:
            to_pil(self.source_pixels)[0].save(folder / Path(str(self.settings.source)).name)
            paths.append(folder / Path(str(self.settings.source)).name)
        if self.settings.vector and self.vector is not None:
            paths.append(self.save_vector(folder / Path(str(self.settings.vector)).name))
        return paths


CONTRAST_REFERENCE = "steer_contrast.json"     # in <assets>/calibrations, written by bench/steer_contrast.py


def contrast_reference(assets: Path | None, target: int, models: dict[str, str] | None = None) -> dict:
    """The contrast measured over many memorized and generalized samples (``bench/steer_contrast.py
    --reference``): label -> median and quartile curves of P(target) over the strengths, of the model that
    gives that label's samples (``models``, default :data:`~lowdim_app.methods.steering.CONTRAST_MODELS`);
    a label is left out where none was measured for its model and this target."""
    import json

    path = Path(assets or "") / "calibrations" / CONTRAST_REFERENCE
    if assets is None or not path.is_file():
        return {}
    ref = json.loads(path.read_text())
    out = {}
    for label, model_id in (models or st.CONTRAST_MODELS).items():
        c = ref.get("curves", {}).get(model_id, {}).get(str(int(target)), {}).get(label)
        if c:
            out[label] = {"strengths": ref["strengths"], "model": model_id, **c}
    return out


def _contrast_vector(model, sv: st.SteeringVector, target: int, prog: Progress) -> st.SteeringVector:
    """The ``digit:target`` vector of ``sv``'s recipe (layers, kind, t~, concept images, seed) on another
    built-in model, from this process's concept cache."""
    n = sv.concept_n or DIGIT_CONCEPT_N
    key = st.cache_key(model.model_id, (f"digit:{int(target)}",), n, sv.layers, sv.t_tilde, sv.kind, sv.seed or 0)

    def compute() -> st.SteeringVector:
        images, baseline = st.digit_concept(target, n)
        v = st.steering_vector(model, images, sv.layers, sv.t_tilde, sv.kind, baseline=baseline, seed=sv.seed or 0,
                               step_callback=_stop_check(prog))
        v.concept, v.concept_n = (f"digit:{int(target)}",), n
        return v

    return st.CONCEPT_CACHE.get_or_compute(key, compute, wait_check=prog.check)[0]


# ----------------------------------------------------------------------------- inputs
def _stop_check(prog: Progress):
    """A sampler step callback that raises :class:`~.base.Cancelled` once the caller asked to stop."""
    return lambda _i, _t: prog.check()


@dataclass
class Concept:
    images: torch.Tensor | None         # None: the vector came from the cache or a file
    baseline: torch.Tensor | None = None
    cbar: object = None                 # c_bar of eq. 11 (text models)
    target: int | None = None           # digit class
    text: str | None = None             # concept prompt
    from_files: bool = False
    notes: list[str] = field(default_factory=list)


def _spec_concept(spec: tuple[str, ...]) -> Concept:
    """What a concept spec says without its images (the class or prompt a cached or saved vector is of)."""
    head = spec[0] if len(spec) == 1 else ""
    digit = head[6:].strip() if head.startswith("digit:") else ""
    return Concept(None, target=int(digit) if digit.lstrip("+-").isdigit() else None,
                   text=head[7:] if head.startswith("prompt:") else None)


@dataclass(frozen=True)
class VectorPlan:
    """What a request's vector is computed with, auto settings resolved (the same in ``cost`` and ``run``)."""

    layers: tuple[str, ...]
    kind: str
    t_tilde: int
    concept_steps: int | None           # prompt: concepts only
    guidance: float | None              # prompt: concepts only: CFG while generating the concept images

    @classmethod
    def of(cls, s: SteerSettings, layers: list[str], recipe: dict) -> "VectorPlan":
        prompt = s.concept_prompt is not None
        steps = recipe["steps"] if s.steps is None else s.steps
        auto_steps = min(steps, recipe.get("concept_steps", steps))
        return cls(tuple(s.layer_list or layers), s.kind or recipe["kind"],
                   recipe["t_tilde"] if s.t_tilde is None else s.t_tilde,
                   (s.concept_steps or auto_steps) if prompt else None,
                   (recipe["guidance_scale"] if s.guidance is None else s.guidance) if prompt else None)

    def key(self, model_id: str, s: SteerSettings) -> tuple | None:
        """The concept cache key; ``None`` for image files and folders (their content is not in the settings)."""
        if s.digit is None and s.concept_prompt is None:
            return None
        return st.cache_key(model_id, s.concept, s.concept_n, self.layers, self.t_tilde, self.kind, s.seed,
                            self.concept_steps, self.guidance)


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


def _concept(model, s: SteerSettings, plan: VectorPlan, images, prog: Progress) -> Concept:
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
        gen = model.encode_prompt(text, guidance_scale=plan.guidance)

        def on_image(done: int, n: int) -> None:        # raises Cancelled between images when asked to stop
            prog(0.05 + 0.2 * done / n, f"concept image {done}/{n} generated")

        concept = st.generate_concept(model, gen, s.concept_n, s.seed, plan.concept_steps, on_image=on_image,
                                      step_callback=_stop_check(prog), progress=prog.bars)
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
            raise UserError(f"concept {str(p)!r} is not digit:K, prompt:TEXT, a folder or an image file")
    return Concept(_batch(model, list(s.concept), "concept images"), from_files=True)


def _saved_vector(model, s: SteerSettings, vector) -> st.SteeringVector:
    """The vector of ``--vector`` (or the one the caller holds), checked against the model and the settings."""
    name = Path(str(s.vector)).name if s.vector else "the steering vector"
    if vector is None:
        if not Path(s.vector).is_file():
            raise UserError(f"vector {str(s.vector)!r} is not a file (a .safetensors saved by steer --save-vector)")
        vector = s.vector.path
    sv = vector if isinstance(vector, st.SteeringVector) else st.SteeringVector.load(vector)
    sv.check_compatible(model, s.layer_list or None, s.kind, s.t_tilde, name=name)
    if s.concept and file_texts(s.concept) != tuple(sv.concept):
        raise UserError(f"{name} is a vector of {', '.join(sv.concept) or 'an unnamed concept'}, not "
                        f"{', '.join(file_texts(s.concept))}; leave the concept out with a saved vector")
    return sv


def _source_pixels(model, s: SteerSettings, image) -> torch.Tensor | None:
    """The source image at the model's size, or ``None`` for a ``seed:N`` source."""
    if s.source_seed is not None:
        if image is not None:
            raise UserError(f"a source image was given but the source is {s.source}")
        return None
    if image is None:
        if not Path(s.source).is_file():
            raise UserError(f"source {str(s.source)!r} is neither seed:N nor an image file")
        image = s.source
    return _pixels(model, image, "source image")


# ----------------------------------------------------------------------------- the feature
class Steer(Feature):
    name = "steer"
    help = "steer generation by adding a representation vector (Zhang et al. 2025, eq. 11)"
    Settings = SteerSettings

    def cost(self, s: SteerSettings, unet_config: dict | None = None) -> Cost:
        """U-Net evaluations (one per sample) at the recipe's defaults where a setting is auto (40 steps).
        A text model (``unet_config`` with cross-attention; without a config every model but the built-in
        digit models) doubles each sampling step with CFG. The concept part: a ``prompt:`` set costs
        ``concept_n x concept_steps x (2 with CFG)`` to generate plus one feature pass per image; ``digit:K``
        one pass per class image and per baseline image; files one pass each, a folder estimated at
        ``concept_n`` (auto: 100) images; **0** with ``--vector`` or when this process has the vector cached.
        Exact otherwise, except for the contrast (upper bound: its vectors may be cached, its search for the
        samples stops early)."""
        from ..diffusion.registry import BUILTIN_MODELS

        if unet_config:
            text = bool(unet_config.get("cross_attention_dim"))
        else:
            text = s.concept_prompt is not None or s.model.strip() not in BUILTIN_MODELS
        layers, recipe = st.recipe_for(text)
        plan = VectorPlan.of(s, layers, recipe)
        steps = recipe["steps"] if s.steps is None else s.steps
        guidance = recipe["guidance_scale"] if s.guidance is None else s.guidance
        cfg = 2 if text and guidance != 1.0 else 1
        n = len(s.strengths)
        run = steps
        if s.source_seed is None:      # an image: inverted to where steering starts, sampled from there
            run = min(recipe["window"] if s.window is None else s.window, steps) or steps
        forward = self.concept_cost(s, plan) + n * run * cfg + (0 if s.source_seed is not None else run * cfg)
        if s.contrast and (s.digit is not None or (s.vector and not text)):
            # at most: the concept's vector on each contrast model but this one, find each sample, steer both
            images, baseline = st.digit_concept(s.digit or 0, s.concept_n or DIGIT_CONCEPT_N)
            others = sum(m != s.model.strip() for m in st.CONTRAST_MODELS.values())
            forward += others * (len(images) + len(baseline)) + len(CONTRAST_ORDER) * (48 * 40 + n * steps)
        return Cost(forward=forward, note="concept set (0 with a saved or cached vector) + strengths x steps "
                                          "(x2 with CFG; an image source: window steps, and as many to invert it) + "
                                          "the contrast pair")

    @staticmethod
    def concept_cost(s: SteerSettings, plan: VectorPlan) -> int:
        """U-Net evaluations of the concept part alone (see :meth:`cost`)."""
        if s.vector:
            return 0
        key = plan.key(s.model.strip(), s)
        if key is not None and key in st.CONCEPT_CACHE:
            return 0
        if s.digit is not None:
            images, baseline = st.digit_concept(s.digit, s.concept_n)
            return len(images) + len(baseline)              # class images + the all-digits baseline
        if s.concept_prompt is not None:
            cfg = 2 if plan.guidance != 1.0 else 1
            return s.concept_n * (plan.concept_steps * cfg + 1)   # generate (with CFG), then one feature pass each
        if len(s.concept) == 1 and Path(s.concept[0]).is_dir():
            return s.concept_n or DIGIT_CONCEPT_N           # a folder: estimated
        return len(s.concept)                               # image files

    def run(self, s: SteerSettings, *, runtime=None, progress=None, should_stop=None, model=None,
            concept_images=None, source_image=None, vector=None) -> SteerResult:
        """``concept_images``: the images of a file concept (paths, PIL, arrays or tensors) when the
        caller already holds them (the UI); ``source_image``: likewise for an image source; ``vector``: a
        saved vector (a path or a :class:`~lowdim_app.methods.steering.SteeringVector`) for ``s.vector``.
        The settings name the files those inputs are saved as (:meth:`SteerResult.write_inputs`)."""
        from ..methods.clip_score import load_clip

        prog = Progress.wrap(progress, should_stop)
        rt = runtime_or_default(runtime)
        prog(0.0, "loading the model")
        model = load(s.model, rt, model)
        d_layers, recipe = st.default_recipe(model)
        plan = VectorPlan.of(s, d_layers, recipe)
        steps = recipe["steps"] if s.steps is None else s.steps
        window = recipe["window"] if s.window is None else s.window
        guidance = recipe["guidance_scale"] if s.guidance is None else s.guidance
        step = _stop_check(prog)

        t_start = model.num_train_timesteps - 1
        check_range("steering window", window, 0, len(model.timesteps(t_start, steps)))
        for layer in plan.layers:
            get_module(model.unet, layer)
        cond = conditioning(model, s.prompt, guidance)
        pixels = _source_pixels(model, s, source_image)

        if s.vector or vector is not None:
            if concept_images is not None:
                raise UserError("concept images were given but a saved vector is applied")
            sv, source = _saved_vector(model, s, vector), "file"
            concept = _spec_concept(sv.concept)
            concept.notes.append(f"Vector from {Path(str(s.vector)).name if s.vector else 'a saved file'} "
                                 f"({', '.join(sv.concept) or 'unnamed concept'}, seed {sv.seed}).")
        else:
            sv, concept, source = self._vector(model, s, plan, concept_images, prog)
        if pixels is None:
            x, t_from, n_steps, n_window = model.randn(1, s.source_seed), t_start, steps, window
        else:
            prog(0.4, "inverting the source image (DDIM)")
            x, t_from, n_steps, n_window = st.invert_source(model, model.encode(pixels), t_start, steps, window, cond,
                                                            progress=prog.bars)
        prog(0.45, "steering")
        samples = st.steered_samples(model, x, sv, s.strengths, t_from, n_steps, n_window, cond,
                                     progress=prog.bars, step_callback=step)

        res = SteerResult(settings=s, model_id=model.model_id, layers=sv.layers, kind=sv.kind, t_tilde=sv.t_tilde,
                          steps=steps, window=window, cfg=guidance if cond is not None and cond.uses_cfg else None,
                          n_concept=sv.n_images, vector_norms=sv.norms(), samples=samples,
                          concept_images=concept.images if concept.from_files else None, source_pixels=pixels,
                          upscale=upscale_for(model, 96), notes=list(concept.notes), vector=sv, vector_source=source)
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
            self._contrast(model, s, res, sv, concept, steps, window, prog, rt)
        prog(1.0, "done")
        return res

    @staticmethod
    def _vector(model, s: SteerSettings, plan: VectorPlan, images, prog: Progress):
        """``(vector, concept, "computed" | "cache")``: from this process's cache for ``digit:``/``prompt:``
        concepts (computed once, also under concurrent requests), else computed here."""
        computed: dict = {}

        def compute() -> st.SteeringVector:
            prog(0.05, "concept set")
            concept = computed["concept"] = _concept(model, s, plan, images, prog)
            prog(0.25, "steering vector")
            sv = st.steering_vector(model, concept.images, list(plan.layers), plan.t_tilde, plan.kind, concept.cbar,
                                    concept.baseline, s.seed, step_callback=_stop_check(prog),
                                    on_encoded=lambda done, n: prog(0.25 + 0.15 * done / n,
                                                                    f"concept images encoded {done}/{n}"))
            sv.concept, sv.concept_steps, sv.guidance = file_texts(s.concept), plan.concept_steps, plan.guidance
            sv.concept_n = s.concept_n if plan.key(model.model_id, s) is not None else None
            return sv

        key = plan.key(model.model_id, s)
        if key is None:
            sv = compute()
            return sv, computed["concept"], "computed"
        sv, hit = st.CONCEPT_CACHE.get_or_compute(key, compute, wait_check=prog.check)
        if not hit:
            return sv, computed["concept"], "computed"
        concept = _spec_concept(sv.concept)
        concept.notes.append("Vector reused from this process's cache (same model, concept, images, layers, t~, "
                             "kind, seed and concept steps).")
        return sv, concept, "cache"

    @staticmethod
    def _contrast(model, s, res: SteerResult, sv, concept: Concept, steps: int, window: int, prog, rt) -> None:
        """Fig. 8 on the built-in models: a memorized sample of digits-mem and a generalized sample of digits-gen
        (:data:`~lowdim_app.methods.steering.CONTRAST_MODELS`, where bench/steer_contrast.py measures the
        contrast), each steered at the run's strengths with the vector of the same concept, layers, kind and
        t~ computed on its own model."""
        if concept.target is None:
            res.notes.append("The contrast needs a digit:K concept; skipped.")
            return
        if not model.card.get("train_index"):
            res.notes.append(f"{model.model_id} has no training index, so no contrast.")
            return
        prog(0.6, "contrast: a memorized and a generalized sample")
        step = _stop_check(prog)
        for label in CONTRAST_ORDER:
            model_id = st.CONTRAST_MODELS[label]
            try:
                m = model if model.model_id == model_id else load(model_id, rt)
                v = sv if sv.model_id == m.model_id else _contrast_vector(m, sv, concept.target, prog)
            except UserError as e:
                res.notes.append(f"No {label} contrast row: {e}")
                continue
            found = st.contrast_sources(m, avoid_class=concept.target, step_callback=step, labels=(label,))
            if label not in found:
                res.notes.append(f"No {label} sample among {model_id}'s first 48; that contrast row is missing.")
                continue
            i, noise = found[label]
            im = st.steered_samples(m, noise, v, s.strengths, m.num_train_timesteps - 1, steps, window,
                                    progress=prog.bars, step_callback=step)
            res.contrast[label], res.contrast_models[label] = (i, im), model_id
            res.curves[res.contrast_label(label)] = st.concept_strength_digits(im, concept.target)
        res.contrast_reference = contrast_reference(rt.assets, concept.target)

    # CLI
    def add_output_arguments(self, p) -> None:
        p.add_argument("--out", default="steer_out",
                       help="folder for strip.png, steer.json, contrast.png, curve.png, steer.csv (default: steer_out)")
        p.add_argument("--save-vector", default=None, metavar="PATH",
                       help="also write the steering vector to this .safetensors file (apply it with --vector)")

    def write_outputs(self, result: SteerResult, args) -> list[str]:
        lines = [result.summary(), *result.write(args.out)]
        if getattr(args, "save_vector", None):
            lines.append(f"wrote {result.save_vector(args.save_vector)}")
        return lines


FEATURE = Steer()
