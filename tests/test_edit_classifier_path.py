"""The digit classifier along an edit (Wang et al. 2024, arXiv:2409.02426, §4.2, Fig. 6): the built-in digit
models' edit results carry the class probabilities of both rows, the effect figure draws them, and the
measures of bench/edit_path.py (transition width, path continuity) are right on closed forms."""
import pickle

import numpy as np
import pytest

from lowdim_app.data.classifier import predict_proba
from lowdim_app.features.edit import FEATURE as EDIT
from lowdim_app.features.edit import EditSettings
from lowdim_app.methods import structure as st
from lowdim_app.plots.editing import effect_figure

EX = "assets/examples/digit_2_test0.png"


def test_transition_width_and_continuity_on_closed_forms():
    """A logistic fall p = 1 / (1 + exp((a - c) / s)) goes from 0.9 to 0.1 over s ln 81; an evenly moving
    path has continuity 1 / (n - 1), one that jumps once 1."""
    a = np.linspace(-6, 6, 97)
    for c, s, side in ((2.0, 0.5, 1), (-3.0, -0.3, -1)):
        w = st.transition_width(a, 1 / (1 + np.exp((a - c) / s)))
        assert w["side"] == side and w["width"] == pytest.approx(abs(s) * np.log(81), rel=0.03)
        assert w["at"] == pytest.approx(c + abs(s) * np.log(9) * side, abs=0.02)
    assert np.isnan(st.transition_width(a, np.ones_like(a))["width"])            # never leaves the class
    both = 1 / (1 + np.exp((a - 1) / 0.2)) * 1 / (1 + np.exp(-(a + 4) / 1.0))    # the narrower side is reported
    assert st.transition_width(a, both)["width"] == pytest.approx(0.2 * np.log(81), rel=0.05)
    even = np.linspace(0, 1, 13)[:, None] * np.ones((13, 4))
    assert st.path_continuity(even) == pytest.approx(1 / 12)
    jump = np.repeat([[0.0], [1.0]], [6, 7], axis=0) * np.ones((13, 4))
    assert st.path_continuity(jump) == pytest.approx(1.0)
    assert st.tv_steps([[1, 0], [0.5, 0.5], [0, 1]]).tolist() == [0.5, 0.5]


def test_digit_edit_carries_the_classifier_path(digits_gen):
    s = EditSettings(image=EX, model="digits-gen", t=0.7, k=1, steps=10, alpha=(-6.0, -3.0, 0.0, 3.0, 6.0))
    res = pickle.loads(pickle.dumps(EDIT.run(s, model=digits_gen)))       # it crosses the ZeroGPU boundary
    assert isinstance(res.proba_along, list) and isinstance(res.proba_along[0], list)
    for probs, images in ((res.proba_along, res.along), (res.proba_control, res.control)):
        assert np.asarray(probs).shape == (5, 10)
        assert np.allclose(probs, predict_proba(images), atol=1e-12)
    nums = res.numbers()
    assert nums["classifier_along_direction"] == res.proba_along and nums["classifier_along_random"] == res.proba_control
    start = int(np.argmax(res.proba_along[2]))
    assert (f"class at alpha = -6 / +0 / +6: along {res.label} {np.argmax(res.proba_along[0])} / {start} / "
            in res.summary())
    fig = effect_figure(res.alphas, res.change_along, res.change_random, res.label,
                        proba_along=res.proba_along, proba_control=res.proba_control)
    assert len(res.figure().axes) == len(fig.axes) == 2
    px = fig.axes[1]
    labels = [line.get_label() for line in px.lines]
    assert labels[0] == f"p({start}) along {res.label}" and labels[2] == f"p({start}) random"
    assert [line.get_linestyle() for line in px.lines] == ["-", "-", "--", "--"]
    assert np.allclose(px.lines[0].get_ydata(), np.asarray(res.proba_along)[:, start])
    assert np.allclose(px.lines[2].get_ydata(), np.asarray(res.proba_control)[:, start])


def test_other_image_sizes_have_no_classifier_path(tmp_path):
    """A 3-channel model: no probabilities, the effect figure keeps its one panel."""
    from lowdim_app.diffusion import load_model
    from lowdim_app.diffusion.tiny import build_tiny_pixel_pipeline

    model = load_model(str(build_tiny_pixel_pipeline(tmp_path / "rgb", channels=3, size=16)), "cpu")
    s = EditSettings(image=EX, model="rgb", t=0.5, k=1, steps=4, alpha=(-2.0, 0.0, 2.0))
    res = EDIT.run(s, model=model)
    assert res.proba_along is None and res.proba_control is None
    assert "classifier" not in " ".join(res.numbers()) and "Digit classifier" not in res.summary()
    assert len(res.figure().axes) == 1


def test_default_example_path_is_semantic_and_continuous(digits_gen):
    """The Edit tab's default edit (its first example, t and alpha range, seed 0) on the shipped digits-gen:
    along v1 the digit changes class and the random direction leaves it alone; the class is left gradually
    (no jump between neighbouring alphas: the probability of the starting class takes more than one alpha step
    to fall from 0.9 to 0.1) and the image moves evenly. Measured: 5 -> 3, largest TV step 0.46, width 0.48
    (steps of 0.25), continuity 0.093 (1/24 = 0.042 for an even path). The previous default (digit_0_test3
    at 0.7T, 7 alphas in [-6, 6]) jumps from 7 to 0 in one step (TV 1.0)."""
    from lowdim_app.features.edit import EXAMPLE_AMAX, EXAMPLE_COUNT, EXAMPLE_IMAGE, EXAMPLE_T, AlphaRange
    from lowdim_app.ui.edit_tab import EXAMPLES

    assert EXAMPLES[0].endswith(EXAMPLE_IMAGE)
    alphas = AlphaRange(amax=EXAMPLE_AMAX, count=EXAMPLE_COUNT).alphas
    s = EditSettings(image=EXAMPLES[0], model="digits-gen", t=EXAMPLE_T, k=1, alpha=alphas, seed=0)   # v1: as k = 5
    res = EDIT.run(s, model=digits_gen)
    pa, pc = np.asarray(res.proba_along), np.asarray(res.proba_control)
    zero = alphas.index(0.0)
    start = int(pa[zero].argmax())
    assert (pa.argmax(1) != start).any() and (pc.argmax(1) == start).all()
    assert st.tv_steps(pa).max() <= 0.6
    assert st.transition_width(alphas, pa[:, start])["width"] >= 1.5 * (alphas[1] - alphas[0])
    assert st.path_continuity(res.along) <= 3 / (len(alphas) - 1)
