"""The "Memorization" tab: spikiness score + verdict per image, batch CSV, and calibration (seed 004 Alg. 1)."""
from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import gradio as gr
import numpy as np
import torch

from ..data.images import ImageError, load_image, make_grid
from ..errors import UserError
from ..methods import memorization as mz
from ..plots.common import new_figure
from ..plots.common import to_pil as fig_to_pil
from .common import as_float, as_int, gpu, handle_errors, load_model_checked, model_choices

MAX_IMAGES = 256
MEM_MODELS = ["digits-dup", "digits-mem", "digits-gen"]


def _paths(files) -> list[str]:
    if not files:
        return []
    return [f if isinstance(f, str) else f.name for f in (files if isinstance(files, list) else [files])]


def _images(model, files) -> tuple[torch.Tensor, list[str], list[str]]:
    paths = _paths(files)
    if len(paths) > MAX_IMAGES:
        raise UserError(f"at most {MAX_IMAGES} images per request, got {len(paths)}")
    tens, names, problems = [], [], []
    for p in paths:
        try:
            tens.append(load_image(p, model.image_shape[1:], channels=model.image_shape[0]))
            names.append(Path(p).name)
        except ImageError as err:
            problems.append(str(err))
    if not tens:
        raise UserError(problems[0] if problems else "upload at least one image (or generate some)")
    return torch.cat(tens), names, problems


def _histogram(cal: mz.Calibration | None, scores: list[float]):
    fig, ax = new_figure(6, 3.2)
    if cal is not None:
        bins = np.histogram_bin_edges(np.r_[cal.memorized_scores, cal.generalized_scores, scores], bins=30)
        if cal.generalized_scores:
            ax.hist(cal.generalized_scores, bins=bins, alpha=0.5, label="reference: generalized", color="C0")
        if cal.memorized_scores:
            ax.hist(cal.memorized_scores, bins=bins, alpha=0.5, label="reference: memorized", color="C3")
        ax.axvline(cal.threshold, color="k", ls="--", label=f"threshold (FPR {cal.fpr:.3f})")
    for i, s in enumerate(scores[:50]):
        ax.axvline(s, color="C2", lw=1.5, alpha=0.8, label="your images" if i == 0 else None)
    ax.set_xlabel(f"spikiness ({cal.metric if cal else 'std'}) of the pooled representation")
    ax.set_ylabel("count")
    ax.legend(fontsize=8)
    return fig_to_pil(fig)


@gpu
def _score(model, images, names, layer, t, metric, n_noise, seed, cal):
    return mz.score_images(model, images, names, layer, t, metric, cal, n_noise, seed)


def _uploaded_calibration(model, calibration_file, layer):
    """An uploaded calibration JSON, checked against the model and the layer field (None if none)."""
    paths = _paths(calibration_file)
    if not paths:
        return None
    cal = mz.Calibration.load(paths[0])
    cal.check_model(model.model_id)
    if layer and layer != cal.layer:
        raise UserError(f"the calibration file is for layer {cal.layer}; clear the layer field or pick that layer")
    return cal


@handle_errors
def score(files, model_id, layer, t, metric, n_noise, n_generate, seed, calibration_file=None,
          progress=gr.Progress(track_tqdm=True)):
    """Score uploaded images (and/or ``n_generate`` fresh samples): table, CSV, histogram, nearest training images.

    With ``calibration_file`` (a JSON saved by *Calibrate* or the CLI) its layer, t, metric and noise draws
    are used and its threshold gives the verdicts; otherwise the model's shipped calibration."""
    t = as_int("timestep t", t, 0, 999)
    n_noise = as_int("noise draws", n_noise, 1, 16)
    n_generate = as_int("generated samples", n_generate, 0, 64)
    seed = as_int("seed", seed, 0, 2**31 - 1)
    if metric not in mz.METRICS:
        raise UserError(f"metric must be one of {', '.join(mz.METRICS)}")
    model = load_model_checked(model_id)
    layer = (layer or "").strip() or None
    uploaded = _uploaded_calibration(model, calibration_file, layer)
    if uploaded is not None:
        t, metric, n_noise = uploaded.t, uploaded.metric, uploaded.n_noise
    parts, names, problems = [], [], []
    if _paths(files):
        imgs, names, problems = _images(model, files)
        parts.append(imgs)
    if n_generate:
        parts.append(model.generate(n_generate, seed=seed, steps=50, progress=True))
        names += [f"sample seed {seed} #{i}" for i in range(n_generate)]
    if not parts:
        raise UserError("upload at least one image or ask for generated samples")
    images = torch.cat(parts)
    rows, cal = _score(model, images, names, layer, t, metric, n_noise, seed, uploaded)
    table = [[r.name, round(r.score, 5), "n/a" if r.memorized is None else ("memorized" if r.memorized else "generalized"),
              None if r.implied_fpr is None else round(r.implied_fpr, 4)] for r in rows]
    out = Path(tempfile.mkdtemp(prefix="lowdim-score-")) / "scores.csv"
    with open(out, "w", newline="") as f:
        csv.writer(f).writerows([["image", "score", "verdict", "implied_fpr"]] + table)
    if cal is not None:
        summary = (f"Layer `{cal.layer}`, t = {cal.t}, metric `{cal.metric}`: **memorized if score "
                   f"{'>' if cal.direction > 0 else '<'} {cal.threshold:.4g}** (calibrated FPR {cal.fpr:.3f}; "
                   f"AUROC {cal.auroc if cal.auroc is None else round(cal.auroc, 3)}). "
                   f"{sum(r.memorized for r in rows)} of {len(rows)} images flagged."
                   + (" Settings and threshold from the uploaded calibration file." if uploaded is not None else ""))
    else:
        summary = "No calibration matches these settings: scores only (use *Calibrate* below, or the defaults)."
    if problems:
        summary += " Skipped: " + "; ".join(problems)
    gallery = _neighbours(model, images, names)
    return table, str(out), _histogram(cal, [r.score for r in rows]), summary, gallery


def _neighbours(model, images, names):
    """Nearest training images for built-in models (their training sets are known)."""
    if model.model_id not in MEM_MODELS:
        return []
    from ..data.digits import load_digits_split
    from ..metrics import nearest

    train = load_digits_split().train_images[np.asarray(model.card["train_index"], dtype=int)]
    nn = nearest(images, train, k=1)
    out = []
    for i in range(min(len(images), 12)):
        pair = torch.cat([images[i:i + 1], train[nn.index[i, 0]:nn.index[i, 0] + 1]])
        out.append((make_grid(pair, nrow=2, upscale=6), f"{names[i]} | nearest training image, RMS {float(nn.nearest[i]):.3f}"))
    return out


def _roc_figure(cal: mz.Calibration):
    fig, ax = new_figure(4.5, 4)
    ax.plot(cal.roc_fpr, cal.roc_tpr, label=f"AUROC {cal.auroc:.3f}")
    ax.plot([0, 1], [0, 1], ":", color="gray")
    ax.axvline(0.01, color="C3", ls="--", lw=1, label=f"TPR@1%FPR {cal.tpr_at_1pct_fpr:.3f}")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.legend(fontsize=8)
    return fig_to_pil(fig)


@handle_errors
def calibrate(mem_files, gen_files, model_id, layer, t, metric, target_fpr, progress=gr.Progress(track_tqdm=True)):
    t = as_int("timestep t", t, 0, 999)
    target_fpr = as_float("target FPR", target_fpr, 0.0, 0.5)
    if metric not in mz.METRICS:
        raise UserError(f"metric must be one of {', '.join(mz.METRICS)}")
    model = load_model_checked(model_id)
    mem, _, _ = _images(model, mem_files)
    gen, _, _ = _images(model, gen_files)
    layer = (layer or "").strip() or mz.default_layer(model)
    sm, sg = mz.scores(model, mem, layer, t, metric), mz.scores(model, gen, layer, t, metric)
    cal = mz.calibrate(sm, sg, model.model_id, layer, t, metric, target_fpr, notes="fitted in the app")
    path = cal.save(Path(tempfile.mkdtemp(prefix="lowdim-cal-")) / f"{model.model_id.replace('/', '_')}_calibration.json")
    text = (f"AUROC **{cal.auroc:.3f}**, TPR at 1% FPR **{cal.tpr_at_1pct_fpr:.3f}**; threshold {cal.threshold:.4g} "
            f"({'higher' if cal.direction > 0 else 'lower'} spikiness = memorized), FPR {cal.fpr:.3f}, TPR {cal.tpr:.3f}. "
            f"Reproduce: `python -m lowdim_app calibrate --model {model.model_id} --memorized MEM_DIR --generalized GEN_DIR "
            f"--layer {layer} --t {t} --metric {metric} --target-fpr {target_fpr:g} --out calib.json`")
    return _roc_figure(cal), text, str(path)


def build() -> None:
    gr.Markdown("Is an image memorized by the model? Score = spikiness (std) of the global-max-pooled activation of a "
                "U-Net layer at t = 50 (seed 004 Alg. 1), compared with the model's calibrated threshold. Built-in "
                "models ship calibrations measured on their own samples (see `assets/calibrations/`).")
    with gr.Row():
        with gr.Column(scale=1):
            files = gr.File(label="Images", file_count="multiple", file_types=["image"], elem_id="mem-files")
            model = gr.Dropdown(model_choices(), value="digits-dup", label="Model", allow_custom_value=True,
                                elem_id="mem-model")
            with gr.Row():
                n_gen = gr.Slider(0, 64, value=0, step=1, label="also generate samples", elem_id="mem-ngen")
                seed = gr.Number(value=0, precision=0, label="seed", elem_id="mem-seed")
            with gr.Accordion("Layer, timestep, metric (defaults: the calibration's)", open=False):
                layer = gr.Textbox(label="layer (empty: calibrated default)", elem_id="mem-layer")
                t = gr.Number(value=50, precision=0, label="t", elem_id="mem-t")
                metric = gr.Dropdown(list(mz.METRICS), value="std", label="metric", elem_id="mem-metric")
                n_noise = gr.Slider(1, 16, value=1, step=1, label="noise draws averaged", elem_id="mem-noise")
                cal_upload = gr.File(label="calibration file (JSON from Calibrate / the CLI; empty: the shipped one)",
                                     file_types=[".json"], elem_id="mem-cal-upload")
            go = gr.Button("Score", variant="primary", elem_id="mem-score-btn")
        with gr.Column(scale=2):
            summary = gr.Markdown(elem_id="mem-summary")
            table = gr.Dataframe(headers=["image", "score", "verdict", "implied_fpr"], elem_id="mem-table",
                                 interactive=False)
            csv_file = gr.File(label="CSV", elem_id="mem-csv")
            hist = gr.Image(label="Scores against the model's reference distributions", elem_id="mem-hist", height=300)
            nn = gr.Gallery(label="Nearest training images (built-in models)", columns=4, height=220, elem_id="mem-nn")
    with gr.Accordion("Calibrate a threshold from known images", open=False):
        with gr.Row():
            mem_files = gr.File(label="Known memorized", file_count="multiple", file_types=["image"], elem_id="cal-mem")
            gen_files = gr.File(label="Known generalized", file_count="multiple", file_types=["image"], elem_id="cal-gen")
            target = gr.Number(value=0.01, label="target FPR", elem_id="cal-fpr")
        cal_go = gr.Button("Calibrate", elem_id="cal-btn")
        with gr.Row():
            roc = gr.Image(label="ROC", elem_id="cal-roc", height=320)
            with gr.Column():
                cal_text = gr.Markdown(elem_id="cal-text")
                cal_file = gr.File(label="Calibration (JSON)", elem_id="cal-file")
    go.click(score, [files, model, layer, t, metric, n_noise, n_gen, seed, cal_upload], [table, csv_file, hist, summary, nn],
             api_name="score", concurrency_limit=1, concurrency_id="model")
    cal_go.click(calibrate, [mem_files, gen_files, model, layer, t, metric, target], [roc, cal_text, cal_file],
                 api_name="calibrate", concurrency_limit=1, concurrency_id="model")
