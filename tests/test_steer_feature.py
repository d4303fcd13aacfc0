"""The steer feature: its cost is the U-Net work it does, its reproduce line parses back to the same
settings, images it was handed read back from the files it saves, and its result renders itself."""
import json
import shlex
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from lowdim_app.config import Runtime
from lowdim_app.errors import UserError
from lowdim_app.features.base import Cancelled
from lowdim_app.features.steer import FEATURE, SOURCE_FILE, SteerResult, SteerSettings, concept_file_names

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def fresh_concept_cache():
    """Each test computes its vectors (the process-wide concept cache would otherwise carry them over)."""
    from lowdim_app.methods.steering import CONCEPT_CACHE

    CONCEPT_CACHE.clear()
    yield
    CONCEPT_CACHE.clear()
EXAMPLES = ["assets/examples/digit_0_test3.png", "assets/examples/digit_2_test0.png", "assets/examples/digit_7_test6.png"]
FAST = dict(steps=4, window=2, strengths=[0.0, 1.0])


@contextmanager
def unet_evaluations(model):
    """Counts U-Net evaluations, one per sample in each batch the U-Net is called with."""
    count = {"n": 0}
    h = model.unet.register_forward_pre_hook(lambda _m, args: count.__setitem__("n", count["n"] + len(args[0])))
    try:
        yield count
    finally:
        h.remove()


@pytest.mark.parametrize("raw", [
    dict(concept="digit:4", source="seed:3", **FAST),                        # class images + baseline, steering
    dict(concept=EXAMPLES, source=EXAMPLES[1], **FAST),                       # files, DDIM inversion of the source
])
def test_cost_is_the_number_of_unet_evaluations(digits_gen, raw):
    s = SteerSettings(model="digits-gen", **raw)
    cost = FEATURE.cost(s)                                   # the estimate before the run (the cache is empty)
    with unet_evaluations(digits_gen) as count:
        FEATURE.run(s, model=digits_gen)
    assert cost.forward == count["n"] > 0


@pytest.mark.parametrize("concept, extra, expected", [
    ("prompt:a red ball", dict(concept_steps=40), 1 * (40 * 2 + 1) + 2 * 2 * 2),  # generate with CFG (40 steps), features, steer
    ("prompt:a red ball", {}, 1 * (2 * 2 + 1) + 2 * 2 * 2),          # auto: concept images at min(steps, 20) = 2 steps
    (concept_file_names(1), {}, 1 + 2 * 2 * 2),                     # features of the file, steer with CFG
])
def test_cost_counts_cfg_and_prompt_concepts_on_a_text_model(tiny_sd, concept, extra, expected):
    s = SteerSettings(model="a-text-model", concept=concept, concept_n=1, steps=2, window=1, strengths=[0.0, 3.0],
                      **extra)
    images = None if s.concept_prompt else torch.zeros(1, *tiny_sd.image_shape)
    cost = FEATURE.cost(s)
    with unet_evaluations(tiny_sd) as count:
        res = FEATURE.run(s, model=tiny_sd, runtime=Runtime(clip="off"), concept_images=images)
    assert cost.forward == count["n"] == expected
    assert res.cfg == 3.5 and "CFG 3.5 on the conditional half only" in res.summary()


def test_concept_images_use_the_request_guidance(tiny_sd):
    """guidance 1: no CFG anywhere, concept images included (1 x 2 steps + 1 feature pass, then 2 x 2 steering)."""
    s = SteerSettings(model="a-text-model", concept="prompt:a red ball", concept_n=1, steps=2, window=1,
                      strengths=[0.0, 3.0], guidance=1.0)
    cost = FEATURE.cost(s)
    with unet_evaluations(tiny_sd) as count:
        res = FEATURE.run(s, model=tiny_sd, runtime=Runtime(clip="off"))
    assert cost.forward == count["n"] == 1 * (2 + 1) + 2 * 2
    assert res.cfg is None and res.vector.guidance == 1.0 and res.vector.concept_steps == 2


@pytest.mark.parametrize("stop_after", [1, 1540])   # inside the concept features; inside steering
def test_a_cancelled_run_stops_within_one_batch(digits_gen, stop_after):
    s = SteerSettings(model="digits-gen", concept="digit:4", **FAST)
    cost = FEATURE.cost(s)
    with unet_evaluations(digits_gen) as count:
        with pytest.raises(Cancelled):
            FEATURE.run(s, model=digits_gen, should_stop=lambda: count["n"] >= stop_after)
    assert stop_after <= count["n"] < min(stop_after + 32, cost.forward)   # one batch (32) or one step


def test_reproduce_line_parses_back_to_the_same_settings():
    from lowdim_app.cli import build_parser
    from lowdim_app.features.settings import from_args

    s = SteerSettings(model="digits-dup", concept=("my concept/a 1.png", "b.png"), concept_n=7, source="seed:5",
                      strengths=[-1.5, 0.25, 2.0], kind="channel", layers="mid_block,up_blocks.0.resnets.1",
                      t_tilde=20, steps=30, window=12, prompt="it's \"quoted\"", guidance=2.5, contrast=True, seed=9)
    argv = shlex.split(s.to_cli())
    assert argv[:3] == ["python", "-m", "lowdim_app"]
    assert from_args(SteerSettings, build_parser().parse_args(argv[3:])) == s
    dflt = SteerSettings(concept="digit:4")
    assert dflt.to_cli() == ("python -m lowdim_app steer --model digits-gen --concept digit:4 --concept-n 100 "
                             "--source seed:0 --strengths 0:8:5 --no-contrast --seed 0")


@pytest.mark.parametrize("raw, message", [
    (dict(), "give a concept"),
    (dict(concept="digit:12"), "digit class must be between 0 and 9"),
    (dict(concept="digit:four"), "digit:K needs a whole number"),
    (dict(concept=("digit:4", "x.png")), "concept is one value"),
    (dict(concept=("x.png", "prompt:a cat")), "not mixed with files"),
    (dict(concept="prompt:  "), "enter the concept prompt"),
    (dict(concept="digit:4", source="seed:x"), "source seed:N needs a whole number"),
    (dict(concept="digit:4", steps=10, window=11), "window must be at most steps"),
])
def test_cross_field_rules(raw, message):
    with pytest.raises(UserError, match=message):
        SteerSettings(**raw)


def test_inputs_must_agree_with_the_settings(digits_gen, tiny_sd):
    img = torch.zeros(1, 1, 16, 16)
    cases = [
        (dict(concept="digit:4"), dict(concept_images=[img]), "concept is digit:K"),
        (dict(concept=concept_file_names(2)), dict(concept_images=[img]), "1 concept images for 2"),
        (dict(concept="digit:4", source="seed:1"), dict(source_image=img), "source is seed:1"),
        (dict(concept=concept_file_names(1)), dict(concept_images=[torch.zeros(1, 3, 16, 16)]), "must be 1 x 1 x 16 x 16"),
        (dict(concept="no/such/folder"), {}, "not digit:K, prompt:TEXT, a folder or an image file"),
        (dict(concept="digit:4", source="missing.png"), {}, "neither seed:N nor an image file"),
        (dict(concept="prompt:a cat"), {}, "need a text model"),
        (dict(concept="digit:4", prompt="a cat"), {}, "unconditional"),
    ]
    for raw, inputs, message in cases:
        with pytest.raises(UserError, match=message):
            FEATURE.run(SteerSettings(model="digits-gen", **raw, **FAST), model=digits_gen, **inputs)
    with pytest.raises(UserError, match="built-in digit models"):
        FEATURE.run(SteerSettings(model="tiny", concept="digit:4", **FAST), model=tiny_sd)


def test_images_handed_in_read_back_from_the_files_saved(digits_gen, tmp_path, monkeypatch):
    """The UI hands uploads in as data; write_inputs saves the model-size pixels under the names the
    settings give, and a run from those files alone gives the same samples and vector."""
    from PIL import Image

    s = SteerSettings(model="digits-gen", concept=concept_file_names(len(EXAMPLES)), source=SOURCE_FILE, **FAST)
    source = np.asarray(Image.open(EXAMPLES[1]).convert("RGB"))      # what gr.Image(type="numpy") hands over
    handed = FEATURE.run(s, model=digits_gen, concept_images=EXAMPLES, source_image=source)
    paths = handed.write_inputs(tmp_path)
    assert [p.name for p in paths] == [*concept_file_names(3), SOURCE_FILE]
    assert all(Image.open(p).size == (16, 16) for p in paths)
    monkeypatch.chdir(tmp_path)
    from_files = FEATURE.run(s, model=digits_gen)
    assert torch.equal(from_files.concept_images, handed.concept_images)
    assert torch.equal(from_files.source_pixels, handed.source_pixels)
    assert torch.equal(from_files.samples, handed.samples) and from_files.vector_norms == handed.vector_norms


def test_result_renders_its_numbers_table_figure_and_strips():
    s = SteerSettings(concept="digit:4", source="seed:1", strengths=[0.0, 0.5, 1.0], contrast=True)
    samples = torch.linspace(-1, 1, 3 * 256).view(3, 1, 16, 16)
    res = SteerResult(settings=s, model_id="digits-dup", layers=["mid_block"], kind="spatial", t_tilde=10, steps=40,
                      window=20, n_concept=100, vector_norms={"mid_block": 2.0}, samples=samples,
                      contrast={"memorized": (7, -samples), "generalized": (0, samples)}, upscale=2,
                      curves={"this source": np.array([0.1, 0.55555, 0.9]), "memorized sample (#7)": np.zeros(3),
                              "generalized sample (#0)": np.array([0.2, 0.6, 1.0])},
                      measure="classifier probability of digit 4", ylabel="P(digit 4)")
    j = json.loads(json.dumps(res.to_json()))
    assert set(j) >= {"model", "layers", "kind", "t_tilde", "steps", "window", "strengths", "vector_norms", "concept",
                      "source", "concept_strength", "contrast", "command", "settings"}
    assert j["concept_strength"]["values"] == [0.1, 0.5556, 0.9] and j["concept"] == "digit:4"
    assert j["contrast"] == {"memorized": {"sample_index": 7, "values": [0.0, 0.0, 0.0]},
                             "generalized": {"sample_index": 0, "values": [0.2, 0.6, 1.0]}}
    rows = [line.split(",") for line in res.to_csv().strip().splitlines()]
    assert rows[0] == ["a", "this source", "memorized sample (#7)", "generalized sample (#0)"]
    assert [float(r[0]) for r in rows[1:]] == [0.0, 0.5, 1.0] and float(rows[2][1]) == pytest.approx(0.55555)
    lines = res.figure().axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == rows[0][1:]
    assert np.allclose(lines[2].get_ydata(), [0.2, 0.6, 1.0]) and np.allclose(lines[2].get_xdata(), [0, 0.5, 1])
    imgs = res.images()
    assert imgs["strip"].size == (2 * (3 * 18 + 2), 2 * 20) and imgs["contrast"].size == (2 * (3 * 18 + 2), 2 * 38)
    top_left = np.asarray(imgs["contrast"])[4:6, 4:6]                   # first memorized tile: -samples[0] = +1
    assert (top_left == 255).all() and np.asarray(imgs["strip"])[4:6, 4:6].max() == 0
