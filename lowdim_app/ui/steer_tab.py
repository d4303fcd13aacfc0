"""The "Steer" tab: representation steering with a strength sweep (Zhang et al. 2025, §4.2, eq. 11, Fig. 8),
a thin adapter over :mod:`lowdim_app.features.steer`. Every run offers its steering vector as a
``.safetensors`` download; uploading one applies it instead of computing a vector (no concept set)."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr
import numpy as np

from ..errors import UserError
from ..features.settings import SEED_MAX, Settings, seed_setting, setting
from ..features.steer import FEATURE as STEER
from ..features.steer import MAX_STRENGTH, VECTOR_FILE, SteerSettings
from ..plots.common import to_pil as fig_to_pil
from ..plots.editing import label_strip
from .common import (Image, cancel_button, handle_errors, intro, model_dropdown_choices, request_folder, run_in_worker,
                     unavailable_note, unchanged, uploads)
from .lanes import MODEL_EVENTS

MODES = ("digit class", "prompt", "uploaded images")
KINDS = ("recipe", "channel", "spatial")


@dataclass(frozen=True)
class TabInputs(Settings):
    """The tab's inputs that are not ``steer`` settings themselves, validated the same way."""

    digit: int = setting(4, lo=0, hi=9, label="digit class")
    source_seed: int = setting(1, lo=0, hi=SEED_MAX, label="source seed")
    a_max: float = setting(1.5, lo=0.01, hi=MAX_STRENGTH, label="a_max")
    count: int = setting(13, lo=2, hi=16, label="number of strengths")
    seed: int = seed_setting()


def settings_for(model_id, concept_mode, digit, prompt, files, source_seed, source_image, a_max, count, kind,
                 layers, contrast, seed=0, vector_file=None) -> SteerSettings:
    """The tab's inputs -> ``steer`` settings (uploads as files the settings carry, under the user's own
    names: :meth:`~lowdim_app.features.steer.SteerResult.write_inputs` offers them under those names). An
    uploaded vector replaces the concept (its file names the concept it is of)."""
    if concept_mode not in MODES:
        raise UserError(f"concept must be {', '.join(repr(m) for m in MODES)}")
    if kind not in KINDS:
        raise UserError("vector kind must be recipe, channel or spatial")
    tab = TabInputs.from_raw(digit=digit if concept_mode == "digit class" else 4,
                             source_seed=source_seed if source_image is None else 1, a_max=a_max, count=count, seed=seed)
    taken = {"steer.json"}           # the names of the files the result offers
    vector = uploads(vector_file, taken)
    taken.add(VECTOR_FILE)
    if vector:   # the file names the concept it is of
        concept = {"vector": vector[0]}
    elif concept_mode == "digit class":
        concept = {"concept": f"digit:{tab.digit}"}   # concept_n: the feature's default
    elif concept_mode == "prompt":
        if not (prompt or "").strip():
            raise UserError("enter the concept prompt")
        concept = {"concept": f"prompt:{prompt}"}
    else:
        if not files:
            raise UserError("upload concept images")
        concept = {"concept": uploads(files, taken)}
    source = uploads(source_image, taken)
    source = source[0] if source else f"seed:{tab.source_seed}"
    layer_text = ",".join(x.strip() for x in (layers or "").split(",") if x.strip())
    settings = SteerSettings.from_raw(
        model=model_id, **concept, source=source,
        strengths=[float(a) for a in np.linspace(0.0, tab.a_max, tab.count)],
        kind=None if kind == "recipe" else kind, layers=layer_text,
        contrast=bool(contrast) and concept_mode == "digit class", seed=tab.seed)
    return settings


@handle_errors
def steer(model_id, concept_mode, digit, prompt, files, source_seed, source_image, a_max, count, kind, layers,
          contrast, seed=0, vector_file=None, progress=gr.Progress(track_tqdm=True), request: gr.Request = None):
    """Steer a source with strength a = 0..a_max; yields the strip, the concept curve, the contrast strip,
    the info text with the reproduce line, the files that line reads (plus steer.json), and the steering
    vector as a .safetensors file (upload it again to skip the concept set)."""
    settings = settings_for(model_id, concept_mode, digit, prompt, files, source_seed, source_image, a_max,
                            count, kind, layers, contrast, seed, vector_file)
    from_files = settings.reads_files
    for result in run_in_worker(STEER, settings, request=request, lab="steer", progress=progress):
        yield unchanged(6) if result is None else _outputs(result, from_files)


def _outputs(result, from_files: bool) -> tuple:
    folder = request_folder("steer")   # per request: the files it offers
    files_out = [str(p) for p in result.write_inputs(folder)] + [str(result.write_json(folder / "steer.json"))]
    vector_out = folder / VECTOR_FILE
    if not vector_out.is_file():
        result.save_vector(vector_out)
    images = result.images()
    fig = result.figure()
    where = " (in a folder holding the files below)" if from_files else ""
    info = (f"{result.summary()}\n\nReproduce{where}: `{result.reproduce()}`\n\nWith the vector file offered below, "
            f"`--vector {VECTOR_FILE}` replaces the concept set.")
    strengths = result.settings.strengths
    contrast = images.get("contrast")
    return (labelled(images["strip"], strengths), None if fig is None else fig_to_pil(fig),
            None if contrast is None else labelled(contrast, strengths, rows=("memorized", "generalized")), info,
            files_out, str(vector_out))


def steer_example(model_id, concept_mode, digit, source_seed, contrast, progress=gr.Progress(track_tqdm=True),
                  request: gr.Request = None):
    """An example row (the tab's other inputs at their defaults)."""
    yield from steer(model_id, concept_mode, digit, "", None, source_seed, None, 1.5, 13, "recipe", "", contrast, 0,
                     None, progress=progress, request=request)


def labelled(strip, strengths, rows=()):
    """A strip as the app shows it and the API returns it: ``a = ...`` under each column, a = 0 (the
    unsteered sample) framed (the CLI's strip.png stays bare)."""
    try:
        return label_strip(strip, strengths, symbol="a", rows=rows)
    except Exception:   # display only: never fail the run for a label
        return strip


def mode_changed(mode):
    """Show only the inputs of the chosen concept mode."""
    return (gr.update(visible=mode == "digit class"), gr.update(visible=mode == "prompt"),
            gr.update(visible=mode == "uploaded images"), gr.update(visible=mode == "digit class"))


INTRO = ("Pick a digit and press **Steer**: one sample is drawn at increasing steering strength `a` (a = 0, framed, "
         "is the unsteered sample). Look at the contrast rows (Fig. 8 of the paper): a memorized sample (digits-mem) "
         "jumps to the digit between two neighbouring strengths, a generalized one (digits-gen) turns into it "
         "gradually.")
ABOUT = ("Steering adds `a * v` to U-Net activations while sampling, where `v` is the mean representation of a "
         "concept set (Zhang et al. 2025, arXiv:2512.20963, §4.2, eq. 11, Fig. 8). Built-in digit models: a spatial "
         "concept-minus-all-digits vector at four up-block layers; Stable Diffusion: the paper's recipe (App. B.3: 6 "
         "layers, t~ = 10, last 20 of 40 steps, CFG 3.5). The contrast rows steer a memorized sample of digits-mem and "
         "a generalized sample of digits-gen, each with the concept's vector on its own model; the dashed curves and "
         "bands are the median and quartiles over 20 samples of each (bench/steer_contrast.py, a = 0..2.5 in steps "
         "of 1/24). Toward a 4 the largest step between neighbouring strengths holds 82 % of a memorized sample's "
         "rise of P(4) and 21 % of a generalized one's (medians; P goes 0.1 -> 0.9 within a = 0.055 vs 0.24; in "
         "pixels the largest step is 43 % vs 4.6 % of the whole change). Toward a 7 the generalized samples rise as "
         "gradually (20 %), the memorized ones flash a 7 at best (8 of 20 cross P = 0.5, none reaches 0.9). Every "
         "run offers its vector as a file; uploading it under *Source image, saved vector* steers again without a "
         "concept set.")


def build() -> None:
    intro(INTRO, ABOUT, elem_id="steer-intro")
    examples_slot = gr.Column()   # the examples sit above the inputs
    with gr.Row():
        with gr.Column(scale=1, min_width=300, elem_id="steer-controls"):
            model = gr.Dropdown(model_dropdown_choices(), value="digits-dup", label="Model", allow_custom_value=True,
                                elem_id="steer-model")
            model_note = gr.Markdown(elem_id="steer-model-note")
            mode = gr.Radio(list(MODES), value="digit class", label="Concept", elem_id="steer-mode")
            digit = gr.Number(value=4, precision=0, label="digit class", elem_id="steer-digit")
            prompt = gr.Textbox(label="concept prompt (text models)", elem_id="steer-prompt", visible=False)
            files = gr.File(label="concept images", file_count="multiple", file_types=["image"], elem_id="steer-files",
                            visible=False)
            with gr.Row():
                source_seed = gr.Number(value=1, precision=0, label="source seed", elem_id="steer-seed", min_width=100)
                a_max = gr.Number(value=1.5, label="a_max", elem_id="steer-amax", min_width=100)
            count = gr.Slider(2, 16, value=13, step=1, label="strengths", elem_id="steer-count")
            contrast = gr.Checkbox(value=True, elem_id="steer-contrast",
                                   label="contrast: a memorized sample (digits-mem) and a generalized one (digits-gen)")
            with gr.Row():
                go = gr.Button("Steer", variant="primary", elem_id="steer-btn", scale=3)
                stop = gr.Button("Cancel", elem_id="steer-cancel", scale=1)
            with gr.Accordion("Source image, saved vector", open=False, elem_id="steer-more"):
                source_image = Image(label="or a source image (inverted)", type="filepath", elem_id="steer-source",
                                     height=160)
                vector_in = gr.File(label="or apply a saved steering vector (.safetensors; replaces the concept)",
                                    file_types=[".safetensors"], elem_id="steer-vector-in")
            with gr.Accordion("Vector", open=False):
                kind = gr.Radio(list(KINDS), value="recipe", label="kind", elem_id="steer-kind")
                layers = gr.Textbox(label="layers (comma-separated; empty: recipe)", elem_id="steer-layers")
                seed = gr.Number(value=0, precision=0, label="seed (prompt concept images, noise of the concept features)",
                                 elem_id="steer-vector-seed")
        with gr.Column(scale=2, elem_id="steer-results"):
            strip = gr.Image(label="steered strip (a = 0 .. a_max; a = 0 framed: no steering)", elem_id="steer-strip",
                             format="png", interactive=False, show_label=False, height=170)
            contrast_img = gr.Image(label="contrast strip: memorized (digits-mem, top) vs generalized (digits-gen, bottom)",
                                    elem_id="steer-contrast-img", format="png", interactive=False, show_label=False,
                                    height=260)
            info = gr.Markdown(elem_id="steer-info", label="summary and reproduce line")
            with gr.Row(equal_height=False):
                curve = gr.Image(label="concept strength vs a", elem_id="steer-curve", height=260, format="png",
                                 show_label=False, min_width=300)
                with gr.Column(min_width=240):
                    used = gr.File(label="files the reproduce line reads, and steer.json", file_count="multiple",
                                   interactive=False, elem_id="steer-files-out", elem_classes=["compact-file"])
                    vector_out = gr.File(label="steering vector (upload it to steer again without a concept set)",
                                         interactive=False, elem_id="steer-vector-out", elem_classes=["compact-file"])
    outputs = [strip, curve, contrast_img, info, used, vector_out]
    with examples_slot:
        gr.Examples([["digits-dup", "digit class", 4, 1, True], ["digits-dup", "digit class", 7, 3, True]],
                    [model, mode, digit, source_seed, contrast], outputs,
                    fn=steer_example, cache_examples=True, cache_mode="lazy", elem_id="steer-examples",
                    example_labels=["digits-dup towards a 4 (seed 1)",
                                    "digits-dup towards a 7 (seed 3)"],
                    label="Examples (the first click runs one, later clicks show the stored result)")
    ev = go.click(steer, [model, mode, digit, prompt, files, source_seed, source_image, a_max, count, kind, layers,
                          contrast, seed, vector_in], outputs, api_name="steer", show_progress_on=[strip],
                  **MODEL_EVENTS)
    cancel_button(stop, [ev], "steer", status=info, outputs=[strip, curve, contrast_img, used, vector_out])
    mode.change(mode_changed, mode, [digit, prompt, files, contrast], api_name=False, queue=False,
                show_progress="hidden")
    model.change(unavailable_note, model, model_note, api_name=False, queue=False, show_progress="hidden")
