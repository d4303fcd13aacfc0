"""The "Steer" tab: representation steering with a strength sweep (seed 004 §4.2, eq. 11)."""
from __future__ import annotations

import shlex

import gradio as gr
import numpy as np
import torch

from ..data.images import ImageError, load_image, make_grid
from ..errors import UserError
from ..methods import steering as st
from ..methods.clip_score import clip_similarity
from ..plots.common import new_figure
from ..plots.common import to_pil as fig_to_pil
from .common import as_float, as_int, gpu, handle_errors, load_model_checked, model_choices


def _files(model, files):
    paths = [f if isinstance(f, str) else f.name for f in (files or [])]
    if not paths:
        raise UserError("upload concept images")
    if len(paths) > 200:
        raise UserError("at most 200 concept images")
    out = []
    for p in paths:
        try:
            out.append(load_image(p, model.image_shape[1:], channels=model.image_shape[0]))
        except ImageError as err:
            raise UserError(str(err)) from None
    return torch.cat(out)


def _curve(strengths, curves: dict, ylabel: str, probability: bool = True):
    fig, ax = new_figure(5.5, 3.2)
    for label, ys in curves.items():
        ax.plot(strengths, ys, "o-", label=label)
    ax.set_xlabel("steering strength a")
    ax.set_ylabel(ylabel)
    if probability:
        ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=8)
    return fig_to_pil(fig)


@gpu
def _run(model, x0, sv, strengths, steps, window, cond):
    return st.steered_samples(model, x0, sv, strengths, None, steps, window, cond, progress=True)


@handle_errors
def steer(model_id, concept_mode, digit, prompt, files, source_seed, source_image, a_max, count, kind, layers,
          contrast, progress=gr.Progress(track_tqdm=True)):
    """Steer a source with strength a = 0..a_max; returns the strip, the concept curve, the contrast strip, info."""
    a_max = as_float("a_max", a_max, 0.01, st.MAX_STRENGTH)
    count = as_int("number of strengths", count, 2, 16)
    seed = as_int("seed", source_seed, 0, 2**31 - 1)
    if kind not in ("recipe", "channel", "spatial"):
        raise UserError("vector kind must be recipe, channel or spatial")
    model = load_model_checked(model_id)
    d_layers, recipe = st.default_recipe(model)
    layer_list = [s.strip() for s in (layers or "").split(",") if s.strip()] or d_layers
    kind = recipe["kind"] if kind == "recipe" else kind
    target, baseline, cbar = None, None, None
    if concept_mode == "digit class":
        if model.is_text or model.image_shape != (1, 16, 16):
            raise UserError("digit-class concepts are for the built-in digit models")
        target = as_int("digit class", digit, 0, 9)
        concept, baseline = st.digit_concept(target, 100)
    elif concept_mode == "prompt":
        if not model.is_text:
            raise UserError("prompt concepts need a text model; use a digit class or uploaded images")
        if not (prompt or "").strip():
            raise UserError("enter the concept prompt")
        cbar = model.encode_prompt(prompt)
        concept = model.generate(8, seed=seed, steps=recipe["steps"],
                                 cond=model.encode_prompt(prompt, guidance_scale=recipe["guidance_scale"]), progress=True)
    elif concept_mode == "uploaded images":
        concept = _files(model, files)
    else:
        raise UserError("concept must be 'digit class', 'prompt' or 'uploaded images'")
    sv = st.steering_vector(model, concept, layer_list, None, kind, cbar, baseline, seed)
    cond = model.encode_prompt("", guidance_scale=recipe["guidance_scale"]) if model.is_text else None
    t_start = model.num_train_timesteps - 1
    if source_image is not None:
        img = load_image(source_image, model.image_shape[1:], channels=model.image_shape[0])
        x0 = model.ddim_invert(model.encode(img), t_start, recipe["steps"], cond)
    else:
        x0 = model.randn(1, seed)
    strengths = [float(a) for a in np.linspace(0, a_max, count)]
    imgs = _run(model, x0, sv, strengths, recipe["steps"], recipe["window"], cond)
    up = max(1, 96 // model.image_shape[-1])
    strip = make_grid(imgs, nrow=count, upscale=up)
    curves, contrast_img = {}, None
    if target is not None:
        curves["this source"] = st.concept_strength_digits(imgs, target)
        if contrast and model.card.get("train_index"):
            rows = []
            for label, (i, noise) in st.contrast_sources(model, avoid_class=target).items():
                im = _run(model, noise, sv, strengths, recipe["steps"], recipe["window"], None)
                curves[f"{label} sample (#{i})"] = st.concept_strength_digits(im, target)
                rows.append(im)
            if rows:
                contrast_img = make_grid(torch.cat(rows), nrow=count, upscale=up)
    curve = _curve(strengths, curves, f"P(digit {target}) (logistic-regression classifier)") if curves else None
    clip_note = ""
    if concept_mode == "prompt":
        sims = clip_similarity(imgs, prompt)
        if sims is None:
            clip_note = " No CLIP model available locally (LOWDIM_CLIP), so no concept-strength curve."
        else:
            curve = _curve(strengths, {"this source": sims}, f"CLIP similarity to '{prompt[:40]}'", probability=False)
    src = f"seed:{seed}" if source_image is None else "IMAGE"
    concept_arg = {"digit class": f"digit:{target}", "prompt": f"prompt:{prompt}", "uploaded images": "DIR"}[concept_mode]
    cmd = (f"python -m lowdim_app steer --model {shlex.quote(model.model_id)} --concept {shlex.quote(concept_arg)} "
           f"--source {src} --strengths 0:{a_max:g}:{count} --kind {kind} --layers {','.join(layer_list)}"
           + (" --contrast" if contrast and target is not None else ""))
    info = (f"{kind} vector from {sv.n_images} images at t~ = {sv.t_tilde}, layers {', '.join(layer_list)}; steering "
            f"during the last {recipe['window']} of {recipe['steps']} DDIM steps"
            + (", CFG {} on the conditional half only".format(recipe['guidance_scale']) if model.is_text else "")
            + f".{clip_note}\n\nReproduce: `{cmd}`")
    return strip, curve, contrast_img, info


def build() -> None:
    gr.Markdown("Add `a * v` to U-Net activations while sampling (seed 004 eq. 11): `v` is the mean representation "
                "of a concept set. Built-in digit models: spatial concept-minus-all-digits vector at four up-block "
                "layers; Stable Diffusion: the paper's recipe (6 layers, t~ = 10, last 20 of 40 steps, CFG 3.5).")
    with gr.Row():
        with gr.Column(scale=1):
            model = gr.Dropdown(model_choices(), value="digits-dup", label="Model", allow_custom_value=True,
                                elem_id="steer-model")
            mode = gr.Radio(["digit class", "prompt", "uploaded images"], value="digit class", label="Concept",
                            elem_id="steer-mode")
            digit = gr.Number(value=4, precision=0, label="digit class", elem_id="steer-digit")
            prompt = gr.Textbox(label="concept prompt (text models)", elem_id="steer-prompt")
            files = gr.File(label="concept images", file_count="multiple", file_types=["image"], elem_id="steer-files")
            with gr.Row():
                seed = gr.Number(value=1, precision=0, label="source seed", elem_id="steer-seed")
                a_max = gr.Number(value=1.5, label="a_max", elem_id="steer-amax")
                count = gr.Slider(2, 16, value=7, step=1, label="strengths", elem_id="steer-count")
            source_image = gr.Image(label="or a source image (inverted)", type="numpy", elem_id="steer-source", height=160)
            with gr.Accordion("Vector", open=False):
                kind = gr.Radio(["recipe", "channel", "spatial"], value="recipe", label="kind", elem_id="steer-kind")
                layers = gr.Textbox(label="layers (comma-separated; empty: recipe)", elem_id="steer-layers")
            contrast = gr.Checkbox(value=True, label="contrast: a memorized and a generalized sample (built-in models)",
                                   elem_id="steer-contrast")
            go = gr.Button("Steer", variant="primary", elem_id="steer-btn")
        with gr.Column(scale=2):
            info = gr.Markdown(elem_id="steer-info")
            strip = gr.Image(label="a = 0 .. a_max", elem_id="steer-strip")
            curve = gr.Image(label="concept strength vs a", elem_id="steer-curve", height=280)
            contrast_img = gr.Image(label="memorized (top) vs generalized (bottom) source", elem_id="steer-contrast-img")
    go.click(steer, [model, mode, digit, prompt, files, seed, source_image, a_max, count, kind, layers, contrast],
             [strip, curve, contrast_img, info], api_name="steer", concurrency_limit=1, concurrency_id="model")
