"""Three theory labs as tabs: Memorize vs generalize (ReLU DAE, Zhang et al. 2025), Gaussian mixtures
via DDPM (Shah et al. 2023), MoLR-MoG experts (Yang et al. 2026).

``build()`` creates three sub-tabs inside the current Blocks/Tab context. Each handler builds the lab's
settings from its inputs (``Settings.from_raw``: one validation path with the CLI), streams the
feature stage by stage and renders it: figure, every number (the JSON the reproduce line writes),
status and the CLI line, and at the end the files ``out.json`` / ``out.png`` that line names.
Cancel stops the computation through ``STOP_FLAGS``.
"""
from __future__ import annotations

import inspect

import gradio as gr

from ..features.base import dumps
from ..features.mog_ddpm import FEATURE as MOG
from ..features.molr_mog import FEATURE as MOLR
from ..features.relu_dae import FEATURE as RELU
from ..features.settings import describe, fmt
from .common import (
    handle_errors,
    intro,
    lab_examples,
    request_folder,
    run_cancel_buttons,
    run_in_worker,
    unchanged,
    wire_cancellable,
)

OUT_FLAGS = "--json out.json --png out.png"


def status(res) -> str:
    """``stage 2/5: training the generalize DAE ...`` while running, ``done in 12.3 s`` and the
    summary at the end."""
    if res.finished:
        return f"**done in {res.wall_s:.1f} s**\n\n" + "\n".join(f"- {line}" for line in res.summary_lines())
    k, n = res.completed, len(res.stages)
    return f"stage {k + 1}/{n}: {res.stages[k]} ... ({k} of {n} stages finished, {res.wall_s:.1f} s)"


def _stream(feature, settings, request, lab: str, progress):
    """Yield (figure, numbers, status, reproduce line, files) after each stage of ``feature``."""
    reproduce = f"Reproduce: `{settings.to_cli(extra=OUT_FLAGS)}`"
    folder = request_folder(feature.name)
    for res in run_in_worker(feature, settings, request=request, lab=lab, progress=progress, stream=True):
        if res is None:
            yield unchanged(5)
            continue
        figure = str(res.write_figure(folder / ("out.png" if res.finished else f"stage-{res.completed}.png")))
        files = [str(res.write_json(folder / "out.json")), figure] if res.finished else None
        yield figure, dumps(res.to_json()), status(res), reproduce, files


@handle_errors
def run_relu_ui(data, p, sigma, lam, tied, n_mem, n_gen, hybrid, copies, steps, sample, seed,
                request: gr.Request = None, progress=gr.Progress()):
    settings = RELU.Settings.from_raw(data=data, p=p, sigma=sigma, lam=lam, tied=tied, n_mem=n_mem, n_gen=n_gen,
                                      hybrid=hybrid, copies=copies, steps=steps, sample=sample, seed=seed)
    yield from _stream(RELU, settings, request, "relu_dae", progress)


@handle_errors
def run_mog_ui(d, mu_norm, t_large, t_small, eta_large, eta_small, iters_large, iters_small, K, n_batch, seed,
               request: gr.Request = None, progress=gr.Progress()):
    settings = MOG.Settings.from_raw(d=d, mu_norm=mu_norm, t_large=t_large, t_small=t_small, eta_large=eta_large,
                                     eta_small=eta_small, iters_large=iters_large, iters_small=iters_small, K=K,
                                     n_batch=n_batch, seed=seed)
    yield from _stream(MOG, settings, request, "mog_ddpm", progress)


@handle_errors
def run_molr_ui(data, K, D, d, n_modes, steps, seed, request: gr.Request = None, progress=gr.Progress()):
    settings = MOLR.Settings.from_raw(data=data, K=K, D=D, d=d, n_modes=n_modes, steps=steps, seed=seed)
    yield from _stream(MOLR, settings, request, "molr_mog", progress)


# ------------------------------------------------------------------------------------------ layout
def _input(feature, name: str, elem_id: str, label: str, value=None):
    """An input for setting ``name``, its help and bounds taken from the settings declaration."""
    row = next(r for r in describe(feature.Settings) if r["name"] == name)
    value = row["default"] if value is None else value
    bounds = "" if row["lo"] is None and row["hi"] is None else \
        f" ({'' if row['lo'] is None else fmt(row['lo'])}..{'' if row['hi'] is None else fmt(row['hi'])})"
    info = row["help"] + bounds
    if row["choices"]:
        return gr.Dropdown(list(row["choices"]), value=value, label=label, info=info, elem_id=elem_id, min_width=120)
    if row["type"] == "bool":
        return gr.Checkbox(value, label=label, info=info, elem_id=elem_id, min_width=120)
    return gr.Number(value, label=label, info=info, precision=0 if row["type"] == "int" else None, elem_id=elem_id,
                     min_width=120)


def _outputs(prefix: str):
    with gr.Column(scale=2, elem_id=f"theory-{prefix}-results"):
        fig = gr.Image(label="figure (PNG)", type="filepath", elem_id=f"theory-{prefix}-figure", show_label=False)
        cli = gr.Markdown(elem_id=f"theory-{prefix}-cli", label="reproduce line")
        status_md = gr.Markdown(elem_id=f"theory-{prefix}-status", label="status and summary")
        with gr.Row(equal_height=False):
            with gr.Accordion("All numbers (JSON)", open=False):
                nums = gr.Code(label="all numbers (JSON)", language="json", elem_id=f"theory-{prefix}-numbers")
            files = gr.File(label="out.json and out.png (what the reproduce line writes)", file_count="multiple",
                            interactive=False, elem_id=f"theory-{prefix}-files", elem_classes=["compact-file"])
    return [fig, nums, status_md, cli, files]


def _lab(feature, prefix: str, fn, api_name: str, main: list[tuple], advanced: list[tuple], examples: list) -> None:
    """One lab's layout: examples on top, the ``main`` inputs two to a row, the ``advanced`` ones folded,
    Run/Cancel under them (as on every tab), the outputs beside them. Inputs are ``(setting, elem suffix,
    label[, value])``; they are passed to ``fn`` in its own argument order."""
    def inputs(rows):
        out = {}
        for i in range(0, len(rows), 2):
            with gr.Row():
                out.update({name: _input(feature, name, f"theory-{prefix}-{suffix}", *rest)
                            for name, suffix, *rest in rows[i:i + 2]})
        return out

    examples_slot = gr.Column()   # the examples sit above the inputs
    with gr.Row(elem_classes=["lab-row"]):
        with gr.Column(scale=1, min_width=300, elem_id=f"theory-{prefix}-controls"):
            c = inputs(main)
            if advanced:
                with gr.Accordion("Advanced", open=False, elem_id=f"theory-{prefix}-advanced"):
                    c.update(inputs(advanced))
            with gr.Row():
                buttons = run_cancel_buttons(f"theory-{prefix}")
        outs = _outputs(prefix)
    order = [n for n in inspect.signature(fn).parameters if n not in ("request", "progress")]
    ordered = {n: c[n] for n in order}
    with examples_slot:
        lab_examples(ordered, outs, fn, examples, elem_id=f"theory-{prefix}-examples")
    wire_cancellable(buttons, fn, list(ordered.values()), outs, api_name=api_name, status=outs[2],
                     concurrency_id="labs", concurrency_limit=2, show_progress_on=[outs[0]])


def build() -> None:
    with gr.Tab("Memorize/generalize", elem_id="theory-relu-tab"):
        intro("Press **Run**: three small ReLU denoisers are trained, on few samples (memorize), on many (generalize) "
              "and on many with some duplicated (hybrid). Look at the first row: a memorizing model's weights are "
              "copies of its training images; and at the representation spread: spiky when memorizing, balanced "
              "when generalizing.",
              "Two-layer ReLU DAE `W2 [W1^T x]_+` at one noise level with weight decay (Zhang et al. 2025, "
              "arXiv:2512.20963, §3). Few samples / many units memorize (columns = `r_i x_i`, eq. 9, spiky "
              "representations); many samples / few units generalize (blocks span the top principal components, "
              "eq. 8); duplicated samples are memorized inside a generalizing model (Cor. 3.4). DDIM samples from "
              "DAEs on a noise grid (eq. 1, App. B.1).")
        _lab(RELU, "relu", run_relu_ui, "relu_dae",
             [("data", "data", "data"), ("n_mem", "nmem", "memorization samples", 5),
              ("n_gen", "ngen", "generalization samples", 1438), ("hybrid", "hybrid", "hybrid (duplicated samples)")],
             [("p", "p", "hidden units p"), ("sigma", "sigma", "sigma"), ("lam", "lam", "weight decay lambda"),
              ("tied", "tied", "tied weights"), ("copies", "copies", "copies of each duplicated sample"),
              ("steps", "steps", "training steps"), ("sample", "sample", "DDIM samples"), ("seed", "seed", "seed")],
             [("digits: memorize, generalize, hybrid", {}), ("Gaussian mixture (d = 64)", {"data": "mog"})])

    with gr.Tab("MoG via DDPM", elem_id="theory-mog-tab"):
        intro("Press **Run**: gradient descent on the DDPM loss learns the means of a mixture of two Gaussians. Look "
              "at the solid GD curves following the dashed classical algorithms: power iteration at large noise, "
              "EM at small noise, and the two-stage schedule reaching the true mean.",
              "Gradient descent on the DDPM objective (eq. 5) with the tanh student `tanh(mu_t^T x) mu_t - x` (Shah "
              "et al. 2023, arXiv:2307.01178): power iteration at large noise (Lemma 8, the angle contracts by Lemma "
              "9), (gradient) EM at small noise (Lemma C.7), and the two-stage schedule. K > 2 uses the soft-max "
              "student (give it ~200 small-noise iterations).")
        _lab(MOG, "mog", run_mog_ui, "mog_ddpm",
             [("d", "d", "d"), ("mu_norm", "mu", "||mu*||"), ("K", "k", "components K")],
             [("t_large", "tlarge", "large-noise t"), ("t_small", "tsmall", "small-noise t"),
              ("eta_large", "etalarge", "eta (large noise)"), ("eta_small", "etasmall", "eta (small noise)"),
              ("iters_large", "iterslarge", "iterations (large noise)"),
              ("iters_small", "iterssmall", "iterations (small noise)"), ("n_batch", "batch", "samples per GD step"),
              ("seed", "seed", "seed")],
             [("K = 2: power iteration, then EM", {}), ("K = 3: soft-max student", {"K": 3, "iters_small": 200})])

    with gr.Tab("MoLR-MoG", elem_id="theory-molr-tab"):
        intro("Press **Run**: three score models are trained on data from a mixture of low-rank mixtures of "
              "Gaussians. Look at the loss curves (lower is better, the dotted line is the true score) and at the "
              "samples: the mixture-of-experts MoG score puts its samples on the true modes (red crosses).",
              "MoLR-MoG data (eq. 2) and three scores trained by denoising score matching (Yang et al. 2026, "
              "arXiv:2601.01475, §4): MoE-latent MoG (eq. 3), MoE-latent Gaussian (MoLRG, Wang et al. 2024) and a "
              "generic latent MLP. Digits: one per-class PCA encoder, K = 10 (set d_k to e.g. 8 and n_k = 4).")
        _lab(MOLR, "molr", run_molr_ui, "molr_mog",
             [("data", "data", "data"), ("K", "k", "subspaces K (digits: 10)"), ("D", "D", "ambient D (synthetic)"),
              ("d", "d", "latent d_k"), ("n_modes", "nk", "modes n_k"), ("steps", "steps", "training steps"),
              ("seed", "seed", "seed")], [],
             [("synthetic: K = 3 subspaces, d_k = 2", {}),
              ("digits: one subspace per class", {"data": "digits", "K": 10, "d": 8, "n_modes": 4})])
