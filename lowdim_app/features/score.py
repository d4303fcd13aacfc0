"""``score``: is an image memorized? Spikiness of the U-Net's pooled representation against a
calibrated threshold (Zhang et al. 2025, arXiv:2512.20963, §4.1, Alg. 1) -- or another prompt-free
detector (the denoising error, FLIPD; :mod:`lowdim_app.methods.detectors`) -- with the nearest training
image of each image for the built-in models (their training sets are known). The prompt detectors
(Wen et al. 2024, Jeon et al. 2025) score generations, not images: ``benchmark memorization`` runs them."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.images import MAX_FILE_BYTES
from ..errors import UserError
from ..methods.detectors import PROMPT_DETECTORS
from ..metrics import SPIKINESS_METRICS
from .base import Cost, Feature, Progress, Result, csv_text, runtime_or_default
from .common import load, model_setting
from .settings import FileRef, Settings, seed_setting, setting

GENERATE_STEPS = 50
MAX_PAIRS = 12       # neighbour pairs shown
METRICS = SPIKINESS_METRICS + ("denoising_error", "flipd")     # the prompt-free detectors: they score an image
METRIC_CHOICES = METRICS + PROMPT_DETECTORS   # accepted, so that a prompt detector is refused with its reason
NO_CALIBRATION = ("No calibration matches these settings: scores only. Fit one under Calibrate: a one-class "
                  "calibration needs only images known not to be training data (or, for a text model, generations "
                  "of non-memorized prompts) and states the false-positive rate it promises; or keep the "
                  "calibration's layer, t and metric.")
CSV_HEADER = ["path", "score", "spread", "verdict", "implied_fpr", "nearest_train_rms", "reason"]
COLOUR_THRESHOLD = 0.02   # mean |channel - gray| (in [0, 1]) above which an image counts as colour
COLUMN_HELP = {
    "score": "the detector's value, mean over the noise draws (same image, settings and seed: same score)",
    "spread": "2 standard errors of that mean over the draws",
    "verdict": "memorized / generalized; uncertain when score +- spread straddles the threshold; out-of-domain when "
               "the image is unlike the model's real images (colour into a grayscale model, or denoising error above "
               "the 99th percentile of held-out real images)",
    "implied_fpr": "share of the calibration's generalized reference scoring at least as 'memorized' (the false-positive "
                   "rate of a threshold put at this score)",
    "nearest_train_rms": "built-in models: RMS distance (pixels in [-1, 1]) to the nearest training image; "
                         "< 0.07 is a near-copy",
}


def check_image_metric(metric: str | None) -> None:
    """A prompt detector cannot score an image: say why and what runs it."""
    if metric in PROMPT_DETECTORS:
        from ..methods.detectors import detector

        raise UserError(f"{metric} ({detector(metric).paper}) needs the prompt: it reads the first steps of a "
                        "generation, not an image; `python -m lowdim_app benchmark memorization` runs it")


MAX_IMAGE_MB = MAX_FILE_BYTES / 2**20   # one image file (what the image loader reads)
MAX_CALIBRATION_MB = 5     # a calibration JSON (the shipped ones are < 0.1 MB)


@dataclass(frozen=True)
class ScoreSettings(Settings):
    COMMAND = "score"
    images: tuple[FileRef, ...] = setting((), positional=True, help="image files or folders", max_mb=MAX_IMAGE_MB)
    model: str = model_setting()
    layer: str = setting("", help="U-Net module (empty: the calibration's layer)", max_chars=200)
    t: int | None = setting(None, lo=0, hi=999, label="timestep t", help="timestep (auto: the calibration's, else 50)")
    metric: str | None = setting(None, choices=METRIC_CHOICES,
                                 help="detector: a spikiness measure, denoising_error or flipd (auto: the calibration's, "
                                      "else std)")
    noise_draws: int | None = setting(None, lo=1, hi=64, label="noise draws",
                                      help="noise draws averaged (auto: the calibration's, else 4)")
    invert: bool = setting(False, help="flip intensities first (dark-on-light drawings for a light-on-dark model)")
    calibration: FileRef | None = setting(None, help="calibration JSON from `calibrate` (none: the model's shipped one)",
                                          max_chars=1000, max_mb=MAX_CALIBRATION_MB)
    n_generate: int = setting(0, lo=0, hi=10_000, label="generated samples",
                              help="also score this many fresh DDIM samples (seeded, 50 steps)")
    seed: int = seed_setting(help="seed of the noise draws and of the generated samples")

    def check(self) -> None:
        check_image_metric(self.metric)
        if not self.images and not self.n_generate:
            raise UserError("upload at least one image or ask for generated samples (image paths or --n-generate N)")


@dataclass
class ScoreResult(Result):
    rows: list = field(default_factory=list)              # methods.memorization.ImageScore
    layer: str = ""
    t: int = 50
    metric: str = "std"
    noise_draws: int = 1
    calibration: object | None = None                     # methods.memorization.Calibration
    calibration_source: str = ""                          # "uploaded", "file", "shipped" or ""
    skipped: list[str] = field(default_factory=list)
    scored: torch.Tensor | None = None                    # N x C x H x W in [-1, 1]
    nearest_images: torch.Tensor | None = None            # built-in models: nearest training image per row
    nearest_index: list[int] | None = None                # ... its index in the model's training set
    nearest_rms: list[float] | None = None                # ... and its RMS distance
    upscale: int = 6

    def table(self) -> list[list]:
        """One row per image: path, score (6 significant digits), spread, verdict, implied FPR (4 decimals),
        nearest-training RMS (built-in models), reason (out-of-domain / uncertain)."""
        return [[r.name, float(f"{r.score:.6g}"), float(f"{r.spread:.3g}"), r.verdict,
                 None if r.implied_fpr is None else round(r.implied_fpr, 4),
                 None if self.nearest_rms is None else round(self.nearest_rms[i], 4), r.reason]
                for i, r in enumerate(self.rows)]

    def to_csv(self) -> str:
        return csv_text(CSV_HEADER, [["" if v is None else v for v in row] for row in self.table()])

    def numbers(self) -> dict:
        cal = self.calibration
        rows = []
        for i, r in enumerate(self.rows):
            row = {"name": r.name, "score": r.score, "spread": r.spread, "verdict": r.verdict,
                   "implied_fpr": r.implied_fpr, "ood_value": r.ood_value, "reason": r.reason}
            if self.nearest_index is not None:
                row.update(nearest_train_index=self.nearest_index[i], nearest_rms=self.nearest_rms[i])
            rows.append(row)
        return {"layer": self.layer, "t": self.t, "metric": self.metric, "noise_draws": self.noise_draws,
                "invert": self.settings.invert, "columns": COLUMN_HELP,
                "calibration": None if cal is None else {"source": self.calibration_source, **cal.headline()},
                "rows": rows, "skipped": self.skipped}

    def figure(self):
        from ..plots.memorization import scores_histogram

        cal = self.calibration
        scores = [r.score for r in self.rows]
        if cal is None:
            return scores_histogram(scores, metric=self.metric)
        return scores_histogram(scores, memorized=cal.memorized_scores, generalized=cal.generalized_scores,
                                threshold=cal.threshold, fpr=cal.fpr, metric=cal.metric)

    def neighbour_pairs(self) -> list[tuple]:
        """(image | nearest training image, caption) for the first rows of a built-in model."""
        from ..data.images import make_grid

        if self.nearest_images is None:
            return []
        out = []
        for i in range(min(len(self.rows), MAX_PAIRS)):
            pair = torch.cat([self.scored[i:i + 1], self.nearest_images[i:i + 1]])
            out.append((make_grid(pair, nrow=2, upscale=self.upscale),
                        f"{self.rows[i].name} | nearest training image, RMS {self.nearest_rms[i]:.3f}"))
        return out

    def images(self) -> dict:
        return {caption: img for img, caption in self.neighbour_pairs()}

    def headline(self) -> str:
        cal = self.calibration
        if cal is None:
            return NO_CALIBRATION
        area = "n/a" if cal.auroc is None else round(cal.auroc, 3)
        counts = {v: sum(r.verdict == v for r in self.rows) for v in ("uncertain", "out-of-domain")}
        quality = (f"one-class: {cal.promise_text()}" if cal.kind == "one-class" else
                   f"calibrated FPR {cal.fpr:.3f}; AUROC {area}")
        text = (f"Detector: {cal.detector_name()}, {self.noise_draws} noise draws: {cal.rule()} ({quality}). "
                f"{sum(bool(r.memorized) for r in self.rows)} of {len(self.rows)} images flagged"
                + "".join(f", {n} {v}" for v, n in counts.items() if n) + ".")
        name = Path(str(self.settings.calibration)).name
        if self.calibration_source == "uploaded":
            text += f" Settings and threshold from the uploaded calibration file {name}."
        elif self.calibration_source == "file":
            text += f" Settings and threshold from the calibration file {name}."
        return text

    def summary(self) -> str:
        return self.headline() + (" Skipped: " + "; ".join(self.skipped) if self.skipped else "")


def _colourfulness(src) -> float:
    """Mean ``|channel - gray|`` of the image in [0, 1] (0 for a grayscale image)."""
    from ..data.images import load_image

    x = load_image(src, 32, channels=3)[0]
    return float((x - x.mean(0, keepdim=True)).abs().mean() / 2)


def load_images(model, sources, names=None, invert: bool = False,
                colour: list | None = None) -> tuple[torch.Tensor | None, list[str], list[str]]:
    """Files, folders (their image files, sorted) or in-memory images -> ``N x C x H x W`` at the
    model's size, with the names shown for them; unreadable images are skipped with a reason.
    ``invert`` flips intensities; ``colour`` (a list) receives each loaded image's colourfulness."""
    from ..data.images import ImageError, list_image_files, load_image

    if isinstance(sources, torch.Tensor):
        names = [str(n) for n in names] if names is not None else [f"image {i}" for i in range(len(sources))]
        if len(names) != len(sources):
            raise UserError(f"{len(sources)} images but {len(names)} names")
        if colour is not None:
            colour.extend([0.0] * len(sources))
        return (-sources.float() if invert else sources.float()), names, []
    items = []
    for i, src in enumerate(sources):
        given = str(src) if isinstance(src, FileRef) else None if names is None else str(names[i])
        if isinstance(src, FileRef):
            src = os.fspath(src)
        if isinstance(src, (str, Path)) and Path(src).is_dir():
            try:
                items += [(f, str(f) if given is None else f"{given.rstrip('/')}/{f.name}") for f in list_image_files(src)]
            except ImageError as err:
                items.append((None, str(err)))
        else:
            items.append((src, given if given is not None else str(src)))
    tensors, used, problems = [], [], []
    c, h, w = model.image_shape
    for src, name in items:
        if src is None:
            problems.append(name)
            continue
        try:
            tensors.append(load_image(src, (h, w), channels=c, invert=invert))
            used.append(name)
            if colour is not None:
                colour.append(_colourfulness(src) if c == 1 else 0.0)
        except ImageError as err:
            problems.append(str(err))
    return (torch.cat(tensors) if tensors else None), used, problems


def score_tensors(model, images: torch.Tensor, names: list[str], colour: list[float], how, seed: int) -> list:
    """Scores and verdicts of loaded images (``methods.memorization.score_images``), with a colour image
    into a grayscale model answered out-of-domain. Each row depends on its image alone."""
    from ..methods import memorization as mz

    rows = mz.score_images(model, images, names, how, seed)
    for r, col in zip(rows, colour):
        if col > COLOUR_THRESHOLD and r.verdict != "n/a":
            r.memorized, r.verdict = None, "out-of-domain"
            r.reason = (f"a colour image (colourfulness {col:.2f}) into a grayscale model: it has only seen "
                        "grayscale images")
    return rows


def nearest_of(model, images: torch.Tensor) -> tuple[torch.Tensor, list[int], list[float]]:
    """Built-in models: the nearest training image of each image, its index and RMS distance."""
    from ..methods.memorization_builtin import nearest_training

    nn, train = nearest_training(model, images)
    idx = nn.index[:, 0]
    return train[idx], idx.tolist(), [float(d) for d in nn.nearest]


class Score(Feature):
    name = "score"
    help = "memorization check: representation spikiness of images (CSV to stdout)"
    Settings = ScoreSettings
    outputs = ("csv", "json")

    def cost(self, s: ScoreSettings) -> Cost:
        n = len(s.images) + s.n_generate
        per_draw = 3 if s.metric == "flipd" else 1      # FLIPD: one pass + a central difference per probe
        return Cost(forward=(per_draw + 1) * n * (s.noise_draws or 4) + s.n_generate * GENERATE_STEPS,
                    note="one (early-stopped) U-Net pass per image and noise draw (FLIPD: 3), one more for the "
                         "out-of-domain check, "
                         "plus 50 DDIM steps per generated "
                         "sample; a folder counts as one image")

    def run(self, s: ScoreSettings, *, runtime=None, progress=None, should_stop=None, model=None,
            images=None, names=None) -> ScoreResult:
        """``images``/``names``: in-memory images (PIL, arrays, tensors) of a library caller, shown under
        ``names``, in place of the files ``s.images``."""
        from ..methods import memorization as mz
        from ..methods.memorization_builtin import BUILTIN_MODELS

        rt = runtime_or_default(runtime)
        prog = Progress.wrap(progress, should_stop)
        model = load(s.model, rt, model)
        uploaded = mz.Calibration.load(s.calibration) if s.calibration else None
        how = mz.setup(model, rt.assets, s.layer, s.t, s.metric, s.noise_draws, uploaded)

        parts, shown, skipped, colour = [], [], [], []
        if images is not None or s.images:
            tens, shown, skipped = load_images(model, images if images is not None else s.images, names,
                                               invert=s.invert, colour=colour)
            if tens is None:
                raise UserError(skipped[0] if skipped else "upload at least one image or ask for generated samples")
            parts.append(tens)
        if s.n_generate:
            prog(0.0, f"generating {s.n_generate} samples")
            parts.append(model.generate(s.n_generate, seed=s.seed, steps=GENERATE_STEPS, progress=prog.bars,
                                        step_callback=lambda i, t: prog.check()).cpu())
            shown += [f"sample seed {s.seed} #{i}" for i in range(s.n_generate)]
            colour += [0.0] * s.n_generate
        scored = torch.cat(parts)
        prog(0.6, f"scoring {len(scored)} images")
        rows = score_tensors(model, scored, shown, colour, how, s.seed)

        res = ScoreResult(settings=s, rows=rows, layer=how.layer, t=how.t, metric=how.metric, noise_draws=how.n_noise,
                          calibration=how.calibration, skipped=skipped, scored=scored,
                          calibration_source={"file": "uploaded" if s.calibration and s.calibration.uploaded else "file",
                                              "shipped": "shipped"}.get(how.source, ""))
        if model.model_id in BUILTIN_MODELS:
            prog(0.9, "nearest training images")
            res.nearest_images, res.nearest_index, res.nearest_rms = nearest_of(model, scored)
        return res

    # CLI: the table on stdout (as CSV), notes on stderr
    def write_outputs(self, result: ScoreResult, args) -> list[str]:
        notes = [f"skipped: {p}" for p in result.skipped] + [result.headline()]
        for kind, write in (("csv", result.write_csv), ("json", result.write_json)):
            if getattr(args, kind, None):
                notes.append(f"wrote {write(getattr(args, kind))}")
        print("\n".join(notes), file=sys.stderr)
        return [result.to_csv().rstrip("\n")]


FEATURE = Score()
