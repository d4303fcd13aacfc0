"""The tabs' display helpers, without a server: labelled strips (alpha per column, alpha = 0 framed, the
mask outlined), the unavailable-model note instead of an error, stale results cleared when the editor's
image changes, short captions, and only the inputs of the chosen mode shown."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lowdim_app.data.images import make_grid
from lowdim_app.plots.editing import label_strip, strip_geometry

RED = np.array([220, 40, 40])


def _strip(ncols=7, nrows=2, up=8, side=16):
    torch.manual_seed(0)
    return make_grid(torch.zeros(ncols * nrows, 1, side, side) - 1, nrow=ncols, upscale=up)   # black tiles


def test_strip_geometry_is_recovered():
    for ncols, nrows, up, side in [(7, 2, 8, 16), (2, 2, 8, 16), (16, 1, 4, 32), (3, 2, 1, 64)]:
        g = _strip(ncols, nrows, up, side)
        assert strip_geometry(g.width, g.height, ncols, nrows) == (up, side, side)


def test_label_strip_frames_alpha_zero_and_outlines_the_mask():
    g = _strip()
    mask = np.zeros((16, 16), bool)
    mask[4:10, 5:12] = True
    out = np.asarray(label_strip(g, np.linspace(-6, 6, 7), rows=("along v_i", "random"), mask=mask)).astype(int)
    assert out.shape[0] > g.height and out.shape[1] > g.width       # a band for the labels, one for row names
    reddish = (out[..., 0] > 180) & (out[..., 1] < 90) & (out[..., 2] < 90)
    cols = np.nonzero(reddish.any(0))[0]
    # the frame of alpha = 0 (column 4 of 7) spans the full height; the mask outline is on every tile
    frame_cols = [c for c in cols if reddish[:, c].sum() > 0.8 * g.height]
    assert frame_cols, "alpha = 0 column not framed"
    left = out.shape[1] - g.width
    middle = left + 2 * 8 + 3 * 18 * 8
    assert middle - 16 <= frame_cols[0] <= middle + 18 * 8
    outline = (out[..., 0] > 240) & (out[..., 1] < 80)
    top = out.shape[0] - g.height - 2 * (out.shape[0] - g.height) // 3   # the margin above the tiles
    for i in (0, 6):   # the first and last tile of the top row: outline pixels on the mask's box, none outside
        x0, y0 = left + 16 + i * 144, top + 16
        tile = outline[y0:y0 + 128, x0:x0 + 128]
        ys, xs = np.nonzero(tile)
        assert len(ys) > 20
        assert ys.min() >= 4 * 8 - 1 and ys.max() <= 10 * 8 and xs.min() >= 5 * 8 - 1 and xs.max() <= 12 * 8


def test_label_strip_of_an_unknown_shape_still_labels():
    img = Image.new("RGB", (101, 37), "black")
    out = label_strip(img, [0.0, 0.5, 1.0], symbol="a")
    assert out.width >= 101 and out.height > 37


def test_unavailable_hub_model_gives_a_note_not_an_error(monkeypatch):
    from lowdim_app.diffusion import registry
    from lowdim_app.ui import common, models_tab

    monkeypatch.setattr(registry, "_hub_cached", lambda repo: False)
    hub = registry.hub_allow_list()[0]
    labels = dict((v, k) for k, v in common.model_dropdown_choices())
    assert labels[hub].startswith(hub) and "not" in labels[hub][len(hub):]
    assert labels["digits-gen"] == "digits-gen"
    card = models_tab.model_card(hub)
    assert "not available here" in card and f"hf download {hub} --include" in card
    assert common.unavailable_note("digits-gen") == ""
    grid, note = models_tab._samples_stale(hub, Image.new("RGB", (4, 4)))
    assert grid is None and "not available here" in note
    grid, note = models_tab._samples_stale("digits-mem", Image.new("RGB", (4, 4)))
    assert grid is None and "press **Sample**" in note


def test_a_new_image_clears_the_old_directions(tmp_path):
    from lowdim_app.ui import edit_tab

    a = (np.arange(256).reshape(16, 16) % 255).astype(np.uint8)
    path = tmp_path / "image.png"
    Image.fromarray(a).save(path)

    class S:
        image, mask = str(path), ""

    state = {"settings": S(), "search": object()}
    editor = {"background": a, "layers": []}
    same = edit_tab.inputs_changed(editor, state, strip=np.zeros((4, 4)))
    assert all(isinstance(o, dict) for o in same)               # an event that changes nothing keeps everything
    same = edit_tab.inputs_changed(editor, state, strip=np.zeros((4, 4)), made_from=edit_tab.fingerprint(editor))
    assert all(isinstance(o, dict) for o in same)
    layer = np.zeros((16, 16, 4), np.uint8)
    layer[3:5, 3:5] = 255
    painted = {"background": a, "layers": [layer]}
    same = edit_tab.inputs_changed(painted, state, strip=np.zeros((4, 4)), made_from=edit_tab.fingerprint(editor))
    assert all(isinstance(o, dict) for o in same[:5])          # a global search's directions kept (gr.skip)
    assert same[5] is None and "press **Edit**" in same[7]       # the strip cleared, with a note
    assert edit_tab.inputs_changed(painted, state, strip=np.zeros((4, 4)))[5] is None
    new = edit_tab.inputs_changed({"background": 255 - a, "layers": []}, state, strip=None)
    assert new[:3] == (None, None, None) and new[4] is None and "image changed" in new[3]
    assert all(isinstance(o, dict) for o in new[5:])            # no strip to clear


def test_captions_and_modes():
    from lowdim_app.ui import edit_tab, steer_tab

    assert edit_tab._captions([(None, "v1  sigma=1.76")]) == [(None, "v1 · σ 1.76")]
    digit, prompt, files, contrast = steer_tab.mode_changed("prompt")
    assert prompt["visible"] and not digit["visible"] and not files["visible"] and not contrast["visible"]


@pytest.mark.parametrize("case", ["local", "krylov", "exact"])
def test_search_header_says_each_fact_once(case):
    """The Edit header: t as the slider shows it and the timestep, the rank (or why there is none: a local
    edit's masked Jacobian, or a search that found only the top k), and how the search ran -- once each."""
    from types import SimpleNamespace

    from lowdim_app.ui import edit_tab

    found = SimpleNamespace(numerical_rank=221 if case == "exact" else None,
                            spectrum=torch.ones(256) if case != "krylov" else None, singular_values=torch.ones(5),
                            summary={"method": case if case != "local" else "krylov", "status": "converged",
                                     "batched_calls": 8})
    search = SimpleNamespace(settings=SimpleNamespace(t=0.7), t=699, n=256, local=case == "local", search=found,
                             status="converged", stopped_at_budget=False, is_latent=False)
    text = edit_tab._search_text(search)
    assert text.count("t = 0.7 T (timestep 699)") == 1
    if case == "local":
        assert "masked part" in text
    elif case == "krylov":
        assert "top 5" in text
    else:
        assert "numerical rank r = 221 of n = 256" in text and text.count("exact") == 1


def test_the_readme_tour_shows_its_screenshots():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    tour = readme.split("## Tour", 1)[1].split("\n## ", 1)[0]
    images = re.findall(r"!\[[^\]]+\]\((docs/images/[^)]+\.png)\)", tour)
    assert len(images) == 3
    for rel in images:
        assert (root / rel).stat().st_size > 10_000, rel
