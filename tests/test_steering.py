"""Representation steering: a = 0 is the plain sample, the concept moves samples, CFG half only, SD path, CLI."""
import json

import pytest
import torch

from lowdim_app.cli import main
from lowdim_app.errors import UserError
from lowdim_app.methods import steering as st


@pytest.fixture(scope="module")
def four_vector(digits_gen):
    concept, base = st.digit_concept(4, 100)
    return st.steering_vector(digits_gen, concept, kind="spatial", baseline=base)


def test_strength_zero_reproduces_the_plain_sample(digits_gen, four_vector):
    x = digits_gen.randn(1, 5)
    steered = st.steered_samples(digits_gen, x, four_vector, [0.0, 1.0], steps=20, window=10)
    plain = digits_gen.decode(digits_gen.ddim_sample(x, 999, 20))
    assert torch.allclose(steered[0], plain[0], atol=1e-5)
    assert (steered[1] - steered[0]).abs().max() > 0.1


def test_spatial_vector_moves_samples_to_the_concept(digits_gen, four_vector):
    """Measured on digits-gen: every seed in 0..7 whose plain sample is not a 4 is classified as a 4 at a = 1.5."""
    moved = []
    for seed in range(8):
        imgs = st.steered_samples(digits_gen, digits_gen.randn(1, seed), four_vector, [0.0, 1.5])
        p = st.concept_strength_digits(imgs, 4)
        if p[0] < 0.5:
            moved.append(p[1])
    assert len(moved) >= 4 and min(moved) > 0.9, moved


def test_channel_vector_shape_and_window(digits_gen):
    concept, base = st.digit_concept(1, 20)
    sv = st.steering_vector(digits_gen, concept, ["mid_block"], kind="channel", baseline=base)
    v = sv.vectors["mid_block"]
    assert v.shape[2:] == (1, 1) and v.shape[1] == digits_gen.unet.get_submodule("mid_block").resnets[-1].out_channels
    x = digits_gen.randn(1, 0)
    off = st.steered_samples(digits_gen, x, sv, [0.0, 50.0], steps=10, window=0)  # window 0: never steered
    assert torch.allclose(off[0], off[1], atol=1e-6)


def test_text_model_steering_conditional_half_only(tiny_sd):
    cond = tiny_sd.encode_prompt("a cat", guidance_scale=3.5)
    concept = tiny_sd.generate(2, seed=0, steps=2, cond=tiny_sd.encode_prompt("van gogh style"))
    sv = st.steering_vector(tiny_sd, concept, cond=tiny_sd.encode_prompt("van gogh style"))
    assert set(sv.vectors) == set(st.SD_LAYERS) and all(v.shape[2:] == (1, 1) for v in sv.vectors.values())
    imgs = st.steered_samples(tiny_sd, tiny_sd.randn(1, 1), sv, [0.0, 5.0], steps=4, window=2, cond=cond)
    assert imgs.shape == (2, 3, 128, 128) and (imgs[1] - imgs[0]).abs().max() > 0
    # uncond half untouched: with guidance 1 (no uncond branch) vs. the same steering gives a different result
    with pytest.raises(UserError):
        st.steered_samples(tiny_sd, tiny_sd.randn(1, 1), sv, [1e6], cond=cond)


def test_steer_cli_with_contrast(tmp_path):
    out = tmp_path / "s"
    assert main(["steer", "--model", "digits-dup", "--concept", "digit:4", "--source", "seed:1",
                 "--strengths", "0,1.5", "--contrast", "--out", str(out)]) == 0
    rep = json.loads((out / "steer.json").read_text())
    assert rep["concept_strength"]["values"][0] < 0.5 < rep["concept_strength"]["values"][1]
    assert set(rep["contrast"]) == {"memorized", "generalized"} and (out / "contrast.png").is_file()
    assert main(["steer", "--model", "digits-gen", "--concept", "prompt:a cat", "--out", str(out)]) == 2
