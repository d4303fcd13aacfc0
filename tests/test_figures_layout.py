"""Every figure the app shows is readable as drawn: no title runs into another, no text is cut off at
the figure's edge, and no legend sits on the data of any panel. Checked on the drawn figure (the extents
matplotlib lays out), for the lab figures of the theory tabs and the memorization histogram."""
from __future__ import annotations

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg


def _overlap(a, b, slack: float = 1.0) -> bool:
    return (a.x0 < b.x1 - slack and b.x0 < a.x1 - slack and a.y0 < b.y1 - slack and b.y0 < a.y1 - slack)


def layout_problems(fig) -> list[str]:
    """What would make ``fig`` hard to read: titles overlapping each other, text outside the figure,
    legends over an axes' data area (every axes of the figure, not only the legend's own)."""
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    page = fig.bbox
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
    titles = [ax.title for ax in axes if ax.get_title()] + list(fig.texts)   # fig.texts holds the suptitle
    problems = []
    boxes = [(t.get_text(), t.get_window_extent(r)) for t in titles]
    for i, (ta, a) in enumerate(boxes):
        for tb, b in boxes[i + 1:]:
            if _overlap(a, b):
                problems.append(f"titles overlap: {ta!r} / {tb!r}")
    texts = [t for ax in axes for t in (ax.title, ax.xaxis.label, ax.yaxis.label) if t.get_text()] + titles
    for t in texts:
        e = t.get_window_extent(r)
        if e.x0 < page.x0 - 1 or e.x1 > page.x1 + 1 or e.y0 < page.y0 - 1 or e.y1 > page.y1 + 1:
            problems.append(f"text cut off: {t.get_text()!r}")
    legends = [ax.get_legend() for ax in axes if ax.get_legend() is not None] + list(fig.legends)
    for leg in legends:
        e = leg.get_window_extent(r)
        name = [t.get_text() for t in leg.get_texts()][:2]
        for ax in axes:
            if _overlap(e, ax.get_window_extent(r), slack=2.0):
                problems.append(f"a legend ({name}) covers the panel {ax.get_title()!r}")
        for t in texts:
            if _overlap(e, t.get_window_extent(r)):
                problems.append(f"a legend ({name}) covers the text {t.get_text()!r}")
    return problems


def test_the_checker_sees_a_legend_on_the_data_and_overlapping_titles():
    """The check itself: a legend inside the axes and two colliding titles are reported."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4, 3))
    a, b = fig.subplots(1, 2)
    a.plot([0, 1], [0, 1], label="a curve")
    a.legend(loc="center")
    a.set_title("a long title that runs into the next panel's title")
    b.set_title("another long title")
    problems = layout_problems(fig)
    assert any("covers the panel" in p for p in problems) and any("titles overlap" in p for p in problems)


def test_molrg_lab_figures():
    from lowdim_app.plots.molrg import gl_figure, phase_heatmap, rank_vs_snr_figure

    grid = np.where(np.arange(7)[:, None] <= np.arange(14)[None, :], 1.0, 0.0)
    assert layout_problems(phase_heatmap(grid, range(2, 9), range(2, 16), "cluster K=2 n=48")) == []
    snr = np.logspace(-2, 2.7, 12)
    models = {"posterior mean (Lemma 1)": np.full(12, 0.25), "low-rank DAE (eq. 9, SGD)": np.full(12, 0.25),
              "MLP (Adam)": np.linspace(0.9, 0.3, 12)}
    assert layout_problems(rank_vs_snr_figure(snr, models, (0.125, 0.25), "n=48, d_k=[6, 6]")) == []
    rows = [{"d": d, "ratio": q, "gl": 2.0 / q ** 0.3} for d in (3, 6) for q in (1, 4, 16, 64)]
    assert layout_problems(gl_figure(rows)) == []


def test_editing_figures():
    from lowdim_app.methods.lowrank import RankPoint
    from lowdim_app.plots.editing import effect_figure, rank_snr_figure, spectrum_figure

    assert layout_problems(spectrum_figure(np.logspace(0.3, -3, 256), 220, title="digits-gen: spectrum of J_t")) == []
    assert layout_problems(spectrum_figure(np.logspace(0.3, -3, 256), 17, title="digits-gen: spectrum of J_t",
                                           data_dim=62)) == []
    pts = [RankPoint(t=t, sigma=s, snr=1 / s, rank=r, rank_is_lower_bound=False, n=256)
           for t, s, r in ((999, 80.0, 12), (500, 1.0, 20), (10, 0.01, 90))]
    assert layout_problems(rank_snr_figure(pts, "digits-gen: rank of J_t along a DDIM trajectory (seed 0)",
                                           data_dim=62)) == []
    alphas = [-6, -3, 0, 3, 6]
    assert layout_problems(effect_figure(alphas, [0.3, 0.15, 0, 0.15, 0.3], [0.05, 0.02, 0, 0.02, 0.05],
                                         label="v1 (jacobian)")) == []


def test_steering_curve():
    from lowdim_app.plots.steering import strength_curve_figure

    curves = {"this source": [0, 1, 1, 1], "memorized sample (#7)": [0, 0, 1, 1], "generalized sample (#0)": [0, .1, 1, 1]}
    assert layout_problems(strength_curve_figure([0, .5, 1, 1.5], curves, "P(digit 4) (classifier)")) == []
    ref = {label: {"strengths": [0, .5, 1, 1.5], "p_median": [0, .2, .8, 1], "p_q25": [0, .1, .6, .9],
                   "p_q75": [0, .4, .9, 1], "n": 20, "model": model}
           for label, model in (("memorized", "digits-mem"), ("generalized", "digits-gen"))}
    contrast = {"this source": [0, 1, 1, 1], "memorized sample (digits-mem #0)": [0, 0, 1, 1],
                "generalized sample (digits-gen #0)": [0, .1, 1, 1]}
    assert layout_problems(strength_curve_figure([0, .5, 1, 1.5], contrast, "P(digit 4) (classifier)", reference=ref)) == []


def test_memorization_histogram():
    from lowdim_app.plots.memorization import scores_histogram

    rng = np.random.default_rng(0)
    fig = scores_histogram([1.0, 1.1, 1.7], memorized=rng.normal(2, 0.2, 200), generalized=rng.normal(1, 0.1, 200),
                           threshold=1.4, fpr=0.009)
    assert layout_problems(fig) == []


def test_mog_ddpm_figures(one_thread):
    import lowdim_app as ld

    for settings in ({"iters_large": 5, "iters_small": 5, "n_batch": 256}, {"K": 3, "iters_small": 5, "n_batch": 256}):
        assert layout_problems(ld.run("mog-ddpm", **settings).figure()) == [], settings


def test_molr_mog_figure(one_thread):
    import lowdim_app as ld

    res = ld.run("molr-mog", steps=20, n_samples=60, sample_steps=5)
    assert layout_problems(res.figure()) == []


@pytest.mark.parametrize("data", ["digits", "mog"])
def test_relu_dae_figure(data, one_thread):
    """The ReLU lab's 4 x 6 panel figure, drawn at the app's width (titles two lines, legends under rows)."""
    import lowdim_app as ld

    res = ld.run("relu-dae", data=data, steps=30, level_steps=5, levels=2, n_samples=2, copies=20)
    assert layout_problems(res.figure()) == []
