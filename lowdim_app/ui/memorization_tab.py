"""The "Memorization" tab: spikiness score + verdict per image, batch CSV, and calibration
(Zhang et al. 2025, §4.1, Alg. 1). A thin adapter over the ``score`` and ``calibrate`` features."""
from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import gradio as gr

from ..errors import UserError
from ..features.calibrate import FEATURE as CALIBRATE
from ..features.calibrate import CalibrateSettings
from ..features.audit import FEATURE as AUDIT
from ..features.audit import REPORT, TABLE, AuditSettings
from ..features.score import FEATURE as SCORE
from ..features.score import COLUMN_HELP, METRICS, ScoreSettings
from ..plots.common import to_pil
from .common import (handle_errors, intro, model_dropdown_choices, request_folder, run_in_worker, runtime, unchanged,
                     uploads, wire_cancellable)
from .lanes import MODEL_EVENTS

MAX_NOISE_DRAWS = 16
MAX_REFERENCE = 200      # reference generations offered here; the request budget refuses what does not fit
ONE_CLASS_HELP = ("**Two-class**: known memorized and known generalized images (ROC, AUROC). **One-class**, for a "
                  "model without a calibration: leave *Known memorized* empty and give images known not to be training "
                  "data -- and/or, for a text model, let it generate references from non-memorized prompts. The "
                  "threshold then promises a false-positive rate, stated with its uncertainty for the number of "
                  "references (at least 1/FPR - 1 of them: 99 for 1 %, 19 for 5 %). The fitted file is put into "
                  "*calibration file* above, so the next Score gives verdicts with it.")


def _is_zero(value) -> bool:
    try:
        return float(value) == 0
    except (TypeError, ValueError):
        return False   # not a number: the settings say so


def _reproduce(line: str, files: bool) -> str:
    return f"Reproduce{' (in the folder holding your files)' if files else ''}: `{line}`"


@handle_errors
def score(files, model_id, layer, t, metric, n_noise, n_generate, seed, calibration_file=None, invert=False,
          progress=gr.Progress(track_tqdm=True), request: gr.Request = None):
    """Score uploaded images (and/or ``n_generate`` fresh samples): table, CSV, histogram, summary, nearest
    training images, reproduce line.

    With ``calibration_file`` (a JSON saved by *Calibrate* or the CLI) its layer, t, metric and noise draws
    are used and its threshold gives the verdicts; otherwise the model's shipped calibration."""
    images, cal = uploads(files), uploads(calibration_file)
    if not images and _is_zero(n_generate):
        raise UserError("nothing to score: upload images, or set 'also generate samples' to 1 or more")
    uploaded = bool(cal)
    settings = ScoreSettings.from_raw(
        images=images, model=model_id, layer=(layer or "").strip(),
        t=None if uploaded else t, metric=None if uploaded or not metric else metric, noise_draws=None if uploaded else n_noise,
        calibration=cal[0] if uploaded else None, n_generate=n_generate, seed=seed, invert=bool(invert))
    if not uploaded and (settings.noise_draws or 0) > MAX_NOISE_DRAWS:
        raise UserError(f"noise draws must be at most {MAX_NOISE_DRAWS} here (the CLI allows 64)")
    limit = runtime().max_samples
    if settings.n_generate > limit:
        raise UserError(f"generated samples must be at most {limit} here (the CLI has no such limit)")
    for result in run_in_worker(SCORE, settings, request=request, lab="score", progress=progress):
        if result is None:
            yield unchanged(6)
            continue
        csv_path = result.write_csv(request_folder("score") / "scores.csv")
        yield (result.table(), str(csv_path), to_pil(result.figure()), result.summary(), _pairs(result.neighbour_pairs()),
               _reproduce(result.reproduce(extra="--csv scores.csv"), bool(images or cal)))


def _pairs(pairs: list) -> list:
    """Short captions for the (image | nearest training image) pairs."""
    return [(im, str(c).replace(" | nearest training image, RMS ", " | nearest: RMS ")) for im, c in pairs]


@handle_errors
def calibrate(mem_files, gen_files, model_id, layer, t, metric, target_fpr, reference_prompts=0,
              progress=gr.Progress(track_tqdm=True), request: gr.Request = None):
    """Fit a threshold from uploaded known-memorized and known-generalized images (two-class), or from
    known non-training images alone and/or ``reference_prompts`` generations of non-memorized prompts
    (one-class, with its promised FPR): figure, text with the reproduce line, calibration JSON."""
    settings = CalibrateSettings.from_raw(model=model_id, memorized=uploads(mem_files), generalized=uploads(gen_files),
                                          layer=(layer or "").strip(), t=t, metric=metric or "std",
                                          target_fpr=target_fpr, reference_prompts=reference_prompts or 0)
    for result in run_in_worker(CALIBRATE, settings, request=request, lab="calibrate", progress=progress):
        if result is None:
            yield unchanged(3)
            continue
        out = request_folder("calibrate") / f"{settings.model.strip().replace('/', '_')}_calibration.json"
        path = result.write(out)
        text = f"{result.summary()}\n\n{_reproduce(result.reproduce(extra=f'--out {shlex.quote(out.name)}'), True)}"
        yield to_pil(result.figure()), text, str(path)


@handle_errors
def audit(folder, model_id, out, batch_size, invert, seed, progress=gr.Progress(track_tqdm=True),
          request: gr.Request = None):
    """Audit a folder on the server (only offered when public mode is off): counts, CSV, report."""
    if runtime().public:
        raise UserError("auditing server folders is off in public mode")
    out = (out or "").strip() or str(request_folder("audit"))
    settings = AuditSettings.from_raw(source=(folder or "").strip(), model=model_id, out=out, batch_size=batch_size,
                                      invert=bool(invert), seed=seed)
    for result in run_in_worker(AUDIT, settings, request=request, lab="audit", progress=progress):
        if result is None:
            yield unchanged(4)
            continue
        counts = [[v, n] for v, n in sorted(result.counts.items())]
        downloads = request_folder("audit-files")       # gradio serves files from its own folders only
        files = [shutil.copy(Path(out) / name, downloads / name) for name in (TABLE, REPORT)]
        yield (f"{result.summary()}\n\nReproduce (`torchrun --nproc_per_node N -m lowdim_app ...` in place of "
               f"`python -m lowdim_app ...` shards it): `{result.reproduce()}`", counts, *map(str, files))


def build_audit() -> None:
    """A folder on this machine, scored like *Score* and written as ``scores.csv`` + ``report.html``."""
    with gr.Accordion("Audit a folder on the server (scores.csv + report.html; resumable)", open=False,
                      elem_id="audit-panel"):
        with gr.Row():
            folder = gr.Textbox(label="folder, list file or glob on the server", elem_id="audit-folder")
            out = gr.Textbox(label="output folder (empty: a fresh temporary one; an earlier one resumes)",
                             elem_id="audit-out")
        with gr.Row():
            model = gr.Dropdown(model_dropdown_choices(), value="digits-dup", label="Model", allow_custom_value=True,
                                elem_id="audit-model")
            batch = gr.Slider(1, 256, value=32, step=1, label="batch size", elem_id="audit-batch")
            seed = gr.Number(value=0, precision=0, label="seed", elem_id="audit-seed")
            invert = gr.Checkbox(False, label="invert intensities", elem_id="audit-invert")
        with gr.Row():
            go = gr.Button("Audit", variant="primary", elem_id="audit-btn")
            stop = gr.Button("Cancel", elem_id="audit-cancel")
        summary = gr.Markdown(elem_id="audit-summary", label="summary and reproduce line")
        with gr.Row():
            counts = gr.Dataframe(headers=["verdict", "images"], interactive=False, elem_id="audit-counts",
                                  label="images per verdict")
            table = gr.File(label="scores.csv", elem_id="audit-csv")
            report = gr.File(label="report.html (self-contained)", elem_id="audit-report")
    wire_cancellable((go, stop), audit, [folder, model, out, batch, invert, seed], [summary, counts, table, report],
                     api_name="audit", **MODEL_EVENTS)


INTRO = ("Upload images (or ask for generated samples) and press **Score**: each image gets a verdict, "
         "memorized or generalized, from how spiky the model's internal representation of it is. Look at the "
         "verdict column, at where your images (green lines) fall between the model's memorized and generalized "
         "references, and at each image beside its nearest training image.")
ABOUT = ("The paper's score is the spikiness (std) of the global-max-pooled activation of a U-Net layer at t = 50 "
         "(Zhang et al. 2025, arXiv:2512.20963, §4.1, Alg. 1); the denoising error (Carlini et al. 2023, "
         "arXiv:2301.13188) is the other detector. Each built-in model's shipped calibration picks the detector "
         "that separates its near-copies from novel images best; choose `std` under *metric* for the paper's "
         "score. *Calibrate a threshold* fits your own from known-memorized and known-generalized images.")


def build() -> None:
    intro(INTRO, ABOUT, elem_id="mem-intro")
    examples_slot = gr.Column()   # the examples sit above the inputs
    with gr.Row():
        with gr.Column(scale=1, min_width=300, elem_id="mem-controls"):
            # no file_types filter: a file that is not an image reaches the feature, which names it as skipped
            files = gr.File(label="Images (PNG, JPEG, ...; a file that is not an image is named as skipped)",
                            file_count="multiple", elem_id="mem-files")
            model = gr.Dropdown(model_dropdown_choices(), value="digits-dup", label="Model", allow_custom_value=True,
                                elem_id="mem-model")
            with gr.Row():
                n_gen = gr.Slider(0, 64, value=0, step=1, label="also generate samples", elem_id="mem-ngen",
                                  min_width=140)
                seed = gr.Number(value=0, precision=0, label="seed", elem_id="mem-seed", min_width=80)
            invert = gr.Checkbox(False, label="invert intensities (dark-on-light drawings)", elem_id="mem-invert")
            with gr.Accordion("Layer, timestep, metric (defaults: the calibration's)", open=False):
                layer = gr.Textbox(label="layer (empty: calibrated default)", elem_id="mem-layer")
                t = gr.Number(value=50, precision=0, label="t", elem_id="mem-t")
                metric = gr.Dropdown([("auto (the calibration's)", "")] + list(METRICS), value="", label="metric",
                                     elem_id="mem-metric")
                n_noise = gr.Slider(1, MAX_NOISE_DRAWS, value=4, step=1, label="noise draws averaged",
                                    elem_id="mem-noise")
                cal_upload = gr.File(label="calibration file (JSON from Calibrate / the CLI; empty: the shipped one)",
                                     file_types=[".json"], elem_id="mem-cal-upload")
            go = gr.Button("Score", variant="primary", elem_id="mem-score-btn")
        with gr.Column(scale=2, elem_id="mem-results"):
            summary = gr.Markdown(elem_id="mem-summary", label="summary")
            table = gr.Dataframe(headers=["image", "score", "spread", "verdict", "implied_fpr", "nearest_train_rms",
                                          "reason"], elem_id="mem-table", interactive=False, wrap=True, max_height=300,
                                 column_widths=["19%", "12%", "9%", "15%", "10%", "12%", "23%"],
                                 label="scores (one row per image)", show_label=False)
            repro = gr.Markdown(elem_id="mem-reproduce", label="reproduce line")
            with gr.Row(equal_height=False):
                hist = gr.Image(label="score histogram against the model's references", elem_id="mem-hist",
                                height=250, show_label=False, min_width=300)   # the figure has its title
                nn = gr.Gallery(label="your image | its nearest training image (built-in models)",
                                columns=2, height=250, object_fit="contain", elem_id="mem-nn", min_width=240)
            with gr.Row(equal_height=False):
                with gr.Accordion("What the columns mean", open=False, elem_id="mem-columns-help"):
                    gr.Markdown("\n".join(f"* **{k}**: {v}" for k, v in COLUMN_HELP.items()), elem_id="mem-columns")
                csv_file = gr.File(label="scores.csv", elem_id="mem-csv", elem_classes=["compact-file"])
    with gr.Accordion("Calibrate a threshold from known images (no memorized set needed)", open=False,
                      elem_id="cal-panel"):
        gr.Markdown(ONE_CLASS_HELP, elem_id="cal-help")
        with gr.Row():
            mem_files = gr.File(label="Known memorized (optional)", file_count="multiple", file_types=["image"],
                                elem_id="cal-mem")
            gen_files = gr.File(label="Known not in the training data", file_count="multiple", file_types=["image"],
                                elem_id="cal-gen")
            target = gr.Number(value=0.01, label="target FPR", elem_id="cal-fpr")
        n_ref = gr.Slider(0, MAX_REFERENCE, value=0, step=1, elem_id="cal-nref",
                          label="text models: also generate N reference images from non-memorized prompts")
        cal_go = gr.Button("Calibrate", elem_id="cal-btn")
        with gr.Row():
            roc = gr.Image(label="ROC (two-class) or reference scores and threshold (one-class)", elem_id="cal-roc",
                           height=320)
            with gr.Column():
                cal_text = gr.Markdown(elem_id="cal-text", label="calibration summary and reproduce line")
                cal_file = gr.File(label="calibration JSON", elem_id="cal-file")
    examples = sorted(str(p) for p in runtime().examples.glob("digit_*.png"))
    outputs = [table, csv_file, hist, summary, nn, repro]
    with examples_slot:
        gr.Examples([[None, "digits-mem", "", 50, "", 4, 16, 0], [None, "digits-gen", "", 50, "", 4, 16, 0]]
                    + ([[examples, "digits-dup", "", 50, "", 4, 0, 0]] if examples else []),
                    [files, model, layer, t, metric, n_noise, n_gen, seed], outputs, fn=score, cache_examples=True,
                    cache_mode="lazy",
                    example_labels=["16 samples of digits-mem (memorizing)", "16 samples of digits-gen (generalizing)"]
                    + (["held-out digits on digits-dup"] if examples else []),
                    label="Examples (the first click runs one, later clicks show the stored result)",
                    elem_id="mem-examples")
    if not runtime().public:
        build_audit()
    go.click(score, [files, model, layer, t, metric, n_noise, n_gen, seed, cal_upload, invert], outputs,
             api_name="score", show_progress_on=[table], **MODEL_EVENTS)
    cal_go.click(calibrate, [mem_files, gen_files, model, layer, t, metric, target, n_ref], [roc, cal_text, cal_file],
                 api_name="calibrate", show_progress_on=[roc], **MODEL_EVENTS
                 ).success(lambda f: f, cal_file, cal_upload, api_visibility="private")   # the next Score uses it
