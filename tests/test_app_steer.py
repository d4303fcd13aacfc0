"""The Steer tab through its API and in the real browser. Its reproduce line, run as is in a shell in a
folder holding the files the tab offered, gives the same strip pixel for pixel and the same numbers."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from tests.conftest import run_reproduce_line

EXAMPLES = sorted(Path("assets/examples").glob("digit_*.png"))


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _as_shown(cli_strip, numbers: dict, rows=()) -> np.ndarray:
    """The CLI's bare strip labelled as the tab shows it and the API returns it (a per column, a = 0 framed)."""
    from lowdim_app.plots.editing import label_strip

    return np.asarray(label_strip(Image.open(cli_strip), numbers["strengths"], symbol="a", rows=rows))


def _run_line_where_the_files_are(info: str, files: list[str], cwd: Path) -> dict:
    for f in files:
        shutil.copy(f, cwd / Path(f).name)
    run_reproduce_line(info, cwd)
    return json.loads((cwd / "steer_out" / "steer.json").read_text())


def _same_numbers(ui: dict, cli: dict) -> None:
    assert ui["settings"] == cli["settings"] and ui["command"] == cli["command"] == "steer"
    for key in ("model", "layers", "kind", "t_tilde", "steps", "window", "strengths", "concept", "source"):
        assert ui[key] == cli[key], key
    assert set(ui["vector_norms"]) == set(cli["vector_norms"])
    for layer, norm in ui["vector_norms"].items():
        assert cli["vector_norms"][layer] == pytest.approx(norm, rel=1e-6), layer
    assert ui.get("concept_strength") == cli.get("concept_strength")
    assert ui.get("contrast") == cli.get("contrast")


def test_digit_concept_with_contrast_round_trip(client, tmp_path):
    strip, curve, contrast, info, files, vector = client.predict(
        "digits-dup", "digit class", 4, "", None, 2, None, 1.5, 3, "recipe", "", True, 3, api_name="/steer")
    assert strip and curve and contrast and "spatial vector" in info
    assert "--concept digit:4" in info and "--source seed:2" in info and "--contrast" in info and "--seed 3" in info
    assert "--strengths 0:1.5:3" in info and "--concept-n 100" in info   # every setting is spelled out
    assert [Path(f).name for f in files] == ["steer.json"]
    ui = json.loads(Path(files[-1]).read_text())
    cli = _run_line_where_the_files_are(info, files, tmp_path)
    assert np.array_equal(_as_shown(tmp_path / "steer_out" / "strip.png", cli), _pixels(strip))
    assert np.array_equal(_as_shown(tmp_path / "steer_out" / "contrast.png", cli, ("memorized", "generalized")),
                          _pixels(contrast))
    _same_numbers(ui, cli)
    values = cli["concept_strength"]["values"]
    assert values[0] < 0.5 < values[-1] and set(cli["contrast"]) == {"memorized", "generalized"}


def test_uploaded_concept_and_source_image_round_trip(client, tmp_path):
    """Uploads travel as files the settings carry, named as the user's own (a source named like a concept
    image gets a suffix); the tab offers them as model-size PNGs under those names, and the line, run where
    they are, reads back exactly those pixels."""
    strip, curve, contrast, info, files, vector = client.predict(
        "digits-gen", "uploaded images", 4, "", [handle_file(str(p)) for p in EXAMPLES], 1,
        handle_file("assets/examples/digit_3_test2.png"), 2.0, 3, "spatial", "up_blocks.0.resnets.0, mid_block", False,
        0, api_name="/steer")
    names = [Path(f).name for f in files]
    assert names == [p.name for p in EXAMPLES] + ["digit_3_test2-2.png", "steer.json"]
    assert "--source digit_3_test2-2.png" in info and "--kind spatial" in info and "--layers up_blocks.0.resnets.0,mid_block" in info
    assert all(_pixels(f).shape == (16, 16) for f in files if f.endswith(".png"))
    ui = json.loads(Path(files[-1]).read_text())
    cli = _run_line_where_the_files_are(info, files, tmp_path)
    assert np.array_equal(_as_shown(tmp_path / "steer_out" / "strip.png", cli), _pixels(strip))
    _same_numbers(ui, cli)
    assert curve is None and contrast is None and "concept_strength" not in cli


def test_steer_an_uploaded_source_image(client):
    """An uploaded image is DDIM-inverted, then steered; the tab offers it under its own name, which the line
    names."""
    strip, curve, _, info, files, _ = client.predict("digits-dup", "digit class", 7, "", None, 1,
                                                  handle_file("assets/examples/digit_3_test2.png"), 1.5, 3, "recipe",
                                                  "", False, 0, api_name="/steer")
    assert strip and curve and "--source digit_3_test2.png" in info
    assert [Path(f).name for f in files] == ["digit_3_test2.png", "steer.json"]


def test_saved_vector_round_trip(client, tmp_path):
    """The vector a run offers, uploaded again, replaces the concept set (the digit box says 7, the file is of
    digit 4): the same strip; the reproduce line names --vector steering_vector.safetensors and no concept, the
    tab offers that file, and the line run where the files are gives the strip pixel for pixel."""
    strip, curve, _, info, files, vector = client.predict(
        "digits-dup", "digit class", 4, "", None, 2, None, 1.5, 3, "recipe", "", False, 3, None, api_name="/steer")
    assert Path(vector).name == "steering_vector.safetensors" and "--concept digit:4" in info
    strip2, curve2, _, info2, files2, vector2 = client.predict(
        "digits-dup", "digit class", 7, "", None, 2, None, 1.5, 3, "recipe", "", False, 3, handle_file(vector),
        api_name="/steer")
    assert "--vector steering_vector.safetensors" in info2 and "--concept " not in info2
    assert [Path(f).name for f in files2] == ["steering_vector.safetensors", "steer.json"]
    assert np.array_equal(_pixels(strip2), _pixels(strip))
    ui = json.loads(Path(files2[-1]).read_text())
    assert ui["concept"] == "digit:4" and ui["vector"]["from"] == "file"
    assert ui["concept_strength"] == json.loads(Path(files[-1]).read_text())["concept_strength"]
    cli = _run_line_where_the_files_are(info2, files2, tmp_path)
    assert np.array_equal(_as_shown(tmp_path / "steer_out" / "strip.png", cli), _pixels(strip2))
    _same_numbers(ui, cli)


def test_text_model_saved_vector_round_trip(tiny_sd, tiny_sd_dir, tmp_path, monkeypatch, one_thread):
    """A text model (the tiny SD): a saved vector uploaded to the tab steers the source; the reproduce line with
    --vector, run where the files are, gives the strip pixel for pixel (both sides on one thread: float32
    convolutions may round differently with another thread count)."""
    from lowdim_app.config import Runtime
    from lowdim_app.features.steer import FEATURE, SteerSettings
    from lowdim_app.ui.steer_tab import steer
    from tests.conftest import final_output

    monkeypatch.setenv("LOWDIM_CLIP", "off")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    computed = FEATURE.run(SteerSettings(model=str(tiny_sd_dir), concept="prompt:a red ball", concept_n=2,
                                         concept_steps=2, steps=2, window=1, strengths=[0.0]),
                           model=tiny_sd, runtime=Runtime(clip="off"))
    vector = computed.save_vector(tmp_path / "upload" / "red.safetensors")
    strip, _, _, info, files, offered = final_output(steer(str(tiny_sd_dir), "prompt", 0, "", None, 1, None, 4.0, 2,
                                                           "recipe", "", False, 0, str(vector)))
    assert "--vector red.safetensors" in info and "--concept" not in info   # the upload's own name
    assert [Path(f).name for f in files] == ["red.safetensors", "steer.json"]
    assert json.loads(Path(files[-1]).read_text())["concept"] == "prompt:a red ball"
    cli = _run_line_where_the_files_are(info, files, tmp_path)
    assert np.array_equal(_as_shown(tmp_path / "steer_out" / "strip.png", cli), np.asarray(strip))


@pytest.mark.parametrize("args, message", [
    (("digits-dup", "digit class", 12, "", None, 1, None, 1.5, 4, "recipe", "", False, 0), "digit class must be between"),
    (("digits-dup", "prompt", 4, "a cat", None, 1, None, 1.5, 4, "recipe", "", False, 0), "need a text model"),
    (("digits-dup", "digit class", 4, "", None, 1, None, 1e9, 4, "recipe", "", False, 0), "a_max must be between"),
    (("digits-dup", "uploaded images", 4, "", None, 1, None, 1.5, 4, "recipe", "", False, 0), "upload concept images"),
    (("digits-dup", "digit class", 4, "", None, 1, None, 1.5, 4, "recipe", "", False, -1), "seed must be between"),
])
def test_steer_bad_input(client, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name="/steer")


def test_steer_refuses_a_bad_vector_file(client, tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a vector")
    with pytest.raises(AppError, match="not a LowDim Lab steering vector file"):
        client.predict("digits-dup", "digit class", 4, "", None, 1, None, 1.5, 4, "recipe", "", False, 0,
                       handle_file(str(junk)), api_name="/steer")


def test_steer_tab_in_browser(page, artifacts):
    page.get_by_role("tab", name="Steer").click()
    page.locator("#steer-btn").click()
    page.wait_for_function("document.querySelector('#steer-info')?.innerText.includes('Reproduce')", timeout=180_000)
    page.locator("#steer-contrast-img img").wait_for(state="visible")
    assert "--contrast" in page.locator("#steer-info").inner_text()
    page.locator("#steer-files-out").get_by_text("steer.json").wait_for(state="visible")
    page.screenshot(path=str(artifacts / "steer_tab.png"), full_page=True)
