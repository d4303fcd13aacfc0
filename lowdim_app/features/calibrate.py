"""``calibrate``: fit the memorization threshold of a detector.

* **two-class** (known-memorized and known-generalized images): sign and threshold from both sets --
  ROC, AUROC and TPR at 1% FPR (Zhang et al. 2025, arXiv:2512.20963, §4.1, Alg. 1's THRES, Table 1's
  measures);
* **one-class** (no memorized set): the threshold from images known *not* to be training data alone --
  a folder the user gives, and/or, for a text model, the model's own generations from non-memorized
  prompts (the shipped SD v1.4 set of Jeon et al. 2025, arXiv:2412.04140, by default) -- in the
  detector's paper direction, with the false-positive rate it promises and that promise's uncertainty
  for the reference size (:mod:`lowdim_app.methods.one_class`).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from .base import Cost, Feature, Progress, Result, dumps, runtime_or_default
from .common import load, model_setting
from .score import MAX_IMAGE_MB, METRIC_CHOICES, check_image_metric, load_images
from .settings import FileRef, Settings, file_texts, seed_setting, setting

REFERENCE_SEED_SET = 2    # seed stream of the reference generations (the benchmark uses 0 and 1 for its sets)


@dataclass(frozen=True)
class CalibrateSettings(Settings):
    COMMAND = "calibrate"
    model: str = model_setting()
    memorized: tuple[FileRef, ...] = setting((), help="known-memorized image files or folders (none: a one-class "
                                                      "calibration from the generalized / reference images alone)",
                                             max_mb=MAX_IMAGE_MB)
    generalized: tuple[FileRef, ...] = setting((), help="known-generalized (not training) image files or folders",
                                               max_mb=MAX_IMAGE_MB)
    layer: str = setting("", help="U-Net module (empty: the model's calibrated layer)", max_chars=200)
    t: int = setting(50, lo=0, hi=999, label="timestep t", help="timestep")
    metric: str = setting("std", choices=METRIC_CHOICES, help="detector: a spikiness measure, denoising_error or flipd")
    noise_draws: int = setting(4, lo=1, hi=64, label="noise draws", help="noise draws averaged")
    target_fpr: float = setting(0.01, lo=0.0, hi=0.5, label="target FPR",
                                help="false-positive rate on the generalized images at the threshold")
    reference_prompts: int = setting(0, lo=0, hi=10_000, label="reference generations",
                                     help="text models: also generate one image from each of the first N non-memorized "
                                          "prompts as known-generalized references")
    prompts: str = setting("", max_chars=1000, help="file of non-memorized prompts for those generations (.txt or "
                                                    ".jsonl; empty: the shipped SD v1.4 set)")
    steps: int = setting(50, lo=1, hi=1000, help="DDIM steps of the reference generations")
    guidance: float = setting(7.5, lo=0.0, hi=50.0, help="classifier-free guidance of the reference generations")
    direction: str = setting("auto", choices=("auto", "higher", "lower"),
                             help="one-class: which side is memorized (auto: the detector's paper direction, or the "
                                  "shipped calibration's for the same detector)")
    confidence: float = setting(0.95, lo=0.5, hi=0.9999, help="one-class: confidence of the stated FPR interval")
    seed: int = seed_setting(help="seed of the noise draws and of the reference generations")

    def check(self) -> None:
        check_image_metric(self.metric)
        if not self.generalized and not self.reference_prompts:
            raise UserError("give known-generalized (not training) images (upload them, or --generalized "
                            "FILES_OR_FOLDER), or --reference-prompts N for a text model")

    @property
    def one_class(self) -> bool:
        return not self.memorized


@dataclass
class CalibrateResult(Result):
    calibration: object | None = None        # methods.memorization.Calibration
    memorized_names: list[str] = field(default_factory=list)
    generalized_names: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    direction_source: str = ""               # one-class: where the sign came from

    def numbers(self) -> dict:
        return {**self.calibration.headline(), "n_memorized": len(self.memorized_names),
                "n_generalized": len(self.generalized_names), "skipped": self.skipped}

    def figure(self):
        from ..plots.memorization import roc_figure, scores_histogram

        c = self.calibration
        if c.kind == "one-class":
            return scores_histogram([], generalized=c.generalized_scores, threshold=c.threshold,
                                    fpr=c.fpr_promise["expected_fpr"], metric=c.metric)     # the promised rate
        return roc_figure(c.roc_fpr, c.roc_tpr, c.auroc, c.tpr_at_1pct_fpr)

    def summary(self) -> str:
        c = self.calibration
        side = "higher" if c.direction > 0 else "lower"
        if c.kind == "one-class":
            text = (f"One-class calibration (no memorized set) from {len(self.generalized_names)} known non-training "
                    f"images: threshold {c.threshold:.4g} ({side} score = memorized: {self.direction_source}); "
                    f"{c.promise_text()}. Detector: {c.detector_name()}.")
        else:
            text = (f"AUROC {c.auroc:.3f}, TPR at 1% FPR {c.tpr_at_1pct_fpr:.3f}; threshold {c.threshold:.4g} "
                    f"({side} score = memorized), FPR {c.fpr:.3f}, TPR {c.tpr:.3f} "
                    f"on {len(self.memorized_names)} memorized / {len(self.generalized_names)} generalized images "
                    f"(layer `{c.layer}`, t = {c.t}, metric `{c.metric}`).")
        return text + (" Skipped: " + "; ".join(self.skipped) if self.skipped else "")

    def write(self, path: str | Path) -> Path:
        """The calibration JSON that ``score --calibration`` and the app's upload read."""
        return self.calibration.save(path)


def reference_generations(model, s: CalibrateSettings, prog: Progress):
    """One seeded image per non-memorized prompt (the first ``s.reference_prompts`` of the set), the
    generation of ``benchmark memorization``'s non-memorized set, and their names."""
    import torch

    from ..data.prompts import load_prompt_set
    from .benchmark_memorization import image_noise

    if not model.is_text:
        raise UserError(f"reference generations need a text-to-image model; {model.model_id} takes no prompt "
                        "(give known non-training images instead)")
    pset = load_prompt_set(s.prompts or "sd14-nonmemorized")
    if s.reference_prompts > len(pset):
        raise UserError(f"{pset.name} has {len(pset)} prompts, fewer than the {s.reference_prompts} asked for")
    images, names = [], []
    for i, prompt in enumerate(pset.prompts[:s.reference_prompts]):
        prog(0.05 + 0.4 * i / s.reference_prompts, f"reference generation {i + 1} of {s.reference_prompts}")
        cond = model.encode_prompt(prompt, guidance_scale=s.guidance)
        z = model.ddim_sample(image_noise(model, s.seed, REFERENCE_SEED_SET, i, [0]), model.num_train_timesteps - 1,
                              s.steps, cond, step_callback=lambda *_: prog.check())
        images.append(model.decode(z).cpu())
        names.append(f"{pset.name} #{i}")
    return torch.cat(images), names


def _direction(s: CalibrateSettings, model, layer: str, assets) -> tuple[int, str]:
    """The one-class sign and where it came from."""
    from ..methods import memorization as mz

    if s.direction != "auto":
        return (1 if s.direction == "higher" else -1), "the direction asked for"
    shipped = mz.default_calibration(model.model_id, assets)
    for d in ([shipped.__dict__] + list(shipped.detectors)) if shipped is not None else []:
        if (d.get("metric"), d.get("layer") or "", d.get("t")) == (s.metric, layer, s.t):
            return int(d["direction"]), "the sign the model's shipped two-class calibration fitted for this detector"
    return mz.paper_direction(s.metric), "the detector's paper direction"


class Calibrate(Feature):
    name = "calibrate"
    help = "fit the memorization threshold from known images (two-class, or one-class from non-training images)"
    Settings = CalibrateSettings
    outputs = ()

    def cost(self, s: CalibrateSettings, unet_config: dict | None = None) -> Cost:
        per_image = s.noise_draws * (3 if s.metric == "flipd" else 1)
        cfg = 2 if s.guidance != 1 else 1
        return Cost(forward=(len(s.memorized) + 2 * len(s.generalized) + 2 * s.reference_prompts) * per_image
                    + s.reference_prompts * s.steps * cfg,
                    note="one (early-stopped) U-Net pass per image and noise draw (FLIPD: three), one more for the "
                         "out-of-domain check, and steps x 2 (guidance) passes per reference generation; a folder "
                         "counts as one image")

    def run(self, s: CalibrateSettings, *, runtime=None, progress=None, should_stop=None, model=None,
            memorized_images=None, generalized_images=None) -> CalibrateResult:
        """``memorized_images`` / ``generalized_images``: in-memory images (PIL, arrays, tensors) of a
        library caller in place of the files in ``s``, named by ``s.memorized`` / ``s.generalized``."""
        import torch

        from ..methods import memorization as mz

        rt = runtime_or_default(runtime)
        prog = Progress.wrap(progress, should_stop)
        model = load(s.model, rt, model)
        layer = "" if s.metric in mz.LAYERLESS else (s.layer or mz.default_layer(model, rt.assets))
        sets, skipped = [], []
        for label, paths, given in (("memorized", s.memorized, memorized_images),
                                    ("generalized", s.generalized, generalized_images)):
            if not paths and (given is None or len(given) == 0):
                sets.append((None, []))
                continue
            tens, names, problems = load_images(model, given if given is not None else paths,
                                                list(file_texts(paths)) if given is not None else None)
            if tens is None:
                raise UserError(f"no readable {label} image: {problems[0]}" if problems else f"no {label} images")
            sets.append((tens, names))
            skipped += problems
        (mem, mem_names), (gen, gen_names) = sets
        if s.reference_prompts:
            ref, ref_names = reference_generations(model, s, prog)
            gen = ref if gen is None else torch.cat([gen, ref])
            gen_names = gen_names + ref_names
        if mem is not None:
            prog(0.5, f"scoring {len(mem)} memorized images")
            sm = mz.scores(model, mem, layer, s.t, s.metric, s.noise_draws, s.seed)
        prog(0.6, f"scoring {len(gen)} generalized images")
        sg = mz.scores(model, gen, layer, s.t, s.metric, s.noise_draws, s.seed)
        sources = " ".join(file_texts(s.generalized)) + (f" + {s.reference_prompts} generations of non-memorized prompts"
                                             if s.reference_prompts else "")
        direction, why = _direction(s, model, layer, rt.assets)
        if mem is None:
            cal = mz.calibrate_one_class(sg, model.model_id, layer, s.t, s.metric, direction, s.target_fpr,
                                         s.confidence, s.noise_draws,
                                         notes=f"one-class ({why}); known non-training images: {sources.strip()}")
        else:
            cal = mz.calibrate(sm, sg, model.model_id, layer, s.t, s.metric, s.target_fpr, s.noise_draws,
                               notes=f"memorized: {' '.join(file_texts(s.memorized))}; generalized: {sources.strip()}")
        if len(gen) >= 2:   # out-of-domain reference: the known-generalized (real, in-domain) images
            prog(0.8, "out-of-domain reference")
            err = mz.denoising_error_draws(model, gen, mz.OOD_T, s.noise_draws, s.seed).mean(1)
            mz.fit_ood(cal, err, mz.OOD_T, 0.01, "the known-generalized images")
        return CalibrateResult(settings=s, calibration=cal, memorized_names=mem_names, generalized_names=gen_names,
                               skipped=skipped, direction_source=why if mem is None else "")

    # CLI: the calibration file, its headline numbers as JSON on stdout
    def add_output_arguments(self, parser) -> None:
        parser.add_argument("--out", required=True, metavar="PATH", help="write the calibration JSON here")

    def write_outputs(self, result: CalibrateResult, args) -> list[str]:
        notes = [f"skipped: {p}" for p in result.skipped] + [f"wrote {result.write(args.out)}"]
        if result.calibration.kind == "one-class":
            notes.insert(0, result.summary())
        print("\n".join(notes), file=sys.stderr)
        return [dumps(result.calibration.headline())]


FEATURE = Calibrate()
