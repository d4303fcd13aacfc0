"""Theory labs of issue 6: Memorize vs generalize (ReLU DAE, seed 004), Gaussian mixtures via DDPM
(seed 001), MoLR-MoG experts (seed 002).

``build()`` creates three sub-tabs inside the current Blocks/Tab context. Handlers validate every
parameter on the server (API callers can send anything), call the library, render, and show the CLI
line that reproduces the run. Runs stream stage by stage (generators) and can be cancelled.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import gradio as gr

from ..commands.theory import figure_for, jsonable, reproduce_line
from ..errors import UserError
from .common import STOP_FLAGS, Cancelled, as_float, as_int, handle_errors, run_cancel_buttons, wire_cancellable

SEED_MAX = 2 ** 31 - 1


def _choice(name: str, value, options):
    if value not in options:
        raise UserError(f"{name} must be one of {', '.join(map(str, options))}, got {value!r}")
    return value


def _bool(name: str, value) -> bool:
    if isinstance(value, bool):
        return value
    if value in (0, 1, "true", "false", "True", "False"):
        return str(value).lower() in ("1", "true")
    raise UserError(f"{name} must be true or false, got {value!r}")


def _png(fig, name: str) -> str:
    import matplotlib.pyplot as plt

    path = str(Path(tempfile.mkdtemp(prefix="theory-")) / name)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return path


def _stream(command: str, cfg, make_iter, request, lab: str):
    """Yield the lab's outputs stage by stage; ``make_iter(progress)`` builds the library iterator.
    Cancel (``STOP_FLAGS``) is checked between stages and inside training loops via ``progress``."""
    cli = f"Reproduce: `{reproduce_line(command, cfg)} --json out.json --png out.png`"
    with STOP_FLAGS.running(request, lab) as should_stop:
        def progress(_msg, _frac):
            if should_stop():
                raise Cancelled

        try:
            for res in make_iter(progress):
                if should_stop():
                    return
                status = f"stage: {res.stage}" + (" (done)" if res.done else " ...")
                yield _png(figure_for(command, res), f"{command}.png"), \
                    json.dumps(jsonable(res.numbers), indent=1)[:60000], status, cli
        except Cancelled:
            return


# ------------------------------------------------------------------------------------------ ReLU DAE
def relu_config(data, p, sigma, lam, tied, n_mem, n_gen, hybrid, copies, steps, sample, seed):
    from ..synthetic.relu_dae import ReluLabConfig

    data = _choice("data", data, ("digits", "mog"))
    cfg = ReluLabConfig(
        data=data, p=as_int("hidden units p", p, 1, 128), sigma=as_float("sigma", sigma, 0.01, 2.0),
        lam=as_float("weight decay", lam, 0.0, 0.1), tied=_bool("tied", tied),
        n_mem=as_int("memorization samples", n_mem, 2, 64),
        n_gen=as_int("generalization samples", n_gen, 2, 1438 if data == "digits" else 5000),
        hybrid=_bool("hybrid", hybrid), copies=as_int("copies", copies, 0, 1000),
        steps=as_int("steps", steps, 10, 10000), sample=_bool("sample", sample),
        seed=as_int("seed", seed, 0, SEED_MAX))
    cfg.validate()
    return cfg


@handle_errors
def run_relu_ui(data, p, sigma, lam, tied, n_mem, n_gen, hybrid, copies, steps, sample, seed,
                request: gr.Request = None):
    from ..synthetic.relu_dae import iter_relu_lab

    cfg = relu_config(data, p, sigma, lam, tied, n_mem, n_gen, hybrid, copies, steps, sample, seed)
    yield from _stream("relu-dae", cfg, lambda progress: iter_relu_lab(cfg, progress), request, "relu_dae")


# ------------------------------------------------------------------------------------------ MoG DDPM
def mog_config(d, mu_norm, t_large, t_small, eta_large, eta_small, iters_large, iters_small, K, n_batch, seed):
    from ..synthetic.mog_ddpm import MogDDPMConfig

    cfg = MogDDPMConfig(
        d=as_int("d", d, 1, 64), mu_norm=as_float("||mu*||", mu_norm, 0.5, 10.0),
        t_large=as_float("large-noise t", t_large, 0.05, 6.0), t_small=as_float("small-noise t", t_small, 0.005, 3.0),
        eta_large=as_float("eta (large)", eta_large, 1e-3, 5.0), eta_small=as_float("eta (small)", eta_small, 1e-3, 1.0),
        iters_large=as_int("iterations (large)", iters_large, 1, 500),
        iters_small=as_int("iterations (small)", iters_small, 1, 500),
        K=as_int("K", K, 2, 8), n_batch=as_int("samples per step", n_batch, 64, 50000),
        seed=as_int("seed", seed, 0, SEED_MAX))
    cfg.validate()
    return cfg


@handle_errors
def run_mog_ui(d, mu_norm, t_large, t_small, eta_large, eta_small, iters_large, iters_small, K, n_batch, seed,
               request: gr.Request = None):
    from ..synthetic.mog_ddpm import iter_mog_ddpm

    cfg = mog_config(d, mu_norm, t_large, t_small, eta_large, eta_small, iters_large, iters_small, K, n_batch, seed)
    yield from _stream("mog-ddpm", cfg, lambda _progress: iter_mog_ddpm(cfg), request, "mog_ddpm")


# ------------------------------------------------------------------------------------------ MoLR-MoG
def molr_config(data, K, D, d, n_modes, steps, seed):
    from ..synthetic.molr_mog import MolrMogConfig

    data = _choice("data", data, ("synthetic", "digits"))
    cfg = MolrMogConfig(data=data, K=as_int("K", K, 1, 10), D=as_int("D", D, 2, 64), d=as_int("d_k", d, 1, 16),
                        n_modes=as_int("n_k", n_modes, 1, 8), steps=as_int("steps", steps, 1, 3000),
                        seed=as_int("seed", seed, 0, SEED_MAX))
    cfg.validate()
    return cfg


@handle_errors
def run_molr_ui(data, K, D, d, n_modes, steps, seed, request: gr.Request = None):
    from ..synthetic.molr_mog import iter_molr_mog

    cfg = molr_config(data, K, D, d, n_modes, steps, seed)
    yield from _stream("molr-mog", cfg, lambda progress: iter_molr_mog(cfg, progress), request, "molr_mog")


# ------------------------------------------------------------------------------------------ layout
def _outputs(prefix: str):
    with gr.Column(scale=2):
        fig = gr.Image(label="figure", type="filepath", elem_id=f"theory-{prefix}-figure")
        status = gr.Markdown(elem_id=f"theory-{prefix}-status")
        cli = gr.Markdown(elem_id=f"theory-{prefix}-cli")
        with gr.Accordion("All numbers (JSON)", open=False):
            nums = gr.Code(label="numbers (JSON)", language="json", elem_id=f"theory-{prefix}-numbers")
    return [fig, nums, status, cli]


def build() -> None:
    with gr.Tab("Memorize vs generalize", elem_id="theory-relu-tab"):
        gr.Markdown("Two-layer ReLU DAE `W2 [W1^T x]_+` at one noise level with weight decay (seed 004 §3). "
                    "Few samples / many units memorize (columns = `r_i x_i`, eq. 9, spiky representations); "
                    "many samples / few units generalize (blocks span the top principal components, eq. 8).")
        with gr.Row():
            with gr.Column(scale=1):
                ins = [gr.Dropdown(["digits", "mog"], value="digits", label="data", elem_id="theory-relu-data"),
                       gr.Number(16, label="hidden units p", precision=0, elem_id="theory-relu-p"),
                       gr.Number(0.2, label="sigma", elem_id="theory-relu-sigma"),
                       gr.Number(1e-3, label="weight decay lambda", elem_id="theory-relu-lam"),
                       gr.Checkbox(True, label="tied weights", elem_id="theory-relu-tied"),
                       gr.Number(5, label="memorization samples", precision=0, elem_id="theory-relu-nmem"),
                       gr.Number(1438, label="generalization samples", precision=0, elem_id="theory-relu-ngen"),
                       gr.Checkbox(True, label="hybrid (duplicated samples)", elem_id="theory-relu-hybrid"),
                       gr.Number(200, label="copies of each duplicated sample", precision=0, elem_id="theory-relu-copies"),
                       gr.Number(1500, label="training steps", precision=0, elem_id="theory-relu-steps"),
                       gr.Checkbox(True, label="DDIM samples", elem_id="theory-relu-sample"),
                       gr.Number(0, label="seed", precision=0, elem_id="theory-relu-seed")]
                buttons = run_cancel_buttons("theory-relu")
            outs = _outputs("relu")
        wire_cancellable(buttons, run_relu_ui, ins, outs, api_name="relu_dae")

    with gr.Tab("Gaussian mixtures via DDPM", elem_id="theory-mog-tab"):
        gr.Markdown("Gradient descent on the DDPM objective with the tanh student `tanh(mu_t^T x) mu_t - x` "
                    "(seed 001): power iteration at large noise, (gradient) EM at small noise, and the two-stage "
                    "schedule. K > 2 uses the soft-max student (give it ~200 small-noise iterations).")
        with gr.Row():
            with gr.Column(scale=1):
                ins = [gr.Number(8, label="d", precision=0, elem_id="theory-mog-d"),
                       gr.Number(4.0, label="||mu*||", elem_id="theory-mog-mu"),
                       gr.Number(2.5, label="large-noise t", elem_id="theory-mog-tlarge"),
                       gr.Number(0.05, label="small-noise t", elem_id="theory-mog-tsmall"),
                       gr.Number(1.0, label="eta (large noise)", elem_id="theory-mog-etalarge"),
                       gr.Number(0.5, label="eta (small noise)", elem_id="theory-mog-etasmall"),
                       gr.Number(40, label="iterations (large noise)", precision=0, elem_id="theory-mog-iterslarge"),
                       gr.Number(30, label="iterations (small noise)", precision=0, elem_id="theory-mog-iterssmall"),
                       gr.Number(2, label="components K", precision=0, elem_id="theory-mog-k"),
                       gr.Number(8192, label="samples per GD step", precision=0, elem_id="theory-mog-batch"),
                       gr.Number(0, label="seed", precision=0, elem_id="theory-mog-seed")]
                buttons = run_cancel_buttons("theory-mog")
            outs = _outputs("mog")
        wire_cancellable(buttons, run_mog_ui, ins, outs, api_name="mog_ddpm")

    with gr.Tab("MoLR-MoG experts", elem_id="theory-molr-tab"):
        gr.Markdown("MoLR-MoG data (eq. 2) and three scores trained by denoising score matching (seed 002 §4): "
                    "MoE-latent MoG (eq. 3), MoE-latent Gaussian (MoLRG) and a generic latent MLP. Digits: one "
                    "per-class PCA encoder, K = 10 (set d_k to e.g. 8 and n_k = 4).")
        with gr.Row():
            with gr.Column(scale=1):
                ins = [gr.Dropdown(["synthetic", "digits"], value="synthetic", label="data", elem_id="theory-molr-data"),
                       gr.Number(3, label="subspaces K (digits: 10)", precision=0, elem_id="theory-molr-k"),
                       gr.Number(16, label="ambient D (synthetic)", precision=0, elem_id="theory-molr-D"),
                       gr.Number(2, label="latent d_k", precision=0, elem_id="theory-molr-d"),
                       gr.Number(4, label="modes n_k", precision=0, elem_id="theory-molr-nk"),
                       gr.Number(300, label="training steps", precision=0, elem_id="theory-molr-steps"),
                       gr.Number(0, label="seed", precision=0, elem_id="theory-molr-seed")]
                buttons = run_cancel_buttons("theory-molr")
            outs = _outputs("molr")
        wire_cancellable(buttons, run_molr_ui, ins, outs, api_name="molr_mog")
