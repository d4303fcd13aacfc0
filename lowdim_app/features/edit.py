"""``edit``: training-free edits along singular vectors of the denoiser's Jacobian.

Wang et al. 2024 (arXiv:2409.02426), §4.2 and App. E.4: invert the image to ``t`` (0.7T), move
``x_t`` along a right singular vector ``v_i`` of ``J_t = d x0_hat / d x_t`` and sample back with
DDIM; a random unit direction is the control (Fig. 6). Chen et al. 2024 (LOCO Edit,
arXiv:2409.02374): local directions from a painted mask, and transfer of a saved direction to
another image.

Two stages share one settings object: :meth:`Edit.find` (inversion + direction search) and
:meth:`Edit.edit` (the strip along the chosen direction and the control). The UI calls them one
after the other; ``run`` does both (or, with ``load_direction``, inverts and applies a saved
direction).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data import classifier
from ..errors import UserError
from ..methods import editing
from ..methods import jacobian as jac
from ..methods.structure import data_span_dim
from .base import Cost, Feature, Progress, Result, runtime_or_default
from .common import load, model_setting, upscale_for
from .settings import Settings, seed_setting, setting

ALPHA_LIMIT = editing.ALPHA_LIMIT
MAX_ALPHAS = editing.MAX_ALPHAS
EXAMPLE_IMAGE, EXAMPLE_T = editing.EXAMPLE_IMAGE, editing.EXAMPLE_T
EXAMPLE_AMAX, EXAMPLE_COUNT = editing.EXAMPLE_AMAX, editing.EXAMPLE_COUNT
MAX_K = jac.MAX_K
MAX_PASSES = 100_000
JVP_MODES, DEFAULT_JVP_MODE = jac.JVP_MODES, jac.DEFAULT_JVP_MODE
# network evaluations of one direction search. An SD v1.4 U-Net forward at batch 1 took 0.048 s on an H100
# (bench/results/gpu.csv); an evaluation costs about one forward (a VJP about three), less in batched calls, so
# 400 evaluations is at most ~60 s there. The request budget refuses what will not fit.
DEFAULT_MAX_PASSES = 400
DEFAULT_TOL = jac.DEFAULT_TOL
NULL_RANK = jac.NULL_RANK
# share of a local edit's DDIM steps that keep the outside of the mask on the unedited trajectory.
# bench/local_edit.py (12 held-out digits x 3 masks x alpha +-3, +-6): mean outside/inside change 0.08 / 0.12 /
# 0.15 at t = 0.3 / 0.5 / 0.7T with 0.8, against 0.43 / 0.61 / 0.73 for LOCO's projection alone
KEEP_OUTSIDE = 0.8
REFERENCE_N = 256    # digits-gen (1 x 16 x 16): the size the cost estimate is quoted at when n is unknown
# the diffusion-space dimension n of the models the app knows by name (the exact architectures)
KNOWN_N = {"digits-gen": 256, "digits-mem": 256, "digits-dup": 256, "google/ddpm-cifar10-32": 3 * 32 * 32,
           "google/ddpm-ema-celebahq-256": 3 * 256 * 256, "CompVis/stable-diffusion-v1-4": 4 * 64 * 64}
# the fields that determine the search; the edit stage may change only the others
SEARCH_FIELDS = ("image", "model", "t", "k", "steps", "mask", "prompt", "invert", "load_direction",
                 "max_passes", "tol", "jvp", "solver")
SOLVERS = jac.SOLVERS
SOLVER_HELP = ("auto: the search plan decides -- the exact Jacobian (n VJPs + SVD: the whole spectrum and the numerical "
               "rank) when n <= 1024 fits the budget, else the solver with the least predicted cost (block Krylov, or "
               "ARPACK where it needs fewer passes and calls cost little; bench/jacobian.py); exact, krylov, power "
               "(LOCO Edit's power iteration) or arpack force one")


def model_n(model_id: str, unet_config: dict | None = None) -> int | None:
    """``n`` of the model: channels x size x size of its U-Net config when given, else the known size
    of a model named by id, else ``None``."""
    if unet_config:
        size = unet_config.get("sample_size")
        size = size if isinstance(size, (list, tuple)) else (size, size)
        channels = unet_config.get("in_channels")
        if channels and all(size):
            return int(channels) * int(size[0]) * int(size[1])
    return KNOWN_N.get(str(model_id).strip())


def plan_options(s: "EditSettings") -> dict:
    """The settings the search plan reads (:func:`~lowdim_app.methods.jacobian.plan.plan_search`)."""
    return dict(solver=s.solver, max_passes=s.max_passes, tol=s.tol, jvp_mode=s.jvp, masked=bool(s.mask),
                null_rank=NULL_RANK, spectrum=True)


def search_plan(n: int, s: "EditSettings") -> jac.SearchPlan:
    """The plan of an edit search on an ``n``-dimensional model (as ``find`` will make it, less the device's
    memory plan): what the cost estimate and the request budget read."""
    return jac.plan_search(n, s.k, **plan_options(s))


def search_cost(plan: jac.SearchPlan, forward: int = 0, note: str = "") -> Cost:
    """The :class:`~.base.Cost` of a search plan at most (its budget), plus ``forward`` other evaluations."""
    ev = plan.evaluations()
    central = plan.jvp_mode == "central"
    return Cost(forward=forward + (ev["jvp_evaluations"] if central else 0), jvp=0 if central else ev["jvp_directions"],
                vjp=ev["vjp"], note=note + f"{plan.method} within {plan.max_passes} network evaluations ({plan.reason})")


@dataclass(frozen=True)
class EditSettings(Settings):
    COMMAND = "edit"
    image: str = setting("", positional=True, help="the image to edit (PNG, JPEG, ...)")
    model: str = model_setting()
    t: float = setting(0.7, lo=0.01, hi=1.0, label="edit time t/T",
                       help="edit time as a fraction of T (Wang et al. 2024, App. E.4: 0.7)")
    k: int = setting(5, lo=1, hi=MAX_K, help="number of singular vectors")
    direction: int = setting(1, lo=1, hi=MAX_K, help="which v_i to edit along (1-based)")
    alpha: tuple[float, ...] = setting(tuple(float(a) for a in np.linspace(-6, 6, 7)), lo=-ALPHA_LIMIT,
                                       hi=ALPHA_LIMIT, max_items=MAX_ALPHAS, range_style="linspace",
                                       label="edit strength alpha", help="edit strengths: LO:HI:COUNT or a list")
    steps: int = setting(50, lo=4, hi=1000, label="DDIM steps",
                         help="DDIM steps over [0, T] (the edit uses the share up to t)")
    mask: str = setting("", help="image whose white pixels mark the region for a local edit (LOCO Edit)")
    keep_outside: float = setting(KEEP_OUTSIDE, lo=0.0, hi=1.0, label="keep outside",
                                  help="local edits: share of the DDIM steps that keep the outside of the mask on "
                                       "the unedited trajectory (blended sampling; 0: LOCO's null-space projection "
                                       "alone, 1: the outside is exactly the reconstruction)")
    prompt: str = setting("", help="condition for text models (the Jacobian is of the conditional x0_hat)")
    invert: bool = setting(False, help="invert intensities (dark-on-light drawings of digits)")
    load_direction: str = setting("", help="apply a saved direction (.safetensors; transfer: its t replaces --t)")
    seed: int = seed_setting(help="seed of the random control direction")
    max_passes: int = setting(DEFAULT_MAX_PASSES, lo=2, hi=MAX_PASSES, label="max passes",
                              help="budget of the direction search in network evaluations (a VJP or forward-mode "
                                   "JVP direction is one, a central-difference JVP two); the exact Jacobian (n "
                                   "VJPs) runs when n <= 1024 fits it")
    tol: float = setting(DEFAULT_TOL, lo=1e-6, hi=1.0, label="tolerance",
                         help="stop the search when the estimated sine of the largest principal angle to the true "
                              "top-k subspace is below this (0.141: principal cosine >= 0.99)")
    jvp: str = setting(jac.DEFAULT_JVP_MODE, choices=jac.JVP_MODES, label="JVP mode",
                       help="central: central difference in float32 (forward passes only, fused attention, low "
                            "memory); forward: exact forward-mode AD (classic attention, more memory)")
    memory_gb: float | None = setting(None, lo=0.01, hi=4096.0, unit="GB", label="memory budget",
                                      help="memory for batched JVP/VJP calls (auto: 80% of the free CUDA memory, "
                                           "on the CPU half of the available RAM)")
    solver: str = setting("auto", choices=SOLVERS, label="solver", help=SOLVER_HELP)

    def check(self) -> None:
        if not self.image.strip():
            raise UserError("give the image to edit")
        if self.load_direction and self.mask:
            raise UserError("a saved direction is applied as it is; drop the mask")
        if not self.load_direction and self.direction > self.k:
            raise UserError(f"direction must be between 1 and k = {self.k}, got {self.direction}")
        if not self.load_direction:
            need = self.min_passes()
            if self.max_passes < need:
                raise UserError(f"max passes must be at least {need} network evaluations for k = {self.k}"
                                + (" with a mask" if self.mask else "") + f" ({self.jvp} JVPs), got {self.max_passes}")

    def min_passes(self) -> int:
        """The smallest budget of the search (:func:`~lowdim_app.methods.jacobian.plan.min_passes`)."""
        return jac.min_passes(self.k, self.jvp, masked=bool(self.mask), null_rank=NULL_RANK)

    def search_key(self) -> tuple:
        return tuple(getattr(self, f) for f in SEARCH_FIELDS)


@dataclass(frozen=True)
class AlphaRange(Settings):
    """The tab's alpha widgets: ``count`` strengths evenly spaced in ``[-A, A]``."""

    amax: float = setting(6.0, lo=0.1, hi=ALPHA_LIMIT, label="alpha range A")
    count: int = setting(7, lo=2, hi=MAX_ALPHAS, label="number of alphas")

    @property
    def alphas(self) -> tuple[float, ...]:
        return tuple(float(a) for a in np.linspace(-self.amax, self.amax, self.count))


# ----------------------------------------------------------------------------- inputs
def load_image_for(model, path: str, invert: bool = False) -> torch.Tensor:
    from ..data.images import load_image

    return load_image(path, model.image_shape[1:], channels=model.image_shape[0], invert=invert)


def load_mask(model, path: str) -> torch.Tensor:
    """White pixels of a mask image mark the region to edit (``H x W`` in {0, 1})."""
    from ..data.images import load_image

    return (load_image(path, model.image_shape[1:], channels=1)[0, 0] > 0).float()


def _cond(model, prompt: str):
    return model.encode_prompt(prompt or "", guidance_scale=1.0) if model.is_text else None


# ----------------------------------------------------------------------------- results
@dataclass
class EditSearch(Result):
    """Stage 1: the inversion and the top-k directions (Wang et al. 2024, §4.2)."""

    model_id: str = ""
    t: int = 0
    n: int = 0
    is_latent: bool = False
    search: editing.DirectionSearch | None = None
    upscale: int = 1
    data_dim: int | None = None      # dimension of the span of the training images (when the card says)

    @property
    def local(self) -> bool:
        return bool(self.settings.mask)

    def numbers(self) -> dict:
        s = self.search
        return {"singular_values": [float(v) for v in s.singular_values],
                "numerical_rank": s.numerical_rank, "search": s.summary}

    @property
    def status(self) -> str:
        """How the search ended: ``converged`` / ``stopped at the pass budget, estimated error X`` / exact."""
        return self.search.summary.get("status", "")

    @property
    def stopped_at_budget(self) -> bool:
        return bool(self.search.summary.get("stopped_at_budget"))

    def spectrum(self) -> torch.Tensor:
        s = self.search
        return s.spectrum if s.spectrum is not None else s.singular_values

    def figure(self):
        from ..plots.editing import spectrum_figure

        return spectrum_figure(self.spectrum().numpy(), self.search.numerical_rank,
                               title=f"{self.model_id}: spectrum of J_t at t = {self.t} ({self.settings.t:g}T)",
                               data_dim=None if self.local else self.data_dim)

    def images(self) -> dict:
        from ..data.images import make_grid
        from ..plots.editing import direction_images

        return {"v_directions": make_grid(direction_images(self.search.V), upscale=self.upscale),
                "u_images": make_grid(direction_images(self.search.U), upscale=self.upscale)}

    def gallery(self, which: str, target: int = 96) -> list:
        """``(image, caption)`` per direction: ``which="v"`` (edit directions) or ``"u"`` (their images)."""
        from ..data.images import to_pil
        from ..plots.editing import direction_images

        up = max(1, target // self.search.V.shape[-1])
        if which == "v":
            return [(im, f"v{i + 1}  sigma={float(s):.3g}") for i, (im, s) in
                    enumerate(zip(to_pil(direction_images(self.search.V), up), self.search.singular_values))]
        return [(im, f"u{i + 1}") for i, im in enumerate(to_pil(direction_images(self.search.U), up))]

    def summary(self) -> str:
        s = self.search
        rank = (f"numerical rank r = {s.numerical_rank} of n = {self.n}" if s.numerical_rank is not None else
                "numerical rank: needs the full spectrum (exact path, n <= 1024)")
        budget = (" **Stopped at the pass budget**: the directions are the best found so far; raise *max passes* "
                  "(Advanced) for converged ones." if self.stopped_at_budget else "")
        return (f"**{'Local (masked)' if self.local else 'Global'} directions** at t = {self.t}: {rank}. "
                f"Search: {s.summary.get('solver_choice') or s.summary.get('method')}"
                + f", {s.summary.get('passes', '?')} network evaluations"
                + (f" in {s.summary['batched_calls']} batched calls" if "batched_calls" in s.summary else "")
                + f", {self.status}.{budget}"
                + (" Latent model: v_i/u_i show the first 3 latent channels." if self.is_latent else ""))

    def direction(self, index: int) -> editing.Direction:
        if not 1 <= index <= len(self.search.directions):
            raise UserError(f"direction must be between 1 and {len(self.search.directions)}, got {index}")
        return self.search.directions[index - 1]

    def save_direction(self, index: int, folder: str | Path) -> Path:
        """The direction ``v_index`` as a ``.safetensors`` file in ``folder`` (for transfer)."""
        d = self.direction(index)
        return d.save(Path(folder) / f"{d.model_id.replace('/', '_')}_t{d.t}_v{index}.safetensors")


@dataclass
class EditResult(Result):
    """Stage 2: the strip along the chosen direction and along the random control (Fig. 6)."""

    model_id: str = ""
    t: int = 0
    alphas: tuple[float, ...] = ()
    chosen: editing.Direction | None = None
    along: torch.Tensor | None = None       # len(alphas) x C x H x W pixels in [-1, 1]
    control: torch.Tensor | None = None
    upscale: int = 1
    search: EditSearch | None = None
    # the digit classifier's class probabilities per alpha (len(alphas) x 10, plain lists), for the built-in
    # digit models' 1 x 16 x 16 images only: is the edit semantic (the class moves) and continuous?
    proba_along: list[list[float]] | None = None
    proba_control: list[list[float]] | None = None

    @property
    def change_along(self) -> list[float]:
        return editing.edit_effect(self.along, self.alphas)

    @property
    def change_random(self) -> list[float]:
        return editing.edit_effect(self.control, self.alphas)

    @property
    def ratio(self) -> float:
        return float(np.mean(self.change_along) / max(np.mean(self.change_random), 1e-12))

    @property
    def label(self) -> str:
        d = self.chosen
        if self.settings.load_direction:
            return f"saved direction v{d.index} (t = {d.t})"
        return f"v{self.settings.direction} ({d.kind})"

    def numbers(self) -> dict:
        d = self.chosen
        out = {"model": self.model_id, "t": self.t, "alphas": list(self.alphas), "direction": d.index,
               "kind": d.kind, "sigma": d.sigma, "change_along_direction": self.change_along,
               "change_along_random": self.change_random}
        if self.settings.mask:
            out["keep_outside"] = self.settings.keep_outside
        if self.proba_along is not None:
            out["classifier_along_direction"] = self.proba_along
            out["classifier_along_random"] = self.proba_control
        if self.search is not None:
            out.update(self.search.numbers())
        return out

    def images(self) -> dict:
        """``strip``: top row along the direction, bottom row along the random control."""
        from ..data.images import make_grid

        return {"strip": make_grid(torch.cat([self.along, self.control]), nrow=len(self.alphas), upscale=self.upscale)}

    def alpha_images(self) -> list[tuple[float, object]]:
        from ..data.images import to_pil

        return list(zip(self.alphas, to_pil(self.along)))

    def figure(self):
        from ..plots.editing import effect_figure

        return effect_figure(self.alphas, self.change_along, self.change_random, self.label,
                             proba_along=self.proba_along, proba_control=self.proba_control)

    def class_path(self) -> str:
        """The classifier's reading of both rows at the first alpha, at alpha = 0 and at the last alpha."""
        if self.proba_along is None:
            return ""
        zero = int(np.argmin(np.abs(np.asarray(self.alphas))))
        at = sorted({0, zero, len(self.alphas) - 1})

        def classes(p):
            c = np.asarray(p).argmax(1)
            return " / ".join(str(int(c[i])) for i in at)

        return (" Digit classifier, class at alpha = " + " / ".join(f"{self.alphas[i]:+g}" for i in at)
                + f": along {self.label} {classes(self.proba_along)}, random {classes(self.proba_control)}.")

    def summary(self) -> str:
        a = self.alphas
        return (f"Top row: {self.label}; bottom row: a random unit direction (the control of Wang et al. 2024, "
                f"Fig. 6), alphas {a[0]:+.1f} .. {a[-1]:+.1f}. Mean change along the direction / along random: "
                f"**{self.ratio:.1f}x**." + self.class_path()
                + (f" Local edit: the outside of the mask follows the unedited trajectory for the first "
                   f"{self.settings.keep_outside:.0%} of the steps." if self.settings.mask and self.settings.keep_outside
                   else ""))

    def write(self, out: str | Path) -> list[Path]:
        """The CLI's files: strip.png, edit_alpha_*.png, edit.json, and with a search spectrum.png,
        v_directions.png, u_images.png."""
        from ..plots.common import to_pil as fig_to_pil

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        written = [out / "strip.png"]
        self.images()["strip"].save(written[0])
        if self.search is not None:
            fig_to_pil(self.search.figure()).save(out / "spectrum.png")
            for name, img in self.search.images().items():
                img.save(out / f"{name}.png")
            written += [out / "spectrum.png", out / "v_directions.png", out / "u_images.png"]
        for a, img in self.alpha_images():
            img.save(out / f"edit_alpha_{a:+.2f}.png")
            written.append(out / f"edit_alpha_{a:+.2f}.png")
        written.append(self.write_json(out / "edit.json"))
        return written


# ----------------------------------------------------------------------------- the feature
class Edit(Feature):
    name = "edit"
    help = "edit an image along singular vectors of the denoiser's Jacobian"
    Settings = EditSettings
    outputs = ()

    def cost(self, s: EditSettings, unet_config: dict | None = None) -> Cost:
        """Network evaluations of one run: the inversion and the two strips (forwards) and, at most, the search
        plan's (:func:`search_plan`) at the model's ``n`` (from ``unet_config`` when given, else the known size of
        ``s.model``, else the reference n = 256). A central-difference JVP direction is two forwards."""
        segment = max(2, round(s.steps * s.t))                 # DDIM steps over [0, t]
        strips = 2 * len(s.alpha) * segment                     # along + random control
        if s.mask and s.keep_outside > 0:
            strips += segment                                   # the unedited trajectory kept outside the mask
        if s.load_direction:
            return Cost(forward=segment + strips, note="inversion + two strips; no search (saved direction)")
        n = model_n(s.model, unet_config)
        known = n is not None
        plan = search_plan(n if known else REFERENCE_N, s)
        return search_cost(plan, forward=segment + strips,
                           note="inversion + two strips + the search: "
                                + ("" if known else f"at the reference n = {REFERENCE_N} (n unknown): "))

    # -- stage 1
    def find(self, s: EditSettings, *, runtime=None, progress=None, should_stop=None, model=None) -> EditSearch:
        """Invert ``s.image`` to ``s.t`` and find the top-``s.k`` (global or masked) directions within
        ``s.max_passes`` passes; ``should_stop`` is honoured before every U-Net call and batched JVP/VJP."""
        if s.load_direction:
            raise UserError("a saved direction needs no search; apply it instead")
        prog = Progress.wrap(progress, should_stop)
        model = load(s.model, runtime_or_default(runtime), model)
        t = model.timestep_from_fraction(s.t)
        image = load_image_for(model, s.image, s.invert)
        mask = load_mask(model, s.mask) if s.mask else None
        prog(0.0, "inverting the image and finding directions")

        def on_iteration(info: dict) -> None:
            err = info.get("error_estimate", info.get("change", float("inf")))
            prog(min(0.99, info["passes"] / s.max_passes),
                 f"{'Krylov' if s.solver != 'power' else 'power'} iteration {info['iteration']}: {info['passes']}/{s.max_passes} "
                 "network evaluations, estimated error "
                 + (f"{err:.3g}" if err == err and err != float("inf") else "-"))

        search = editing.find_directions(model, image, t, k=s.k, total_steps=s.steps, cond=_cond(model, s.prompt),
                                         mask=mask, null_rank=NULL_RANK, progress=prog.bars, max_passes=s.max_passes,
                                         tol=s.tol, jvp_mode=s.jvp, memory_gb=s.memory_gb, check=prog.check,
                                         callback=on_iteration if mask is None else None, method=s.solver)
        prog.check()
        return EditSearch(settings=s, finished=False, model_id=model.model_id, t=t, n=model.n,
                          is_latent=model.is_latent, search=search,
                          upscale=max(1, 128 // model.sample_shape[-1]), data_dim=data_span_dim(model))

    # -- stage 2
    def edit(self, s: EditSettings, search: EditSearch | None = None, *, runtime=None, progress=None,
             should_stop=None, model=None) -> EditResult:
        """The strip along direction ``s.direction`` of ``search`` (or the saved ``s.load_direction``)
        beside the random-direction control."""
        prog = Progress.wrap(progress, should_stop)
        model = load(s.model, runtime_or_default(runtime), model)
        if s.load_direction:
            chosen = editing.Direction.load(s.load_direction)
            chosen.check_compatible(model)
            prog(0.0, "inverting the image")
            image = load_image_for(model, s.image, s.invert)
            inv = editing.invert(model, image, chosen.t, s.steps, _cond(model, s.prompt or chosen.prompt),
                                 progress=prog.bars, check=prog.check)
            search = None
        else:
            if search is None:
                search = self.find(s, runtime=runtime, progress=prog, model=model)
            elif search.settings.search_key() != s.search_key():
                raise UserError("the image or search settings changed since 'Find directions'; find directions again")
            chosen, inv = search.direction(s.direction), search.search.inversion
        prog(0.5, "editing along the direction and along a random one")
        keep = None
        if s.mask and not s.load_direction and s.keep_outside > 0:
            prog(0.45, "sampling the unedited trajectory (kept outside the mask)")
            sample_mask = editing.pixel_mask_to_sample(model, load_mask(model, s.mask))
            keep = editing.keep_outside(model, inv, sample_mask, s.keep_outside, check=prog.check)
        along = editing.edit_strip(model, inv, chosen.vector, s.alpha, progress=prog.bars, check=prog.check, keep=keep)
        prog(0.75, "editing along a random direction (the control)")
        control = editing.edit_strip(model, inv, editing.random_direction(model.sample_shape, s.seed), s.alpha,
                                     check=prog.check, keep=keep)
        proba = {}
        if classifier.applies_to(model.image_shape):
            prog(0.95, "classifying the edited digits")
            proba = {"proba_along": classifier.predict_proba(along).tolist(),
                     "proba_control": classifier.predict_proba(control).tolist()}
        return EditResult(settings=s, model_id=model.model_id, t=inv.t, alphas=tuple(s.alpha), chosen=chosen,
                          along=along, control=control, upscale=upscale_for(model), search=search, **proba)

    def run(self, s: EditSettings, *, runtime=None, progress=None, should_stop=None, model=None,
            search: EditSearch | None = None, stage: str = "all"):
        """``stage="find"``: only the search (an :class:`EditSearch`); otherwise the edit, reusing
        ``search`` when given."""
        if stage not in ("all", "find"):
            raise UserError(f"stage must be 'all' or 'find', got {stage!r}")
        if stage == "find":
            return self.find(s, runtime=runtime, progress=progress, should_stop=should_stop, model=model)
        return self.edit(s, search, runtime=runtime, progress=progress, should_stop=should_stop, model=model)

    # -- CLI
    def add_output_arguments(self, p) -> None:
        p.add_argument("--out", default="edit_out", help="output folder (strip.png, edit.json, ...)")
        p.add_argument("--save-direction", default=None, metavar="PATH",
                       help="save the chosen direction (.safetensors) for --load-direction")

    def write_outputs(self, result: EditResult, args) -> list[str]:
        result.write(args.out)
        lines = []
        if getattr(args, "save_direction", None):
            lines.append(f"wrote {result.chosen.save(args.save_direction)}")
        d, search = result.chosen, result.search
        lines.insert(0, f"wrote {args.out}/strip.png (top row: direction {d.index or 'loaded'}; bottom row: random "
                        f"direction), edit.json"
                        + (f", spectrum.png (numerical rank {search.search.numerical_rank})" if search else "")
                        + f"; mean change along / random: {result.ratio:.1f}x")
        if search is not None:
            lines.insert(1, f"search: {search.status}"
                         + ("; raise --max-passes for converged directions" if search.stopped_at_budget else ""))
        return lines


FEATURE = Edit()
