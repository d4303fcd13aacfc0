"""MoLRG theory labs (seed 000): Phase transition, Low-rank denoiser, Generalization score.

``build()`` creates three sub-tabs inside the current Blocks/Tab context. Every handler validates
its parameters on the server, calls the library (``lowdim_app.synthetic``), renders, and shows
the CLI line that reproduces the run. Long runs stream (generators) and can be cancelled.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import gradio as gr

from ..commands.molrg import gl_command_line, phase_command_line
from ..errors import UserError
from .common import STOP_FLAGS, as_float, as_int, handle_errors, run_cancel_buttons, wire_cancellable

UI_MAX_CELLS_X_TRIALS = 20_000


def _tmp(name: str) -> str:
    d = Path(tempfile.mkdtemp(prefix="molrg-"))
    return str(d / name)


def _save_fig(fig, name: str) -> str:
    path = _tmp(name)
    fig.savefig(path, dpi=110)
    return path


# ----------------------------------------------------------------------------- phase
def phase_settings(n, K, d_lo, d_hi, N_lo, N_hi, trials, noise, method, dae_variant, seed):
    from ..synthetic.phase import METHODS, PhaseSettings

    n = as_int("n", n, 4, 128)
    K = as_int("K", K, 1, 3)
    d_lo, d_hi = as_int("d from", d_lo, 1, 32), as_int("d to", d_hi, 1, 32)
    N_lo, N_hi = as_int("N from", N_lo, 1, 100), as_int("N to", N_hi, 1, 100)
    if d_lo > d_hi or N_lo > N_hi:
        raise UserError("each range needs from <= to")
    trials = as_int("trials", trials, 1, 100)
    noise = as_float("noise", noise, 0.0, 1.0)
    seed = as_int("seed", seed, 0, 2**31 - 1)
    if method not in METHODS:
        raise UserError(f"method must be one of {', '.join(METHODS)}")
    if dae_variant not in ("softmax", "hardmax"):
        raise UserError("DAE variant must be softmax or hardmax")
    cells = (d_hi - d_lo + 1) * (N_hi - N_lo + 1)
    if cells * trials > UI_MAX_CELLS_X_TRIALS:
        raise UserError(f"cells x trials = {cells * trials} is over {UI_MAX_CELLS_X_TRIALS}; use the CLI")
    return PhaseSettings(n=n, K=K, d_values=list(range(d_lo, d_hi + 1)), N_values=list(range(N_lo, N_hi + 1)),
                         trials=trials, method=method, noise=noise, seed=seed, dae_variant=dae_variant).validate()


@handle_errors
def run_phase_ui(n, K, d_lo, d_hi, N_lo, N_hi, trials, noise, method, dae_variant, seed,
                 request: gr.Request = None):
    """Stream the success-rate heat map as batches (N columns) finish."""
    with STOP_FLAGS.running(request, "phase") as should_stop:
        yield from _phase_stream(n, K, d_lo, d_hi, N_lo, N_hi, trials, noise, method, dae_variant, seed,
                                 should_stop)


def _phase_stream(n, K, d_lo, d_hi, N_lo, N_hi, trials, noise, method, dae_variant, seed, should_stop):
    import matplotlib.pyplot as plt

    from ..plots.molrg import phase_heatmap
    from ..synthetic.phase import iter_phase

    st = phase_settings(n, K, d_lo, d_hi, N_lo, N_hi, trials, noise, method, dae_variant, seed)
    cli = f"Reproduce: `{phase_command_line(st)} --json out.json --png out.png`"
    res = None
    for res in iter_phase(st, should_stop):
        if should_stop():
            return
        fig = phase_heatmap(res)
        status = f"{res.cells_done}/{res.cells_total} cells, {res.wall_s:.1f} s"
        if not res.finished:
            yield fig, status, "```\n" + res.table() + "\n```", None, None, cli
            plt.close(fig)
    csv_path = _tmp("phase.csv")
    res.to_csv(csv_path)
    png_path = _save_fig(fig, "phase.png")
    res.to_json(_tmp("phase.json"))
    plt.close(fig)
    yield fig, f"done: {res.cells_total} cells in {res.wall_s:.1f} s", "```\n" + res.table() + "\n```", \
        csv_path, png_path, cli


# ----------------------------------------------------------------------------- rank vs SNR
@handle_errors
def run_rank_ui(n, d1, d2, N, trajectories, dae_iters, mlp_steps, seed, progress=gr.Progress(),
                request: gr.Request = None):
    import matplotlib.pyplot as plt

    from ..plots.molrg import rank_vs_snr_figure
    from ..synthetic.gl_score import RankSettings, rank_vs_snr

    n = as_int("n", n, 4, 128)
    dims = [as_int("d_1", d1, 1, 32)]
    d2 = as_int("d_2", d2, 0, 32)
    if d2 > 0:
        dims.append(d2)
    if sum(dims) > n:
        raise UserError(f"sum of dims {sum(dims)} exceeds n = {n}")
    st = RankSettings(n=n, dims=dims, N=as_int("N", N, 2, 5000),
                      trajectories=as_int("trajectories", trajectories, 1, 30),
                      dae_iters=as_int("DAE iterations", dae_iters, 0, 3000),
                      mlp_steps=max(1, as_int("MLP steps", mlp_steps, 0, 50000)),
                      train_mlp=int(float(mlp_steps)) > 0, seed=as_int("seed", seed, 0, 2**31 - 1))
    progress(0.1, desc="closed form")
    with STOP_FLAGS.running(request, "molrg_rank") as should_stop:
        out = rank_vs_snr(st, should_stop=should_stop, progress=lambda msg: progress(0.5, desc=msg))
        if should_stop():
            raise gr.Error("cancelled")
    fig = rank_vs_snr_figure(out)
    png = _save_fig(fig, "rank_vs_snr.png")
    plt.close(fig)
    csv = _tmp("rank_vs_snr.csv")
    names = list(out["models"])
    with open(csv, "w") as f:
        f.write("sigma,snr," + ",".join(f'"{k}"' for k in names) + "\n")
        for i, (s, r) in enumerate(zip(out["sigma"], out["snr"])):
            f.write(f"{s:.6g},{r:.6g}," + ",".join(f"{out['models'][k][i]:.5f}" for k in names) + "\n")
    cli = (f"Reproduce: `python -m lowdim_app molrg-rank --n {st.n} --dims {','.join(map(str, dims))} --N {st.N} "
           f"--trajectories {st.trajectories} --dae-iters {st.dae_iters} "
           f"--mlp-steps {st.mlp_steps if st.train_mlp else 0} --seed {st.seed} --png out.png`")
    return fig, csv, png, cli


# ----------------------------------------------------------------------------- GL score
def gl_settings(n, K, d_values, ratios, steps, width, n_eval, seed):
    from ..synthetic.gl_score import GLSettings

    n, K = as_int("n", n, 4, 128), as_int("K", K, 1, 3)
    try:
        ds = [int(v) for v in str(d_values).replace(" ", "").split(",") if v]
        rs = [float(v) for v in str(ratios).replace(" ", "").split(",") if v]
    except ValueError:
        raise UserError("d_k and ratios must be comma-separated numbers, e.g. 3,4,5,6 and 1,2,4,8") from None
    if not 1 <= len(ds) <= 6 or not 1 <= len(rs) <= 10:
        raise UserError("give 1-6 values of d_k and 1-10 ratios")
    for d in ds:
        as_int("d_k", d, 1, 16)
    for r in rs:
        as_float("ratio", r, 0.1, 200)
    if K * max(ds) > n:
        raise UserError(f"K * max(d_k) = {K * max(ds)} exceeds n = {n}")
    return GLSettings(n=n, K=K, d_values=ds, ratios=rs, steps=as_int("steps", steps, 1, 50000),
                      width=as_int("width", width, 8, 512), n_eval=as_int("samples", n_eval, 10, 1000),
                      seed=as_int("seed", seed, 0, 2**31 - 1))


@handle_errors
def run_gl_ui(n, K, d_values, ratios, steps, width, n_eval, seed, request: gr.Request = None):
    with STOP_FLAGS.running(request, "gl_score") as should_stop:
        yield from _gl_stream(n, K, d_values, ratios, steps, width, n_eval, seed, should_stop)


def _gl_stream(n, K, d_values, ratios, steps, width, n_eval, seed, should_stop):
    import matplotlib.pyplot as plt

    from ..plots.molrg import gl_figure
    from ..synthetic.gl_score import iter_gl_experiment

    st = gl_settings(n, K, d_values, ratios, steps, width, n_eval, seed)
    cli = f"Reproduce: `{gl_command_line(st)} --png out.png`"
    res = None
    for res in iter_gl_experiment(st, should_stop):
        if should_stop():
            return
        fig = gl_figure(res)
        if not res.finished:
            yield fig, f"trained d_k = {res.rows[-1]['d']} ({res.wall_s:.1f} s)", None, None, cli
            plt.close(fig)
    csv = _tmp("gl_score.csv")
    Path(csv).write_text(res.to_csv())
    png = _save_fig(fig, "gl_score.png")
    Path(_tmp("gl_score.json")).write_text(json.dumps(res.to_dict()))
    plt.close(fig)
    yield fig, f"done in {res.wall_s:.1f} s", csv, png, cli


# ----------------------------------------------------------------------------- layout
def build() -> None:
    with gr.Tab("Phase transition", elem_id="molrg-phase-tab"):
        gr.Markdown("Learning K orthogonal d-dim subspaces in R^n from N samples per component "
                    "(seed 000 Fig. 4). Success: App. E.1 error <= 0.5 (best permutation). Red: N_k = d.")
        with gr.Row():
            n = gr.Number(48, label="n", precision=0, elem_id="molrg-phase-n")
            K = gr.Number(2, label="K (1-3)", precision=0, elem_id="molrg-phase-K")
            trials = gr.Number(20, label="trials per cell", precision=0, elem_id="molrg-phase-trials")
            noise = gr.Number(0.0, label="noise", elem_id="molrg-phase-noise")
            seed = gr.Number(0, label="seed", precision=0, elem_id="molrg-phase-seed")
        with gr.Row():
            d_lo = gr.Number(2, label="d from", precision=0, elem_id="molrg-phase-dlo")
            d_hi = gr.Number(8, label="d to", precision=0, elem_id="molrg-phase-dhi")
            N_lo = gr.Number(2, label="N_k from", precision=0, elem_id="molrg-phase-Nlo")
            N_hi = gr.Number(15, label="N_k to", precision=0, elem_id="molrg-phase-Nhi")
            method = gr.Dropdown(["svd", "cluster", "dae"], value="cluster", label="method",
                                 elem_id="molrg-phase-method")
            variant = gr.Dropdown(["hardmax", "softmax"], value="hardmax", label="DAE variant (eq. 16 / eq. 9)",
                                  elem_id="molrg-phase-variant")
        with gr.Row():
            buttons = run_cancel_buttons("molrg-phase")
        status = gr.Markdown(elem_id="molrg-phase-status")
        with gr.Row():
            plot = gr.Plot(label="success rate", elem_id="molrg-phase-plot")
            table = gr.Markdown(elem_id="molrg-phase-table")
        with gr.Row():
            csv = gr.File(label="CSV", elem_id="molrg-phase-csv")
            png = gr.File(label="PNG", elem_id="molrg-phase-png")
        cli = gr.Markdown(elem_id="molrg-phase-cli")
        wire_cancellable(buttons, run_phase_ui, [n, K, d_lo, d_hi, N_lo, N_hi, trials, noise, method, variant, seed],
                         [plot, status, table, csv, png, cli], api_name="phase")

    with gr.Tab("Low-rank denoiser", elem_id="molrg-rank-tab"):
        gr.Markdown("Numerical rank / n (eq. 46) of the denoiser Jacobian vs SNR along EDM sampling "
                    "trajectories (seed 000 Fig. 3b / 7a); shaded: Lemma 2 bounds. The closed form and the "
                    "low-rank DAE sit on the bounds; a generic MLP approaches them only with a large training "
                    "budget, as the U-Net does in Fig. 7a (width and batch: `molrg-rank --mlp-width --mlp-batch`; "
                    "`bench/rank_budget.py` compares budgets).")
        with gr.Row():
            rn = gr.Number(48, label="n", precision=0, elem_id="molrg-rank-n")
            rd1 = gr.Number(6, label="d_1", precision=0, elem_id="molrg-rank-d1")
            rd2 = gr.Number(6, label="d_2 (0: one component)", precision=0, elem_id="molrg-rank-d2")
            rN = gr.Number(1000, label="training samples", precision=0, elem_id="molrg-rank-N")
        with gr.Row():
            rtraj = gr.Number(15, label="trajectories", precision=0, elem_id="molrg-rank-traj")
            rdae = gr.Number(300, label="DAE SGD steps (0: skip)", precision=0, elem_id="molrg-rank-dae")
            rmlp = gr.Number(6000, label="MLP Adam steps (0: skip)", precision=0, elem_id="molrg-rank-mlp")
            rseed = gr.Number(0, label="seed", precision=0, elem_id="molrg-rank-seed")
        with gr.Row():
            rbuttons = run_cancel_buttons("molrg-rank")
        rplot = gr.Plot(elem_id="molrg-rank-plot")
        with gr.Row():
            rcsv = gr.File(label="CSV", elem_id="molrg-rank-csv")
            rpng = gr.File(label="PNG", elem_id="molrg-rank-png")
        rcli = gr.Markdown(elem_id="molrg-rank-cli")
        wire_cancellable(rbuttons, run_rank_ui, [rn, rd1, rd2, rN, rtraj, rdae, rmlp, rseed],
                         [rplot, rcsv, rpng, rcli], api_name="molrg_rank")

    with gr.Tab("Generalization score", elem_id="molrg-gl-tab"):
        gr.Markdown("MLP denoisers trained on N_k = ratio x d_k samples per component; GL score (eq. 21) "
                    "of their samples vs N_k/d_k (seed 000 Fig. 5a). Curves fill in per d_k (about 1-2 minutes "
                    "each on 2 CPU cores with these defaults). The paper's grid, d_k = 3..6 and ratios "
                    "1..64, is `python -m lowdim_app gl-score --png fig5a.png` (about 20 minutes).")
        with gr.Row():
            gn = gr.Number(48, label="n", precision=0, elem_id="molrg-gl-n")
            gK = gr.Number(2, label="K", precision=0, elem_id="molrg-gl-K")
            gd = gr.Textbox("3,6", label="d_k values", elem_id="molrg-gl-d")
            gr_ = gr.Textbox("1,4,16,64", label="N_k/d_k ratios", elem_id="molrg-gl-ratios")
        with gr.Row():
            gsteps = gr.Number(12000, label="Adam steps", precision=0, elem_id="molrg-gl-steps")
            gwidth = gr.Number(256, label="MLP width", precision=0, elem_id="molrg-gl-width")
            geval = gr.Number(300, label="samples for eq. 21", precision=0, elem_id="molrg-gl-neval")
            gseed = gr.Number(0, label="seed", precision=0, elem_id="molrg-gl-seed")
        with gr.Row():
            gbuttons = run_cancel_buttons("molrg-gl")
        gstatus = gr.Markdown(elem_id="molrg-gl-status")
        gplot = gr.Plot(elem_id="molrg-gl-plot")
        with gr.Row():
            gcsv = gr.File(label="CSV", elem_id="molrg-gl-csv")
            gpng = gr.File(label="PNG", elem_id="molrg-gl-png")
        gcli = gr.Markdown(elem_id="molrg-gl-cli")
        wire_cancellable(gbuttons, run_gl_ui, [gn, gK, gd, gr_, gsteps, gwidth, geval, gseed],
                         [gplot, gstatus, gcsv, gpng, gcli], api_name="gl_score")
