"""MoLRG theory labs (Wang et al. 2024, arXiv:2409.02426): Phase transition, Low-rank denoiser,
Generalization score.

``build()`` creates three sub-tabs inside the current Blocks/Tab context. Each handler builds the
feature's declared settings from its inputs (:mod:`lowdim_app.features.phase`,
:mod:`~lowdim_app.features.molrg_rank`, :mod:`~lowdim_app.features.gl_score`), streams the
feature's partial results, writes the final result's files and shows its reproduce line. Cancel
stops the computation (``STOP_FLAGS``).
"""
from __future__ import annotations

import dataclasses

import gradio as gr

from ..errors import UserError
from ..features.gl_score import FEATURE as GL
from ..features.gl_score import GLSettings
from ..features.molrg_rank import FEATURE as RANK
from ..features.molrg_rank import RankSettings
from ..features.phase import FEATURE as PHASE
from ..features.phase import WEB_MAX_PROBLEMS, PhaseSettings
from ..features.settings import coerce, fmt, spec_of
from .common import (
    Plot,
    handle_errors,
    intro,
    lab_examples,
    request_folder,
    run_cancel_buttons,
    run_in_worker,
    unchanged,
    wire_cancellable,
)

FILES_EXTRA = "--json out.json --png out.png"


def _field(cls, name: str) -> dataclasses.Field:
    return {f.name: f for f in dataclasses.fields(cls)}[name]


def _bounds(cls, name: str) -> str:
    spec = spec_of(_field(cls, name))
    if spec.lo is None or spec.hi is None:
        return ""
    return f"{fmt(spec.lo)}..{fmt(spec.hi)}{' ' + spec.unit if spec.unit else ''}"


def _info(cls, name: str) -> str:
    """A setting's help text with its declared bounds, for the input's ``info``."""
    help_, bounds = spec_of(_field(cls, name)).help, _bounds(cls, name)
    return f"{help_} ({bounds})" if bounds else help_


def _span(cls, name: str, lo, hi) -> tuple[int, ...]:
    """``lo..hi`` inclusive, both ends validated by the setting's declaration."""
    a, b = coerce(cls, _field(cls, name), [lo, hi])
    if a > b:
        raise UserError(f"{name}: 'from' ({a}) must not exceed 'to' ({b})")
    return tuple(range(a, b + 1))


def _is_zero(value) -> bool:
    try:
        return float(value) == 0.0
    except (TypeError, ValueError):
        return False


def _reproduce(settings) -> str:
    return f"Reproduce: `{settings.to_cli(extra=FILES_EXTRA)}`"


def _files(result, stem: str) -> tuple[str, str, str]:
    """The final result's CSV, PNG and JSON (the files the reproduce line names) in a fresh folder."""
    folder = request_folder("molrg")
    return (str(result.write_csv(folder / f"{stem}.csv")), str(result.write_figure(folder / f"{stem}.png")),
            str(result.write_json(folder / f"{stem}.json")))


# ----------------------------------------------------------------------------- phase
def phase_settings(n, K, d_lo, d_hi, N_lo, N_hi, trials, noise, method, dae_variant, seed) -> PhaseSettings:
    s = PhaseSettings.from_raw(n=n, K=K, d=_span(PhaseSettings, "d", d_lo, d_hi),
                               N=_span(PhaseSettings, "N", N_lo, N_hi), trials=trials, noise=noise,
                               method=method, dae_variant=dae_variant, seed=seed)
    PHASE.check_web_budget(s)
    return s


@handle_errors
def run_phase_ui(n, K, d_lo, d_hi, N_lo, N_hi, trials, noise, method, dae_variant, seed,
                 request: gr.Request = None, progress=gr.Progress()):
    """Stream the success-rate heat map as batches (N columns) finish."""
    settings = phase_settings(n, K, d_lo, d_hi, N_lo, N_hi, trials, noise, method, dae_variant, seed)
    cli = _reproduce(settings)
    for res in run_in_worker(PHASE, settings, request=request, lab="phase", stream=True, progress=progress):
        if res is None:
            yield unchanged(7)
            continue
        table = "```\n" + res.table() + "\n```"
        if res.finished:
            csv, png, js = _files(res, "phase")
            yield (res.figure(), f"done: {res.grid.cells_total} cells in {res.grid.wall_s:.1f} s", table,
                   csv, png, js, cli)
        else:
            status = f"{res.grid.cells_done}/{res.grid.cells_total} cells, {res.grid.wall_s:.1f} s"
            yield res.figure(), status, table, None, None, None, cli


# ----------------------------------------------------------------------------- rank vs SNR
def rank_settings(n, d1, d2, N, trajectories, dae_iters, mlp_steps, seed, mlp_param="sample") -> RankSettings:
    dims = [d1] if _is_zero(d2) else [d1, d2]
    return RankSettings.from_raw(n=n, dims=dims, N=N, trajectories=trajectories, dae_iters=dae_iters,
                                 mlp_steps=mlp_steps, seed=seed, mlp_param=mlp_param)


@handle_errors
def run_rank_ui(n, d1, d2, N, trajectories, dae_iters, mlp_steps, seed, mlp_param="sample", request: gr.Request = None,
                progress=gr.Progress()):
    """Stream the rank-vs-SNR curves as the models (closed form, DAE, MLP) finish."""
    settings = rank_settings(n, d1, d2, N, trajectories, dae_iters, mlp_steps, seed, mlp_param)
    cli = _reproduce(settings)
    for res in run_in_worker(RANK, settings, request=request, lab="molrg_rank", stream=True, progress=progress):
        if res is None:
            yield unchanged(5)
        elif res.finished:
            csv, png, js = _files(res, "rank_vs_snr")
            yield res.figure(), csv, png, js, cli
        else:
            yield res.figure(), None, None, None, cli


# ----------------------------------------------------------------------------- GL score
def gl_settings(n, K, d_values, ratios, steps, width, n_eval, seed) -> GLSettings:
    return GLSettings.from_raw(n=n, K=K, d=d_values, ratios=ratios, steps=steps, width=width, n_eval=n_eval,
                               seed=seed)


@handle_errors
def run_gl_ui(n, K, d_values, ratios, steps, width, n_eval, seed, request: gr.Request = None, progress=gr.Progress()):
    """Stream the GL curves (eq. 21) as each d_k's networks finish."""
    settings = gl_settings(n, K, d_values, ratios, steps, width, n_eval, seed)
    cli = _reproduce(settings)
    for res in run_in_worker(GL, settings, request=request, lab="gl_score", stream=True, progress=progress):
        if res is None:
            yield unchanged(6)
        elif res.finished:
            csv, png, js = _files(res, "gl_score")
            yield res.figure(), f"done in {res.wall_s:.1f} s", csv, png, js, cli
        else:
            yield res.figure(), f"trained d_k = {res.rows[-1]['d']} ({res.wall_s:.1f} s)", None, None, None, cli


# ----------------------------------------------------------------------------- layout
def _number(value, label: str, cls, name: str, elem_id: str, precision: int | None = 0, full: bool = True):
    """A number input whose ``info`` shows the setting's declared help and bounds."""
    info = _info(cls, name) if full else _bounds(cls, name)
    return gr.Number(value, label=label, precision=precision, elem_id=elem_id, info=info, min_width=120)


PHASE_INTRO = ("Set the grid of subspace dimensions `d` and samples per component `N_k` and press **Run**: each cell "
               "is the share of trials in which the K subspaces were learned. Look for the sharp edge from failure "
               "(dark) to success (yellow) along the red line `N_k = d`.")
PHASE_ABOUT = ("Learning K orthogonal d-dimensional subspaces in R^n from N_k samples per component (Wang et al. 2024, "
               "arXiv:2409.02426, §4.1, Fig. 4 and 8). A trial succeeds when the subspace error of App. E.1 (best "
               "permutation) is at most 0.5; the red line is the boundary of Thm. 2 and 4. Methods: svd (PCA, one "
               "subspace), cluster (subspace clustering), dae (SGD on the low-rank DAE loss). The web app runs up to "
               f"{WEB_MAX_PROBLEMS} cells x trials; the reproduce line runs any grid.")
RANK_INTRO = ("Press **Run**: the numerical rank of the denoiser's Jacobian, as a share of n, along sampling "
              "trajectories, against the SNR. Look at whether each model's curve stays inside the shaded band "
              "(it should: the data are low-rank); curves appear as each model finishes.")
RANK_ABOUT = ("Numerical rank (Wang et al. 2024, arXiv:2409.02426, eq. 46) vs SNR along EDM sampling trajectories "
              "(Fig. 3b and 7a, App. D.2); the band is Lemma 2's bounds. The posterior mean (Lemma 1, closed form) and "
              "the low-rank DAE (eq. 9) sit on the bounds. The MLP that predicts the clean sample stays inside them at every "
              "SNR (18 of 18 noise levels at 3000 steps); with EDM's preconditioning its skip connection keeps the "
              "Jacobian near the identity at high SNR (1 of 18; `bench/molrg_parameterization.py`). Width and batch: "
              "`molrg-rank --mlp-width --mlp-batch`.")
GL_INTRO = ("Press **Run**: MLP denoisers are trained on N_k = ratio x d_k samples per component and their samples "
            "scored. Look at the GL score falling towards 1 as N_k / d_k grows: the model moves from memorizing its "
            "training set to generalizing.")
GL_ABOUT = ("The generalization (GL) score is eq. 21 of Wang et al. 2024 (arXiv:2409.02426), Fig. 5a. Curves fill in "
            "per d_k; the default (d_k = 3, 2000 Adam steps) takes about a minute on 2 CPU cores. The paper's grid, "
            "d_k = 3..6 and ratios 1..64, is `python -m lowdim_app gl-score --png fig5a.png` (about 20 minutes).")


def _files_column(prefix: str):
    """The three files a lab run writes (what the reproduce line names), one under the other."""
    return (gr.File(label="table (CSV)", elem_id=f"{prefix}-csv", elem_classes=["compact-file"]),
            gr.File(label="figure (PNG)", elem_id=f"{prefix}-png", elem_classes=["compact-file"]),
            gr.File(label="all numbers (JSON)", elem_id=f"{prefix}-json", elem_classes=["compact-file"]))


def build() -> None:
    P, R, G = PhaseSettings, RankSettings, GLSettings
    with gr.Tab("Phase transition", elem_id="molrg-phase-tab"):
        intro(PHASE_INTRO, PHASE_ABOUT)
        examples_slot = gr.Column()   # the examples sit above the inputs
        with gr.Row(elem_classes=["lab-row"]):
            with gr.Column(scale=1, min_width=300, elem_id="molrg-phase-controls"):
                with gr.Row():
                    n = _number(48, "n", P, "n", "molrg-phase-n")
                    K = _number(2, "K (1-3)", P, "K", "molrg-phase-K")
                with gr.Row():
                    d_lo = _number(2, "d from", P, "d", "molrg-phase-dlo", full=False)
                    d_hi = _number(8, "d to", P, "d", "molrg-phase-dhi", full=False)
                with gr.Row():
                    N_lo = _number(2, "N_k from", P, "N", "molrg-phase-Nlo", full=False)
                    N_hi = _number(15, "N_k to", P, "N", "molrg-phase-Nhi", full=False)
                with gr.Row():
                    trials = _number(20, "trials per cell", P, "trials", "molrg-phase-trials")
                    method = gr.Dropdown(list(spec_of(_field(P, "method")).choices), value="cluster", label="method",
                                         elem_id="molrg-phase-method", min_width=120)
                variant = gr.Dropdown(["hardmax", "softmax"], value="hardmax", label="DAE variant (eq. 16 / eq. 9)",
                                      elem_id="molrg-phase-variant", visible=False)   # shown for method = dae
                with gr.Accordion("Advanced", open=False):
                    with gr.Row():
                        noise = _number(0.0, "noise", P, "noise", "molrg-phase-noise", precision=None)
                        seed = _number(0, "seed", P, "seed", "molrg-phase-seed")
                with gr.Row():
                    buttons = run_cancel_buttons("molrg-phase")
            with gr.Column(scale=2, elem_id="molrg-phase-results"):
                plot = Plot(label="success-rate heat map", elem_id="molrg-phase-plot", show_label=False)
                status = gr.Markdown(elem_id="molrg-phase-status", label="status")
                cli = gr.Markdown(elem_id="molrg-phase-cli", label="reproduce line")
                with gr.Row(equal_height=False):
                    with gr.Accordion("Success rates as a table", open=False):
                        table = gr.Markdown(elem_id="molrg-phase-table", label="success-rate table")
                    with gr.Column():
                        csv, png, js = _files_column("molrg-phase")
        phase_inputs = dict(n=n, K=K, d_lo=d_lo, d_hi=d_hi, N_lo=N_lo, N_hi=N_hi, trials=trials, noise=noise,
                            method=method, variant=variant, seed=seed)
        with examples_slot:
            lab_examples(phase_inputs, [plot, status, table, csv, png, js, cli], run_phase_ui,
                         [("clustering, K = 2 (Fig. 4)", {}), ("SVD, one subspace (K = 1)", {"method": "svd", "K": 1}),
                          ("clustering with noise 0.1", {"noise": 0.1})], elem_id="molrg-phase-examples")
        wire_cancellable(buttons, run_phase_ui, [n, K, d_lo, d_hi, N_lo, N_hi, trials, noise, method, variant, seed],
                         [plot, status, table, csv, png, js, cli], api_name="phase", status=status,
                         concurrency_id="labs", concurrency_limit=2, show_progress_on=[plot])
        method.change(lambda m: gr.update(visible=m == "dae"), method, variant, api_name=False, queue=False,
                      show_progress="hidden")

    with gr.Tab("Low-rank", elem_id="molrg-rank-tab"):
        intro(RANK_INTRO, RANK_ABOUT)
        examples_slot = gr.Column()   # the examples sit above the inputs
        with gr.Row(elem_classes=["lab-row"]):
            with gr.Column(scale=1, min_width=300, elem_id="molrg-rank-controls"):
                with gr.Row():
                    rn = _number(48, "n", R, "n", "molrg-rank-n")
                    rN = _number(1000, "training samples", R, "N", "molrg-rank-N")
                with gr.Row():
                    rd1 = _number(6, "d_1", R, "dims", "molrg-rank-d1", full=False)
                    rd2 = gr.Number(6, label="d_2 (0: one component)", precision=0, elem_id="molrg-rank-d2",
                                    min_width=120)
                with gr.Row():
                    rtraj = _number(15, "trajectories", R, "trajectories", "molrg-rank-traj")
                    rdae = _number(300, "DAE SGD steps (0: skip)", R, "dae_iters", "molrg-rank-dae")
                with gr.Row():
                    rmlp = _number(3000, "MLP Adam steps (0: skip)", R, "mlp_steps", "molrg-rank-mlp")
                    rseed = _number(0, "seed", R, "seed", "molrg-rank-seed")
                    rparam = gr.Dropdown(list(spec_of(_field(R, "mlp_param")).choices), value=R.mlp_param,
                                         label="MLP parameterization", elem_id="molrg-rank-param")
                with gr.Row():
                    rbuttons = run_cancel_buttons("molrg-rank")
            with gr.Column(scale=2, elem_id="molrg-rank-results"):
                rplot = Plot(label="rank vs SNR", elem_id="molrg-rank-plot", show_label=False)
                rcli = gr.Markdown(elem_id="molrg-rank-cli", label="reproduce line")
                with gr.Row():
                    rcsv, rpng, rjs = _files_column("molrg-rank")
        with examples_slot:
            lab_examples(dict(n=rn, d1=rd1, d2=rd2, N=rN, traj=rtraj, dae=rdae, mlp=rmlp, seed=rseed, param=rparam),
                         [rplot, rcsv, rpng, rjs, rcli], run_rank_ui,
                         [("closed form, DAE and MLP", {}), ("closed form and DAE only (seconds)", {"mlp": 0}),
                          ("MLP with EDM preconditioning", {"param": "edm"}),
                          ("one component (d_2 = 0)", {"d2": 0})], elem_id="molrg-rank-examples")
        wire_cancellable(rbuttons, run_rank_ui, [rn, rd1, rd2, rN, rtraj, rdae, rmlp, rseed, rparam],
                         [rplot, rcsv, rpng, rjs, rcli], api_name="molrg_rank", concurrency_id="labs",
                         concurrency_limit=2, show_progress_on=[rplot])

    with gr.Tab("GL score", elem_id="molrg-gl-tab"):
        intro(GL_INTRO, GL_ABOUT)
        examples_slot = gr.Column()   # the examples sit above the inputs
        with gr.Row(elem_classes=["lab-row"]):
            with gr.Column(scale=1, min_width=300, elem_id="molrg-gl-controls"):
                with gr.Row():
                    gn = _number(48, "n", G, "n", "molrg-gl-n")
                    gK = _number(2, "K", G, "K", "molrg-gl-K")
                with gr.Row():
                    gd = gr.Textbox("3", label="d_k values", elem_id="molrg-gl-d", info=_info(G, "d"), min_width=120)
                    gr_ = gr.Textbox("1,4,16,64", label="N_k/d_k ratios", elem_id="molrg-gl-ratios",
                                     info=_info(G, "ratios"), min_width=120)
                with gr.Row():
                    gsteps = _number(2000, "Adam steps", G, "steps", "molrg-gl-steps")
                    gwidth = _number(256, "MLP width", G, "width", "molrg-gl-width")
                with gr.Row():
                    geval = _number(300, "samples for eq. 21", G, "n_eval", "molrg-gl-neval")
                    gseed = _number(0, "seed", G, "seed", "molrg-gl-seed")
                with gr.Row():
                    gbuttons = run_cancel_buttons("molrg-gl")
            with gr.Column(scale=2, elem_id="molrg-gl-results"):
                gplot = Plot(label="GL score vs N_k/d_k", elem_id="molrg-gl-plot", show_label=False)
                gstatus = gr.Markdown(elem_id="molrg-gl-status", label="status")
                gcli = gr.Markdown(elem_id="molrg-gl-cli", label="reproduce line")
                with gr.Row():
                    gcsv, gpng, gjs = _files_column("molrg-gl")
        with examples_slot:
            lab_examples(dict(n=gn, K=gK, d=gd, ratios=gr_, steps=gsteps, width=gwidth, n_eval=geval, seed=gseed),
                         [gplot, gstatus, gcsv, gpng, gjs, gcli], run_gl_ui,
                         [("d_k = 3, 2000 steps (under a minute)", {}),
                          ("d_k = 3 and 6, 12000 steps (Fig. 5a's training; minutes)", {"d": "3,6", "steps": 12000})],
                         elem_id="molrg-gl-examples")
        wire_cancellable(gbuttons, run_gl_ui, [gn, gK, gd, gr_, gsteps, gwidth, geval, gseed],
                         [gplot, gstatus, gcsv, gpng, gjs, gcli], api_name="gl_score",
                         status=gstatus, concurrency_id="labs", concurrency_limit=2, show_progress_on=[gplot])
