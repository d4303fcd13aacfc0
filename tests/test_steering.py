"""Representation steering: a = 0 is the plain sample, the concept moves samples, CFG half only, SD path, CLI."""
import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from lowdim_app.cli import main
from lowdim_app.diffusion.hooks import capture, get_module
from lowdim_app.errors import UserError
from lowdim_app.methods import steering as st

pytestmark = pytest.mark.usefixtures("one_thread")


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


def _record_after_steering(monkeypatch, outputs: dict):
    """Make steered_samples' add_vector also record each hooked module's output *after* the addition."""
    real = st.add_vector

    @contextmanager
    def add_then_record(root, vectors, **kw):
        with real(root, vectors, **kw) as handle:
            hooks = [get_module(root, k).register_forward_hook(lambda _m, _i, out, k=k: outputs[k].append(out.detach()))
                     for k in vectors]
            try:
                yield handle
            finally:
                for h in hooks:
                    h.remove()

    monkeypatch.setattr(st, "add_vector", add_then_record)


def test_text_model_steering_conditional_half_only(tiny_sd, monkeypatch):
    """With CFG the U-Net batch is [uncond; cond]: inside the window every hooked layer's conditional half
    gets exactly a * v and the unconditional half is untouched (Zhang et al. 2025, App. B.3); outside
    the window nothing changes; without CFG the whole batch gets a * v."""
    cbar = tiny_sd.encode_prompt("van gogh style")
    concept = tiny_sd.generate(2, seed=0, steps=2, cond=cbar)
    sv = st.steering_vector(tiny_sd, concept, cond=cbar)
    assert set(sv.vectors) == set(st.SD_LAYERS) and all(v.shape[2:] == (1, 1) for v in sv.vectors.values())
    strengths = [0.0, 5.0, -2.0]
    a = torch.tensor(strengths).view(3, 1, 1, 1)
    for cond, halves in ((tiny_sd.encode_prompt("a cat", guidance_scale=3.5), 2), (tiny_sd.encode_prompt("a cat"), 1)):
        after = {k: [] for k in sv.vectors}
        _record_after_steering(monkeypatch, after)
        with capture(tiny_sd.unet, list(sv.vectors)) as before:
            imgs = st.steered_samples(tiny_sd, tiny_sd.randn(1, 1), sv, strengths, steps=4, window=2, cond=cond)
        assert imgs.shape == (3, 3, 128, 128) and (imgs[1] - imgs[0]).abs().max() > 0
        for k, v in sv.vectors.items():
            assert v.abs().max() > 0
            pre, post = before.outputs[k], after[k]
            assert len(pre) == len(post) == 4 and all(x.shape[0] == 3 * halves for x in pre)
            for step, (x, y) in enumerate(zip(pre, post)):
                if step < 2:
                    assert torch.equal(x, y), (k, step)                      # before the window
                    continue
                if halves == 2:
                    assert torch.equal(y[:3], x[:3]), (k, step)              # unconditional half untouched
                tol = 1e-6 * (1 + float(x.abs().max()) + float((a * v).abs().max()))  # float32 rounding of x + a v
                assert float((y[-3:] - x[-3:] - a * v).abs().max()) <= tol, (k, step)  # (conditional) batch + a v
    with pytest.raises(UserError):
        st.steered_samples(tiny_sd, tiny_sd.randn(1, 1), sv, [1e6], cond=tiny_sd.encode_prompt("a cat", guidance_scale=3.5))


def test_steer_cli_with_contrast(tmp_path):
    out = tmp_path / "s"
    assert main(["steer", "--model", "digits-dup", "--concept", "digit:4", "--source", "seed:1",
                 "--strengths", "0,1.5", "--contrast", "--out", str(out)]) == 0
    rep = json.loads((out / "steer.json").read_text())
    assert rep["concept_strength"]["values"][0] < 0.5 < rep["concept_strength"]["values"][1]
    assert set(rep["contrast"]) == {"memorized", "generalized"} and (out / "contrast.png").is_file()
    assert {k: v["model"] for k, v in rep["contrast"].items()} == st.CONTRAST_MODELS    # Fig. 8's pair, not digits-dup
    assert main(["steer", "--model", "digits-gen", "--concept", "prompt:a cat", "--out", str(out)]) == 2


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    from lowdim_app.diffusion.tiny import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("clip") / "clip")


def test_clip_similarity_is_the_cosine_of_projected_embeddings(tiny_clip_dir):
    from lowdim_app.data.images import to_pil
    from lowdim_app.methods.clip_score import clip_similarity, load_clip

    imgs = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    imgs[2] = imgs[0]
    sims = clip_similarity(imgs, "a cat", str(tiny_clip_dir))
    sc = load_clip(str(tiny_clip_dir))
    with torch.no_grad():
        pv = sc.processor.image_processor(to_pil(imgs), return_tensors="pt").pixel_values
        ids = sc.processor.tokenizer(["a cat"], return_tensors="pt", padding=True).input_ids
        fi, ft = sc.model.get_image_features(pixel_values=pv), sc.model.get_text_features(input_ids=ids)
        fi = fi if torch.is_tensor(fi) else fi.pooler_output
        ft = ft if torch.is_tensor(ft) else ft.pooler_output
    manual = torch.nn.functional.cosine_similarity(fi, ft.expand_as(fi)).numpy()
    assert sims.shape == (3,) and abs(sims - manual).max() < 1e-5 and abs(sims).max() <= 1
    assert sims[0] == pytest.approx(sims[2], abs=1e-6) and sims[0] != pytest.approx(sims[1], abs=1e-6)
    assert clip_similarity(imgs, "a cat", "off") is None and load_clip("") is None
    assert clip_similarity(imgs, "a cat", str(tiny_clip_dir / "missing")) is None


def test_text_model_steer_draws_the_clip_curve(tiny_sd_dir, tiny_clip_dir, tmp_path, monkeypatch):
    """Text models: the concept-strength curve is CLIP similarity to the concept prompt (CLI and tab)."""
    from lowdim_app.features.steer import PROMPT_CONCEPT_N
    from lowdim_app.ui.steer_tab import steer
    from tests.conftest import final_output

    monkeypatch.setenv("LOWDIM_CLIP", str(tiny_clip_dir))
    out = tmp_path / "s"
    assert main(["steer", "--model", str(tiny_sd_dir), "--concept", "prompt:a red ball", "--concept-n", "2",
                 "--strengths", "0,4,8", "--steps", "4", "--window", "2", "--out", str(out)]) == 0
    rep = json.loads((out / "steer.json").read_text())
    assert "CLIP cosine similarity" in rep["concept_strength"]["measure"]
    assert len(rep["concept_strength"]["values"]) == 3
    strip, curve, contrast, info, files, vector = final_output(steer(str(tiny_sd_dir), "prompt", 0, "a red ball", None, 1,
                                                                     None, 4.0, 2, "recipe", "", False))
    assert strip is not None and curve is not None and contrast is None and f"--concept-n {PROMPT_CONCEPT_N}" in info
    assert "CLIP cosine similarity" in json.loads(Path(files[-1]).read_text())["concept_strength"]["measure"]
    monkeypatch.setenv("LOWDIM_CLIP", "off")
    assert main(["steer", "--model", str(tiny_sd_dir), "--concept", "prompt:a red ball", "--concept-n", "2",
                 "--strengths", "0,4", "--steps", "4", "--window", "2", "--out", str(out)]) == 0
    assert "concept_strength" not in json.loads((out / "steer.json").read_text())


def test_inverted_source_at_strength_zero_reconstructs_the_image(digits_gen, four_vector):
    """Steering an uploaded image: DDIM-invert down to where steering starts, then steer; a = 0 is the plain
    DDIM reconstruction. On digits-gen every example digit comes back (RMS <= 0.12); inverting all the way to
    T, as before, turned digit_3_test2 into another digit (RMS 0.47), which this test catches."""
    from lowdim_app.data.images import load_image

    files = sorted(Path("assets/examples").glob("digit_*.png"))
    img = torch.cat([load_image(str(f), (16, 16), channels=1) for f in files])
    x, t_from, steps, window = st.invert_source(digits_gen, digits_gen.encode(img), 999, 40, 20)
    assert (t_from, steps, window) == (digits_gen.timesteps(999, 40)[20], 20, 20)
    plain = digits_gen.decode(digits_gen.ddim_sample(x, t_from, steps))
    errors = (plain - img).pow(2).flatten(1).mean(1).sqrt()
    assert len(files) == 5 and float(errors.max()) < 0.15, errors
    out = st.steered_samples(digits_gen, x[:1], four_vector, [0.0, 1.5], t_from, steps, window)
    assert torch.allclose(out[0], plain[0], atol=1e-5)
    assert float(((out[1] - out[0]) ** 2).mean().sqrt()) > 0.1


def test_curve_measures_closed_forms():
    """A ramp is spread over the whole grid, a step lies in one interval, a dip is not monotone."""
    a = np.linspace(0.0, 2.0, 21)

    def images(y):
        return torch.from_numpy(np.asarray(y, dtype=float)).view(-1, 1, 1, 1) * torch.ones(1, 1, 4, 4)

    ramp = st.curve_measures(a, a / 2, images(a))
    assert ramp["a_cross"] == pytest.approx(1.0) and ramp["width"] == pytest.approx(1.6)
    assert ramp["jump_share"] == pytest.approx(0.05) and ramp["pixel_jump_share"] == pytest.approx(0.05)
    assert ramp["monotone"] == pytest.approx(1.0)
    step = st.curve_measures(a, (a > 0.95).astype(float), images(a > 0.95))
    assert step["jump_share"] == 1.0 and step["pixel_jump_share"] == 1.0
    assert step["width"] == pytest.approx(0.08) and step["a_cross"] == pytest.approx(0.95)
    dip = st.curve_measures(a, np.exp(-((a - 1.0) ** 2) * 8))
    assert dip["a_cross"] is not None and dip["monotone"] < 0.5 and dip["pixel_jump_share"] is None
    assert st.curve_measures(a, np.zeros_like(a))["jump_share"] is None


def test_memorized_samples_flip_generalized_ones_move_smoothly():
    """Zhang et al. 2025, §4.2, Fig. 8 on the built-in contrast pair (bench/steer_contrast.py, 20 samples each):
    steered toward a 4 with the app's recipe, digits-mem's memorized samples jump from their stored digit to
    another in one strength interval, digits-gen's generalized samples move gradually, in pixels (classifier-free)
    and in P(4)."""
    from lowdim_app.data.classifier import predict_proba
    from lowdim_app.data.digits import load_digits_split
    from lowdim_app.data.neighbours import COPY_THRESHOLD, NOVEL_THRESHOLD
    from lowdim_app.diffusion import load_model
    from lowdim_app.metrics import nearest

    a = [i / 16 for i in range(25)]                                      # 0 .. 1.5
    concept, base = st.digit_concept(4, 100)
    measured = {}
    for label, model_id in st.CONTRAST_MODELS.items():
        model = load_model(model_id, "cpu")
        sv = st.steering_vector(model, concept, kind="spatial", baseline=base)
        noise = model.randn(16, 0)
        samples = model.decode(model.ddim_sample(noise, 999, 40))
        d = nearest(samples, load_digits_split().train_images[model.card["train_index"]]).nearest.numpy()
        ok = d < COPY_THRESHOLD if label == "memorized" else d > NOVEL_THRESHOLD
        ok &= predict_proba(samples).argmax(1) != 4
        rows = []
        for j in np.nonzero(ok)[0][:3]:
            ims = torch.cat([st.steered_samples(model, noise[j:j + 1], sv, a[i:i + 16]) for i in (0, 16)])
            rows.append(st.curve_measures(a, st.concept_strength_digits(ims, 4), ims))
        assert len(rows) == 3, (model_id, d)
        measured[label] = {k: float(np.median([r[k] for r in rows]))
                           for k in ("jump_share", "pixel_jump_share", "width")}
    mem, gen = measured["memorized"], measured["generalized"]
    assert mem["pixel_jump_share"] > 3 * gen["pixel_jump_share"], measured
    assert mem["jump_share"] > 0.5 > gen["jump_share"] and gen["width"] > 3 * mem["width"], measured
