"""``audit``: the memorization check (Zhang et al. 2025, arXiv:2512.20963, §4.1, Alg. 1) over a whole
folder, list or glob of images -- on one process, or sharded over ``torchrun`` / ``accelerate launch``
processes (one per GPU, several machines) -- resumable, writing ``scores.csv`` and a self-contained
``report.html``. A row depends on (image, model, settings, seed) alone, so a sharded run gives the rows
of the single-process run."""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import sharding
from ..errors import UserError
from .base import Cost, Feature, Progress, Result, runtime_or_default
from .common import load, model_setting
from .score import COLUMN_HELP, METRIC_CHOICES, check_image_metric, nearest_of, score_tensors
from .settings import Settings, seed_setting, setting

HEADER = ["path", "sha256", "score", "spread", "verdict", "implied_fpr", "nearest_train_rms", "reason", "error"]
TABLE = "scores.csv"
REPORT = "report.html"
LABELS = {"1": 1, "0": 0, "memorized": 1, "generalized": 0, "true": 1, "false": 0, "mem": 1, "gen": 0}


@dataclass(frozen=True)
class AuditSettings(Settings):
    COMMAND = "audit"
    source: str = sharding.source_setting()
    model: str = model_setting()
    out: str = sharding.out_setting("scores.csv, report.html")
    calibration: str = setting("", help="calibration JSON from `calibrate` (empty: the model's shipped one)",
                               max_chars=1000)
    layer: str = setting("", help="U-Net module (empty: the calibration's layer)", max_chars=200)
    t: int | None = setting(None, lo=0, hi=999, label="timestep t", help="timestep (auto: the calibration's, else 50)")
    metric: str | None = setting(None, choices=METRIC_CHOICES, help="detector (auto: the calibration's, else std)")
    noise_draws: int | None = setting(None, lo=1, hi=64, label="noise draws",
                                      help="noise draws averaged (auto: the calibration's, else 4)")
    invert: bool = setting(False, help="flip intensities first (dark-on-light drawings for a light-on-dark model)")
    batch_size: int = setting(32, lo=1, hi=1024, label="batch size",
                              help="images per process and step; each finished batch is saved (a kill loses at most one)")
    labels: str = setting("", max_chars=1000,
                          help="optional CSV of path,label (1/memorized or 0/generalized): adds a ROC to the report")
    top: int = setting(24, lo=0, hi=500, help="most memorized-looking images shown in the report")
    seed: int = seed_setting(help="seed of the noise draws (per image: the same row on any process)")

    def check(self) -> None:
        check_image_metric(self.metric)
        if not self.source:
            raise UserError("name the images to audit: a folder, a text file of paths, or a glob pattern")
        if not self.out:
            raise UserError("name an output folder (--out DIR)")


@dataclass
class AuditResult(Result):
    out: Path | None = None
    rows: list = field(default_factory=list)        # merged rows (dicts, HEADER keys) on the main process
    counts: dict = field(default_factory=dict)
    scored_now: int = 0                             # rows this run added (all processes)
    skipped_done: int = 0                           # images an earlier run had done
    processes: int = 1
    seconds: float = 0.0                            # whole run (loading, scoring, merge, report)
    scoring_seconds: float = 0.0                    # the main process's scoring loop
    detector: str = ""
    main: bool = True

    def numbers(self) -> dict:
        return {"out": self.out, "images": len(self.rows), "counts": self.counts, "scored_now": self.scored_now,
                "already_done": self.skipped_done, "processes": self.processes, "seconds": round(self.seconds, 2),
                "scoring_seconds": round(self.scoring_seconds, 2),
                "detector": self.detector, "columns": COLUMN_HELP}

    def summary(self) -> str:
        if not self.main:
            return ""
        counts = ", ".join(f"{n} {v}" for v, n in sorted(self.counts.items()))
        rate = self.scored_now / self.scoring_seconds if self.scoring_seconds > 0 else 0.0
        return (f"audited {len(self.rows)} images ({counts}) with {self.detector}; {self.scored_now} scored now on "
                f"{self.processes} process(es) ({rate:.1f} images/s), {self.skipped_done} already done. "
                f"Wrote {self.out / TABLE} and {self.out / REPORT}")


def identity(s: AuditSettings, model, how) -> dict:
    """The settings that decide a row's values (a folder holds rows of one identity only)."""
    cal = Path(s.calibration)
    return {"model": model.model_id, "layer": how.layer, "t": how.t, "metric": how.metric, "noise_draws": how.n_noise,
            "invert": s.invert, "seed": s.seed,
            "calibration": sharding.content_hash(str(cal)) if s.calibration else "shipped" if how.calibration else ""}


def _load(model, key, invert):
    from ..data.images import ImageError, load_image
    from .score import _colourfulness

    c, h, w = model.image_shape
    path, digest = key
    if not digest:
        return None, 0.0, "cannot read the file"
    try:
        x = load_image(path, (h, w), channels=c, invert=invert)
        return x, (_colourfulness(path) if c == 1 else 0.0), ""
    except ImageError as err:
        return None, 0.0, str(err).split(": ", 1)[-1] if str(err).startswith(Path(path).name) else str(err)


def _fmt(v, digits: int) -> str:
    return "" if v is None else f"{v:.{digits}g}"


def score_batch(model, how, keys: list[tuple[str, str]], s: AuditSettings, builtin: bool) -> list[list]:
    """CSV rows of one batch: every image scored, or its reason to be skipped."""
    loaded = [_load(model, k, s.invert) for k in keys]
    good = [i for i, (x, _, _) in enumerate(loaded) if x is not None]
    rows: dict[int, list] = {i: [keys[i][0], keys[i][1], "", "", "skipped", "", "", "", loaded[i][2]]
                             for i in range(len(keys)) if loaded[i][0] is None}
    if good:
        x = torch.cat([loaded[i][0] for i in good])
        names, colour = [keys[i][0] for i in good], [loaded[i][1] for i in good]
        pad = s.batch_size - len(good)      # every network call has one shape: bit-identical rows on any shard
        try:
            scored = score_tensors(model, torch.cat([x, x[:1].expand(pad, *x.shape[1:])]) if pad > 0 else x,
                                   names + [names[0]] * pad, colour + [colour[0]] * pad, how, s.seed)[:len(good)]
        except UserError:   # one image without content: score them one by one to name it
            scored = []
            for j, i in enumerate(good):
                try:
                    scored += score_tensors(model, x[j:j + 1], [keys[i][0]], [loaded[i][1]], how, s.seed)
                except UserError as err:
                    scored.append(err)
        rms = nearest_of(model, x)[2] if builtin else [None] * len(good)
        for j, i in enumerate(good):
            r = scored[j]
            if isinstance(r, Exception):
                rows[i] = [keys[i][0], keys[i][1], "", "", "skipped", "", "", "", str(r)]
                continue
            rows[i] = [keys[i][0], keys[i][1], _fmt(r.score, 8), _fmt(r.spread, 4), r.verdict,
                       "" if r.implied_fpr is None else f"{r.implied_fpr:.4f}", _fmt(rms[j], 4), r.reason, ""]
    return [rows[i] for i in range(len(keys))]


def read_labels(path: str) -> dict[str, int]:
    import csv

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p.name}: no such labels file")
    out = {}
    with open(p, newline="") as f:
        for row in csv.reader(f):
            if len(row) < 2 or row[0].strip().lower() in ("path", "file", "image"):
                continue
            lab = LABELS.get(row[1].strip().lower())
            if lab is None:
                raise UserError(f"{p.name}: label {row[1]!r} for {row[0]!r} is not 1/0 or memorized/generalized")
            q = Path(row[0].strip())
            out[str(q if q.is_absolute() else p.parent / q)] = lab
    return out


def write_report(res: AuditResult, s: AuditSettings, how, model, builtin: bool) -> Path:
    """``report.html``: verdict counts, the score histogram over the references, ROC (with labels), the most
    memorized-looking images (with their nearest training images for built-ins), skipped files, settings."""
    import numpy as np

    from ..data.images import load_image, to_pil
    from ..methods.memorization import paper_direction
    from ..metrics import auroc, roc, tpr_at_fpr
    from ..plots.html_report import Report
    from ..plots.memorization import audit_histogram, roc_figure
    from .common import upscale_for

    cal = how.calibration
    rows = res.rows
    scored = [r for r in rows if r["score"] != ""]
    rep = Report(f"Memorization audit: {model.model_id}",
                 f"{len(rows)} images, detector {res.detector}" + (f", {cal.rule()}" if cal else ", no calibration"))
    rep.heading("Verdicts")
    rep.table(["verdict", "images"], [[v, n] for v, n in sorted(res.counts.items())], elem_id="counts", css_class="counts")
    scores = [float(r["score"]) for r in scored]
    rep.heading("Scores against the model's reference distributions")
    rep.figure(audit_histogram(scores, memorized=cal.memorized_scores if cal else (),
                               generalized=cal.generalized_scores if cal else (),
                               threshold=cal.threshold if cal else None, fpr=cal.fpr if cal else None,
                               metric=how.metric), "histogram of scores", elem_id="histogram")
    if s.labels:
        labels = read_labels(s.labels)
        sign = cal.direction if cal else paper_direction(how.metric)
        pos = [sign * float(r["score"]) for r in scored if labels.get(r["path"]) == 1]
        neg = [sign * float(r["score"]) for r in scored if labels.get(r["path"]) == 0]
        rep.heading("ROC on your labels")
        if pos and neg:
            f, t = roc(pos, neg)
            rep.figure(roc_figure(f, t, auroc(pos, neg), tpr_at_fpr(pos, neg)), "ROC", elem_id="roc")
            rep.paragraph(f"{len(pos)} labelled memorized, {len(neg)} labelled generalized.")
        else:
            rep.paragraph(f"the labels name {len(pos)} memorized and {len(neg)} generalized audited images; "
                          "a ROC needs both")
    if s.top and scored:
        if cal is not None:
            order = sorted(scored, key=lambda r: (float(r["implied_fpr"] or 1), -cal.direction * float(r["score"])))
        else:
            sign = paper_direction(how.metric)
            order = sorted(scored, key=lambda r: -sign * float(r["score"]))
        top = order[:s.top]
        c, h, w = model.image_shape
        up = upscale_for(model, 64)
        imgs = torch.cat([load_image(r["path"], (h, w), channels=c, invert=s.invert) for r in top])
        thumbs = to_pil(imgs, upscale=up)
        header = ["image"] + (["nearest training image"] if builtin else []) + ["path", "score", "verdict",
                                                                                  "implied_fpr", "nearest_train_rms"]
        near = to_pil(nearest_of(model, imgs)[0], upscale=up) if builtin else None
        table = []
        for i, r in enumerate(top):
            table.append([("img", thumbs[i])] + ([("img", near[i])] if builtin else [])
                         + [r["path"], r["score"], r["verdict"], r["implied_fpr"], r["nearest_train_rms"]])
        rep.heading(f"The {len(top)} most memorized-looking images")
        rep.paragraph("lowest implied false-positive rate first" if cal else "most extreme score first")
        rep.table(header, table, elem_id="flagged")
    skipped = [r for r in rows if r["error"]]
    if skipped:
        rep.heading(f"Skipped files ({len(skipped)})")
        rep.table(["path", "reason"], [[r["path"], r["error"]] for r in skipped], elem_id="skipped")
    rep.heading("Settings")
    rep.code(json.dumps({**s.to_dict(), "resolved": identity(s, model, how)}, indent=1))
    rep.paragraph("Reproduce (one process; the same rows under torchrun/accelerate launch):")
    rep.code(res.reproduce())
    if scores:
        rep.paragraph(f"score range {np.min(scores):.4g} .. {np.max(scores):.4g}; columns: "
                      + "; ".join(f"{k}: {v}" for k, v in COLUMN_HELP.items()))
    path = Path(s.out) / REPORT
    sharding.atomic_write(path, rep.render())
    return path


class Audit(Feature):
    name = "audit"
    help = "memorization audit of a whole folder/list/glob: scores.csv + report.html, sharded (torchrun) and resumable"
    Settings = AuditSettings
    outputs = ()
    distributed = True

    def cost(self, s: AuditSettings, unet_config: dict | None = None) -> Cost:
        return Cost(forward=(4 if s.metric == "flipd" else 2) * (s.noise_draws or 4),
                    note="per image: one early-stopped U-Net pass per noise draw (FLIPD: 3) and one for the "
                         "out-of-domain check")

    def run(self, s: AuditSettings, *, runtime=None, progress=None, should_stop=None, model=None,
            state=None) -> AuditResult:
        """``state``: accelerate's ``PartialState`` when launched by torchrun / accelerate launch."""
        from ..methods import memorization as mz
        from ..methods.memorization_builtin import BUILTIN_MODELS

        t0 = time.perf_counter()
        rt = sharding.process_runtime(runtime_or_default(runtime), state)
        prog = Progress.wrap(progress, should_stop)
        paths = sharding.list_sources(s.source, check=prog.check)
        model = load(s.model, rt, model)
        how = mz.setup(model, rt.assets, s.layer, s.t, s.metric, s.noise_draws,
                       mz.Calibration.load(s.calibration) if s.calibration else None)
        if s.labels:
            read_labels(s.labels)   # a bad labels file fails before any work
        run = sharding.ShardedRun(Path(s.out), HEADER, identity(s, model, how), state)
        run.open()
        builtin = model.model_id in BUILTIN_MODELS
        todo, already = sharding.pending(run, paths)
        bar = None
        if run.is_main and prog.bars:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), unit="img", desc=f"audit (rank 0 of {run.world})", file=sys.stderr)
        done_now, t_score = 0, time.perf_counter()
        for i in range(0, len(todo), s.batch_size):
            prog.check()
            batch = todo[i:i + s.batch_size]
            run.write(score_batch(model, how, batch, s, builtin))
            done_now += len(batch)
            if bar is not None:
                bar.update(len(batch))
            if run.is_main and bar is None:
                prog(done_now / max(1, len(todo)), f"scored {done_now} of {len(todo)} images (this process)")
            else:
                prog.check()
        if bar is not None:
            bar.close()
        scoring_s = time.perf_counter() - t_score
        counts = run.total(done_now, already)
        run.barrier()
        res = AuditResult(settings=s, out=Path(s.out), processes=run.world, main=run.is_main,
                          scored_now=counts[0], skipped_done=counts[1], scoring_seconds=scoring_s,
                          detector=how.calibration.detector_name() if how.calibration else
                          f"{how.metric} of `{how.layer}` at t = {how.t}")
        if run.is_main:
            res.rows = run.merged(paths)
            for r in res.rows:
                res.counts[r["verdict"]] = res.counts.get(r["verdict"], 0) + 1
            run.write_table(TABLE, res.rows)
            res.seconds = time.perf_counter() - t0
            write_report(res, s, how, model, builtin)
        run.barrier()
        res.seconds = time.perf_counter() - t0
        return res

    def write_outputs(self, result: AuditResult, args) -> list[str]:
        return [result.summary()] if result.main else []


FEATURE = Audit()
