"""The Edit tab through its API (gradio_client): find/edit/save/apply, bad input, and the UI-vs-CLI round
trip -- the tab's reproduce line, run as is in a folder holding the files the tab offers, gives the
same strip pixel for pixel (global edit, local masked edit, transfer of a saved direction)."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
EX = "assets/examples/digit_2_test0.png"
EX_OTHER = "assets/examples/digit_7_test6.png"


def _editor(path=EX, layers=()):
    return {"background": handle_file(path), "layers": [handle_file(str(p)) for p in layers], "composite": None}


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _as_shown(cli_strip, amax, count, top, mask=None) -> np.ndarray:
    """The CLI's bare strip.png labelled as the tab shows it and the API returns it (α per column, α = 0
    framed, the rows named, the mask outlined)."""
    from lowdim_app.features.edit import AlphaRange
    from lowdim_app.plots.editing import label_strip

    alphas = AlphaRange.from_raw(amax=amax, count=count).alphas
    return np.asarray(label_strip(Image.open(cli_strip), alphas, rows=(top, "random"), mask=mask).convert("RGB"))


def run_reproduce_line(text: str, files: list[str], folder: Path) -> Path:
    """Copy the offered files into ``folder``, run the printed line there verbatim, return strip.png."""
    line = re.search(r"`(python -m lowdim_app [^`]+)`", text).group(1)
    names = sorted(Path(f).name for f in files)
    named = sorted(w for w in line.split() if w.endswith((".png", ".safetensors")))
    assert names == named, (names, line)        # exactly the files the line names are offered
    for f in files:
        shutil.copyfile(f, folder / Path(f).name)
    env = dict(os.environ, PYTHONPATH=str(REPO), PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(line, shell=True, cwd=folder, env=env, capture_output=True, text=True, timeout=900,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return folder / "edit_out" / "strip.png"


def test_find_edit_save_apply(client):
    _spectrum, v, u, info, _idx = client.predict(_editor(), "digits-gen", 0.7, 4, 50, "", False,
                                                api_name="/find_directions")
    assert "numerical rank r =" in info and len(v) == 4 and len(u) == 4
    _strip, _effect, text, files = client.predict(_editor(), 2, 6, 5, 0, api_name="/edit")
    assert "Mean change along the direction" in text and "--direction 2" in text
    assert [Path(f).name for f in files] == ["image.png"]
    path = client.predict(2, api_name="/save_direction")
    assert path.endswith(".safetensors")
    _, _, text2, files2 = client.predict(_editor(), handle_file(path), "digits-gen", 50, "", 4, 3, 0,
                                         api_name="/apply_direction")
    name = Path(path).name   # the uploaded file keeps its own name: in the line and among the files offered
    assert "saved direction v2" in text2 and f"--load-direction {name}" in text2
    assert sorted(Path(f).name for f in files2) == sorted([name, "image.png"])
    with pytest.raises(AppError, match="computed on digits-gen, not digits-dup"):
        client.predict(_editor(), handle_file(path), "digits-dup", 50, "", 4, 3, 0, api_name="/apply_direction")


@pytest.mark.parametrize("args, message", [
    ((None, "digits-gen", 0.7, 4, 50, "", False), "upload an image"),
    (("EDITOR", "digits-gen", 0.7, 99, 50, "", False), "maximum value 64"),   # the search plan's bound on k
    (("EDITOR", "digits-gen", 0.7, 4, 50, "", True), "paint the region"),
])
def test_find_directions_bad_input(client, args, message):
    args = tuple(_editor() if a == "EDITOR" else a for a in args)
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name="/find_directions")


def test_edit_bad_alpha_range(client):
    client.predict(_editor(), "digits-gen", 0.7, 2, 20, "", False, api_name="/find_directions")
    with pytest.raises(AppError, match="alpha range A must be between"):
        client.predict(_editor(), 1, 1e9, 5, 0, api_name="/edit")
    with pytest.raises(AppError, match="greater than maximum value 2"):   # the slider follows k
        client.predict(_editor(), 3, 4, 5, 0, api_name="/edit")


def test_find_directions_with_one_direction(client):
    """k = 1 used to fail while building the direction slider (minimum 1 = maximum 1)."""
    _, v, u, info, index = client.predict(_editor(), "digits-gen", 0.7, 1, 20, "", False, api_name="/find_directions")
    assert len(v) == 1 and len(u) == 1 and "numerical rank r =" in info
    assert index["value"] == 1 and index["interactive"] is False and index["minimum"] < index["maximum"]
    strip, _, text, _ = client.predict(_editor(), 1, 4, 3, 0, api_name="/edit")
    assert "v1 (jacobian)" in text and "--k 1" in text
    width, height = Image.open(strip).size   # the 3 x 2 tiles of 16 px at upscale 8, with α labels and row names
    assert width > 8 * (3 * 18 + 2) and height > 8 * (2 * 18 + 2)
    with pytest.raises(AppError, match="direction must be between 1 and k = 1"):
        client.predict(_editor(), 2, 4, 3, 0, api_name="/edit")


def test_global_edit_reproduces_in_the_cli(client, tmp_path):
    client.predict(_editor(), "digits-gen", 0.7, 3, 30, "", False, api_name="/find_directions")
    strip, _, text, files = client.predict(_editor(), 2, 4, 3, 5, api_name="/edit")
    assert "--direction 2" in text and "--seed 5" in text and "--steps 30" in text
    cli_strip = run_reproduce_line(text, files, tmp_path)
    assert np.array_equal(_pixels(strip), _as_shown(cli_strip, 4, 3, "along v2"))


def test_local_edit_reproduces_in_the_cli(client, tmp_path):
    """A painted mask (top half) -> the tab saves mask.png, the line passes --mask mask.png."""
    size = Image.open(REPO / EX).size
    layer = np.zeros((size[1], size[0], 4), dtype=np.uint8)
    layer[: size[1] // 2, :, :] = (255, 0, 0, 255)
    Image.fromarray(layer, mode="RGBA").save(tmp_path / "layer.png")
    editor = _editor(layers=[tmp_path / "layer.png"])
    _, _, _, info, _ = client.predict(editor, "digits-gen", 0.3, 2, 30, "", True, api_name="/find_directions")
    assert "Local (masked) directions" in info
    strip, _, text, files = client.predict(editor, 1, 2, 3, 0, api_name="/edit")
    assert "--mask mask.png" in text and "--t 0.3" in text
    mask = _pixels(next(f for f in files if f.endswith("mask.png")))[..., 0]
    assert mask[: size[1] // 2].min() == 255 and mask[size[1] // 2:].max() == 0
    (tmp_path / "run").mkdir()
    cli_strip = run_reproduce_line(text, files, tmp_path / "run")
    assert np.array_equal(_pixels(strip), _as_shown(cli_strip, 2, 3, "along v1", mask=mask > 0))


def test_transfer_reproduces_in_the_cli(client, tmp_path):
    client.predict(_editor(), "digits-gen", 0.7, 2, 30, "", False, api_name="/find_directions")
    saved = client.predict(1, api_name="/save_direction")
    strip, _, text, files = client.predict(_editor(EX_OTHER), handle_file(saved), "digits-gen", 30, "", 5, 3, 2,
                                           api_name="/apply_direction")
    assert f"--load-direction {Path(saved).name}" in text and "saved direction v1" in text
    cli_strip = run_reproduce_line(text, files, tmp_path)
    assert np.array_equal(_pixels(strip), _as_shown(cli_strip, 5, 3, "saved direction"))
