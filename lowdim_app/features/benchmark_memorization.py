"""``benchmark memorization``: the standard memorization-detection benchmark, every detector side by
side, in one command.

Text-to-image pipelines (the field's protocol for Stable Diffusion v1.4: Wen et al. 2024,
arXiv:2407.21720; Jeon et al. 2025, arXiv:2412.04140; Zhang et al. 2025, arXiv:2512.20963, Table 1,
LAION-SD1.4 row): ``n`` images for each of the 500 memorized prompts (Webster 2023, arXiv:2305.08694)
and the 500 non-memorized prompts shipped in :mod:`lowdim_app.data.prompts` (``--limit`` takes the
first prompts of each set), guided DDIM. A prompt's label is the list it comes from, and a detector's
value for a prompt is the mean over its ``n`` images (as Wen et al. and Jeon et al. evaluate).
The built-in unconditional digit models: ``--samples`` seeded samples, labelled memorized / generalized
by the distance of their nearest training image (< 0.07 / > 0.10 RMS; the offline stand-in for the SSCD
labels of Zhang et al. 2025, App. B.2), one unit per image.

Every image is written as a PNG and read back before the image detectors score it (what a user
uploads); the prompt detectors re-run the first steps of its guided trajectory from its ``x_T``
(:mod:`lowdim_app.methods.detectors`). The table: AUROC, TPR at 1 % and 3 % FPR (a threshold the
detector can run at; no interpolation) in each detector's paper direction (nothing fitted on the
evaluated sets), seconds per image of each detector alone (this process, this device), images.

Seeded, resumable and sharded: image ``k`` of prompt ``i`` of a set starts from ``x_T`` drawn with its own
seed (:func:`image_noise`) and each prompt's ``n`` images go through every network call together, so a
row depends on (prompt, image index, model, settings, seed) only -- not on the process count, the
shard or what ran before. Under ``torchrun`` / ``accelerate launch`` the prompts are shared out over
the processes (:mod:`.sharding`); every finished prompt is saved (``parts/``), and a rerun with the same
``--out`` (a larger ``--limit`` included) computes only what is missing.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import sharding
from ..errors import UserError
from .base import Cost, Feature, Progress, Result, csv_text, runtime_or_default
from .common import load, model_setting
from .settings import Settings, seed_setting, setting

SUITES = ("memorization",)
SETS = ("mem", "nonmem")                   # seed streams 0 and 1 (2: calibrate's reference generations)
SAMPLE_SET = "sample"                      # unconditional built-ins: seed stream 0
BASE_HEADER = ["path", "sha256", "set", "label", "unit", "prompt_index", "image", "prompt", "nearest_train_rms",
               "gen_seconds"]
TABLE_FIELDS = ["detector", "label", "paper", "direction", "needs_prompt", "auroc", "tpr_at_1pct_fpr",
                "tpr_at_3pct_fpr", "auroc_per_image", "s_per_image", "images", "units_memorized",
                "units_generalized", "network_evaluations"]
# The papers' numbers on SD v1.4 with these prompt sets (what a run on CompVis/stable-diffusion-v1-4 compares to).
PAPER_NUMBERS = [
    {"detector": "std", "source": "Zhang et al. 2025, Table 1 (LAION-SD1.4)", "auroc": 0.987, "tpr_at_1pct_fpr": 0.961,
     "s_per_image": 0.067},
    {"detector": "text_noise_norm", "source": "Zhang et al. 2025, Table 1 (Wen et al. 2024 row)", "auroc": 0.986,
     "tpr_at_1pct_fpr": 0.961, "s_per_image": 0.134},
    {"detector": "flipd", "source": "Zhang et al. 2025, Table 1 (Ross et al. 2024 row)", "auroc": 0.956,
     "tpr_at_1pct_fpr": 0.915, "s_per_image": 0.545},
    {"detector": "text_noise_norm", "source": "Wen et al. 2024, repository notebook det_mem_viz (n = 4, all 50 steps)",
     "auroc": 0.994, "tpr_at_1pct_fpr": 0.982, "s_per_image": None},
]
TABLE, UNITS, SUMMARY, ROC = "scores.csv", "prompts.csv", "table.csv", "roc.png"


def image_seed(seed: int, stream: int, index: int, image: int) -> int:
    """The seed of ``x_T`` of image ``image`` of item ``index`` in seed stream ``stream``."""
    return int(np.random.SeedSequence([int(seed) % 2**63, stream, index, image]).generate_state(1, np.uint64)[0] % 2**63)


def image_noise(model, seed: int, stream: int, index: int, images) -> "torch.Tensor":  # noqa: F821
    """``x_T`` of the listed images of one item (``len(images) x sample_shape``), drawn on the CPU."""
    import torch

    return torch.cat([model.randn(1, image_seed(seed, stream, index, k)) for k in images])


@dataclass(frozen=True)
class BenchmarkSettings(Settings):
    COMMAND = "benchmark"
    suite: str = setting("memorization", positional=True, choices=SUITES, help="the benchmark to run: memorization")
    model: str = model_setting("CompVis/stable-diffusion-v1-4")
    out: str = sharding.out_setting("scores.csv, prompts.csv, table.csv, table.json, roc.png, images/")
    images_per_prompt: int = setting(4, lo=1, hi=64, label="images per prompt",
                                     help="images generated per prompt (n; text models) / per batch (built-ins)")
    limit: int = setting(0, lo=0, hi=100_000, help="prompts per set, the first ones (0: all 500); rerun with a larger "
                                                    "limit and the same --out to extend a run")
    samples: int = setting(384, lo=2, hi=100_000, help="unconditional built-in models: samples generated")
    steps: int = setting(50, lo=1, hi=1000, help="DDIM steps of the generation")
    guidance: float = setting(7.5, lo=0.0, hi=50.0, help="classifier-free guidance of the generation (text models)")
    detectors: tuple[str, ...] = setting((), help="detectors to run (default: every one that applies): std l4_l2 "
                                                  "entropy max_min denoising_error flipd text_noise_norm sharpness")
    layer: str = setting("", max_chars=200, help="U-Net module of the spikiness detectors (empty: SD v1.4's "
                                                 "up_blocks.0.resnets.2, or the built-in model's calibrated layer)")
    t: int = setting(50, lo=1, hi=999, label="timestep t", help="timestep of the image detectors")
    noise_draws: int = setting(1, lo=1, hi=64, label="noise draws",
                               help="noise draws (FLIPD: Hutchinson probes) averaged per image")
    first_steps: int = setting(1, lo=1, hi=1000, label="first steps",
                               help="prompt detectors: generation steps read (Wen et al., Jeon et al.)")
    memorized_prompts: str = setting("", max_chars=1000,
                                     help="memorized prompts (.txt or .jsonl; empty: the shipped SD v1.4 set)")
    nonmemorized_prompts: str = setting("", max_chars=1000,
                                        help="non-memorized prompts (.txt or .jsonl; empty: the shipped SD v1.4 set)")
    seed: int = seed_setting(help="seed of every x_T and noise draw (per image: the same row on any process)")

    def check(self) -> None:
        from ..methods.detectors import detector

        if not self.out:
            raise UserError("name an output folder (--out DIR)")
        for d in self.detectors:
            detector(d)
        if len(set(self.detectors)) != len(self.detectors):
            raise UserError("a detector is named twice")
        if self.first_steps > self.steps:
            raise UserError(f"first steps ({self.first_steps}) must be at most the steps ({self.steps})")


@dataclass
class Unit:
    """What one process computes in one go: one prompt (or one chunk of samples) and its images."""

    set: str
    index: int
    prompt: str
    images: list[int]
    stream: int

    def key(self, k: int) -> str:
        return f"images/{self.set}/{self.index:05d}_{k}.png"

    @property
    def name(self) -> str:
        return f"{self.set}/{self.index:05d}"


@dataclass
class BenchmarkResult(Result):
    out: Path | None = None
    table: list[dict] = field(default_factory=list)      # one row per detector (main process)
    units: list[dict] = field(default_factory=list)      # one row per prompt / sample
    rows: list[dict] = field(default_factory=list)       # one row per image
    curves: dict = field(default_factory=dict)           # detector -> (fpr, tpr)
    model_id: str = ""
    unit_kind: str = "prompt"
    labels_note: str = ""
    images_now: int = 0
    already_done: int = 0
    processes: int = 1
    gen_s_per_image: float | None = None
    seconds: float = 0.0
    main: bool = True

    def numbers(self) -> dict:
        return {"out": self.out, "model": self.model_id, "unit": self.unit_kind, "labels": self.labels_note,
                "images": len(self.rows), "images_now": self.images_now, "already_done": self.already_done,
                "processes": self.processes, "generation_s_per_image": self.gen_s_per_image,
                "table": self.table, "papers": PAPER_NUMBERS, "seconds": round(self.seconds, 2)}

    def to_csv(self) -> str:
        return csv_text(TABLE_FIELDS, [[_cell(r.get(k)) for k in TABLE_FIELDS] for r in self.table])

    def figure(self):
        from ..plots.benchmark import benchmark_roc

        n_mem = self.table[0]["units_memorized"] if self.table else 0
        n_gen = self.table[0]["units_generalized"] if self.table else 0
        curves = {f"{d} (AUROC {next(r['auroc'] for r in self.table if r['detector'] == d):.3f})": c
                  for d, c in self.curves.items()}
        shown = Path(self.model_id).name if Path(self.model_id).is_dir() else self.model_id   # a local folder: its name
        return benchmark_roc(curves, f"{shown}: {n_mem} memorized vs {n_gen} generalized {self.unit_kind}s")

    def summary(self) -> str:
        if not self.main:
            return ""
        lines = [f"memorization benchmark, {self.model_id}: {self.labels_note}",
                 f"{'detector':<16} {'AUROC':>6} {'TPR@1%':>7} {'TPR@3%':>7} {'s/image':>9}  direction"]
        for r in self.table:
            lines.append(f"{r['detector']:<16} {_fmt(r['auroc']):>6} {_fmt(r['tpr_at_1pct_fpr']):>7} "
                         f"{_fmt(r['tpr_at_3pct_fpr']):>7} {r['s_per_image']:>9.4g}  {r['direction']}")
        if self.gen_s_per_image is not None:
            lines.append(f"generation: {self.gen_s_per_image:.4g} s per image; {len(self.rows)} images, "
                         f"{self.images_now} made now on {self.processes} process(es), {self.already_done} already done")
        lines.append(f"wrote {self.out / SUMMARY}, {self.out / 'table.json'}, {self.out / TABLE}, {self.out / UNITS}, "
                     f"{self.out / ROC}")
        return "\n".join(lines)


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _cell(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    return "" if v is None else v


def _value(v: float) -> str:
    return repr(float(v))


def plan(model, s: BenchmarkSettings) -> tuple[list[Unit], dict, str]:
    """The units of the run, the identity parts they depend on, and how items are labelled."""
    from ..methods.memorization_builtin import BUILTIN_MODELS

    if model.is_text:
        from ..data.prompts import load_prompt_set

        sets = [load_prompt_set(s.memorized_prompts or "sd14-memorized"),
                load_prompt_set(s.nonmemorized_prompts or "sd14-nonmemorized")]
        units = []
        for stream, (name, pset) in enumerate(zip(SETS, sets)):
            take = pset.prompts[:s.limit] if s.limit else pset.prompts
            units += [Unit(name, i, p, list(range(s.images_per_prompt)), stream) for i, p in enumerate(take)]
        note = (f"prompt label = its list ({sets[0].name}: memorized, {sets[1].name}: generalized), "
                f"{s.images_per_prompt} images per prompt, a prompt's value = the mean over its images")
        return units, {"memorized_prompts": sets[0].digest, "nonmemorized_prompts": sets[1].digest}, note
    if s.memorized_prompts or s.nonmemorized_prompts:
        raise UserError(f"{model.model_id} is unconditional: prompt sets apply to text-to-image models only")
    if model.model_id not in BUILTIN_MODELS:
        raise UserError(f"{model.model_id} is unconditional and not a built-in model: the benchmark needs a "
                        "text-to-image pipeline (the prompt sets) or a built-in digit model (known training set); "
                        "for your own labelled images use `audit --labels`")
    per = s.images_per_prompt
    units = [Unit(SAMPLE_SET, c // per, "", list(range(min(per, s.samples - c))), 0) for c in range(0, s.samples, per)]
    note = ("samples labelled by their nearest training image: RMS < 0.07 memorized, > 0.10 generalized "
            "(ambiguous ones left out)")
    return units, {}, note


def _prompt_hash(prompt: str) -> str:
    import hashlib

    return hashlib.sha256(prompt.encode()).hexdigest()[:sharding.HASH_CHARS]


def _save_png(img, path: Path) -> None:
    import os
    import uuid

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)


class Benchmark(Feature):
    name = "benchmark"
    help = ("memorization benchmark: n images per memorized / non-memorized prompt (SD v1.4 sets shipped), every "
            "detector side by side (AUROC, TPR at 1 and 3 percent FPR, s/image); sharded (torchrun), resumable")
    Settings = BenchmarkSettings
    outputs = ("png",)
    distributed = True

    def cost(self, s: BenchmarkSettings, unet_config: dict | None = None) -> Cost:
        text = bool(unet_config and unet_config.get("cross_attention_dim")) if unet_config is not None else True
        images = (2 * (s.limit or 500) * s.images_per_prompt) if text else s.samples
        names = s.detectors or ("std", "denoising_error", "flipd") + (("text_noise_norm", "sharpness") if text else ())
        per = s.steps * (2 if text and s.guidance != 1 else 1)
        per += s.noise_draws * (("std" in names or any(m in names for m in ("l4_l2", "entropy", "max_min")))
                                + ("denoising_error" in names) + 3 * ("flipd" in names))
        per += s.first_steps * (2 * ("text_noise_norm" in names) + 6 * ("sharpness" in names))
        return Cost(forward=images * per, note="per image: steps x 2 (guidance) generation passes, one pass per noise "
                                               "draw and image detector (FLIPD: 3), 2 (Wen) / 6 (sharpness) per first step")

    def run(self, s: BenchmarkSettings, *, runtime=None, progress=None, should_stop=None, model=None,
            state=None) -> BenchmarkResult:
        """``state``: accelerate's ``PartialState`` when launched by torchrun / accelerate launch."""
        from ..methods import detectors as D
        from ..methods import memorization as mz

        t0 = time.perf_counter()
        rt = sharding.process_runtime(runtime_or_default(runtime), state)
        prog = Progress.wrap(progress, should_stop)
        model = load(s.model, rt, model)
        names = D.applicable(model, s.detectors)
        spiky = any(D.detector(n).needs_layer for n in names)
        layer = (s.layer or mz.default_layer(model, rt.assets)) if spiky else ""
        opts = D.DetectorOptions(layer=layer, t=s.t, noise_draws=s.noise_draws, seed=s.seed, steps=s.steps,
                                 guidance=s.guidance, first_steps=s.first_steps, batch_size=max(s.images_per_prompt, 1))
        units, parts, note = plan(model, s)
        header = BASE_HEADER + [c for n in names for c in (n, f"{n}_seconds")]
        identity = {"suite": s.suite, "model": model.model_id, "images_per_prompt": s.images_per_prompt,
                    "steps": s.steps,
                    "guidance": s.guidance if model.is_text else None, "detectors": list(names), "layer": layer,
                    "t": s.t, "noise_draws": s.noise_draws, "first_steps": s.first_steps if model.is_text else None,
                    "seed": s.seed, **parts}
        run = sharding.ShardedRun(Path(s.out), header, identity, state)
        run.open()
        done = run.done()
        share = run.shard(units)
        todo = [u for u in share if any((u.key(k), _prompt_hash(u.prompt)) not in done for k in u.images)]
        bar = None
        if run.is_main and prog.bars:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), unit="prompt" if model.is_text else "chunk",
                       desc=f"benchmark (rank 0 of {run.world})", file=sys.stderr)
        made = 0
        for j, u in enumerate(todo):
            prog.check()
            run.write(self._unit(model, u, names, opts, s, Path(s.out), prog))
            made += len(u.images)
            if bar is not None:
                bar.update(1)
            elif run.is_main:
                prog((j + 1) / max(1, len(todo)), f"{u.name}: {j + 1} of {len(todo)} (this process)")
        if bar is not None:
            bar.close()
        counts = run.total(made, sum(len(u.images) for u in share) - made)
        run.barrier()
        res = BenchmarkResult(settings=s, out=Path(s.out), model_id=model.model_id, processes=run.world,
                              main=run.is_main, images_now=counts[0], already_done=counts[1], labels_note=note,
                              unit_kind="prompt" if model.is_text else "image")
        if run.is_main:
            res.rows = run.merged([u.key(k) for u in units for k in u.images])
            self._tables(res, names, model.is_text)
            run.write_table(TABLE, res.rows)
            out = Path(s.out)
            sharding.atomic_write(out / UNITS, csv_text(list(res.units[0]) if res.units else ["unit"],
                                                        [list(r.values()) for r in res.units]))
            sharding.atomic_write(out / SUMMARY, res.to_csv())
            res.seconds = time.perf_counter() - t0
            sharding.atomic_write(out / "table.json", json.dumps(res.to_json(), indent=1, default=str))
            if res.curves:
                res.write_figure(out / ROC)
        run.barrier()
        res.seconds = time.perf_counter() - t0
        return res

    def _unit(self, model, u: Unit, names, opts, s: BenchmarkSettings, out: Path, prog: Progress) -> list[list]:
        """Generate one prompt's images, save and reload them, score them with every detector: CSV rows."""
        import torch

        from ..data.images import load_image, to_pil
        from ..methods import detectors as D

        noise = image_noise(model, s.seed, u.stream, u.index, u.images)
        cond = model.encode_prompt(u.prompt, guidance_scale=s.guidance) if model.is_text else None
        t0 = time.perf_counter()
        z = model.ddim_sample(noise, model.num_train_timesteps - 1, s.steps, cond, step_callback=lambda *_: prog.check())
        imgs = model.decode(z).cpu()
        gen_s = (time.perf_counter() - t0) / len(u.images)
        c, h, w = model.image_shape
        for k, img in zip(u.images, to_pil(imgs)):
            _save_png(img, out / u.key(k))
        x = torch.cat([load_image(out / u.key(k), (h, w), channels=c) for k in u.images])
        values = D.score_images(model, [n for n in names if not D.detector(n).needs_prompt], x, opts)
        prompt_names = [n for n in names if D.detector(n).needs_prompt]
        if prompt_names:
            values.update(D.score_prompt(model, prompt_names, u.prompt, noise, opts))
        if model.is_text:
            labels, rms = ["memorized" if u.set == "mem" else "generalized"] * len(u.images), [""] * len(u.images)
        else:
            from ..methods.memorization_builtin import copy_labels, nearest_training

            dist = nearest_training(model, x)[0].nearest
            labels, rms = list(copy_labels(dist)), [f"{float(d):.6g}" for d in dist]
        rows = []
        for j, k in enumerate(u.images):
            row = [u.key(k), _prompt_hash(u.prompt), u.set, labels[j], u.name, u.index, k, u.prompt, rms[j],
                   f"{gen_s:.6g}"]
            for n in names:
                v, sec = values[n]
                row += [_value(v[j].mean()), f"{sec / len(u.images):.6g}"]
            rows.append(row)
        return rows

    @staticmethod
    def _tables(res: BenchmarkResult, names, text: bool) -> None:
        """Per-unit values (prompt: mean over its images) and the detector table."""
        from ..methods import detectors as D

        rows = res.rows
        groups: dict[str, list[dict]] = {}
        for r in rows:
            groups.setdefault(r["unit"] if text else r["path"], []).append(r)
        res.units = []
        for key, rs in groups.items():
            unit = {"unit": key, "set": rs[0]["set"], "label": rs[0]["label"], "prompt": rs[0]["prompt"],
                    "images": len(rs)}
            for n in names:
                unit[n] = float(np.mean([float(r[n]) for r in rs]))
            res.units.append(unit)
        res.gen_s_per_image = float(np.mean([float(r["gen_seconds"]) for r in rows])) if rows else None
        res.table, res.curves = [], {}
        for n in names:
            d = D.detector(n)
            mem = [u[n] for u in res.units if u["label"] == "memorized"]
            gen = [u[n] for u in res.units if u["label"] == "generalized"]
            q = D.detection_quality(mem, gen, d.memorized_if)
            per_image = None
            if text:
                pi = D.detection_quality([float(r[n]) for r in rows if r["label"] == "memorized"],
                                         [float(r[n]) for r in rows if r["label"] == "generalized"], d.memorized_if)
                per_image = pi["auroc"]
            res.table.append({"detector": n, "label": d.label, "paper": d.paper, "direction": d.direction_text,
                              "needs_prompt": d.needs_prompt, "auroc": q["auroc"],
                              "tpr_at_1pct_fpr": q["tpr_at_1pct_fpr"], "tpr_at_3pct_fpr": q["tpr_at_3pct_fpr"],
                              "auroc_per_image": per_image,
                              "s_per_image": float(np.mean([float(r[f"{n}_seconds"]) for r in rows])) if rows else 0.0,
                              "images": len(rows), "units_memorized": len(mem), "units_generalized": len(gen),
                              "network_evaluations": d.forwards})
            if q["roc"] is not None:
                res.curves[n] = q["roc"]

    def write_outputs(self, result: BenchmarkResult, args) -> list[str]:
        if not result.main:
            return []
        lines = [result.summary()]
        if getattr(args, "png", None) and result.curves:
            lines.append(f"wrote {result.write_figure(args.png)}")
        return lines


FEATURE = Benchmark()
