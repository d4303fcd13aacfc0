"""The public API (lowdim_app/__init__.py, lowdim_app/api.py) and models built from pipeline objects
(DiffusionModel.from_pipeline / from_unet): pinned names, a light import, every model action taking
a model object as well as an id, the user's device/dtype/weights kept."""
from __future__ import annotations

import doctest
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lowdim_app
from lowdim_app.errors import UserError

REPO = Path(__file__).resolve().parent.parent
EX = str(REPO / "assets" / "examples" / "digit_2_test0.png")

pytestmark = pytest.mark.usefixtures("one_thread")

PUBLIC = ["__version__", "DiffusionModel", "load_model", "list_models", "as_model", "sample", "find_directions",
          "edit", "jacobian_rank", "score", "calibrate", "audit", "steering_vector", "steer", "phase_transition", "run",
          "UserError"]


def test_public_names_are_pinned():
    assert lowdim_app.__all__ == PUBLIC
    for name in PUBLIC:
        assert getattr(lowdim_app, name) is not None, name
    from lowdim_app import api

    assert set(api.__all__) == set(PUBLIC) - {"__version__", "UserError"}
    for name in api.__all__:
        if name != "DiffusionModel":
            fn = getattr(api, name)
            doc = fn.__doc__ or ""
            assert "Args:" in doc or not inspect.signature(fn).parameters, name
            assert "Returns:" in doc and "Examples:" in doc, name
    with pytest.raises(AttributeError):
        lowdim_app.no_such_name  # noqa: B018


def test_import_is_light():
    code = "import sys, lowdim_app; print(sorted(m for m in ('torch', 'diffusers', 'gradio', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_api_doctests():
    from lowdim_app import api
    from lowdim_app.diffusion import model

    for mod in (api, model):
        res = doctest.testmod(mod, extraglobs={"lowdim_app": lowdim_app}, optionflags=doctest.ELLIPSIS)
        assert res.failed == 0, mod.__name__


# ----------------------------------------------------------------------------- pipeline objects
@pytest.fixture(scope="module")
def digits_pipe():
    from diffusers import DDPMPipeline

    return DDPMPipeline.from_pretrained(REPO / "assets" / "models" / "digits-gen", use_safetensors=True)


@pytest.fixture(scope="module")
def sd_pipe(tiny_sd_dir):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(tiny_sd_dir, use_safetensors=True)


def test_from_pipeline_shares_weights_device_dtype(digits_pipe, sd_pipe):
    from lowdim_app import DiffusionModel

    m = DiffusionModel.from_pipeline(digits_pipe)
    assert m.unet is digits_pipe.unet and m.dtype == digits_pipe.unet.dtype and m.device == digits_pipe.device
    assert not m.is_latent and m.sample_shape == (1, 16, 16)
    s = DiffusionModel.from_pipeline(sd_pipe, model_id="my-sd")
    assert s.model_id == "my-sd" and s.is_text and s.is_latent
    assert s.unet is sd_pipe.unet and s.vae is sd_pipe.vae and s.text_encoder is sd_pipe.text_encoder
    ptrs = {p.data_ptr() for p in sd_pipe.unet.parameters()}
    assert ptrs == {p.data_ptr() for p in s.unet.parameters()}   # no copy


def test_from_pipeline_equals_the_loaded_id(digits_pipe):
    import lowdim_app as ld

    a = ld.sample("digits-gen", n=3, steps=6, seed=1).samples
    b = ld.sample(digits_pipe, n=3, steps=6, seed=1).samples
    c = ld.sample(ld.DiffusionModel.from_pipeline(digits_pipe), n=3, steps=6, seed=1).samples
    assert torch.equal(a, b) and torch.equal(a, c)


def test_any_ddpm_family_scheduler(digits_pipe):
    from diffusers import DDIMScheduler, EulerDiscreteScheduler, PNDMScheduler

    from lowdim_app import DiffusionModel

    ref = DiffusionModel.from_pipeline(digits_pipe).alphas_cumprod
    for cls in (DDIMScheduler, EulerDiscreteScheduler, PNDMScheduler):
        m = DiffusionModel.from_unet(digits_pipe.unet, cls.from_config(digits_pipe.scheduler.config))
        assert torch.allclose(m.alphas_cumprod, ref)


def test_bad_objects_are_one_line_errors(digits_pipe, sd_pipe):
    from diffusers import FlowMatchEulerDiscreteScheduler

    import lowdim_app as ld
    from lowdim_app import DiffusionModel

    with pytest.raises(UserError, match="DDPM alphas"):
        DiffusionModel.from_unet(digits_pipe.unet, FlowMatchEulerDiscreteScheduler())
    with pytest.raises(UserError, match="text_encoder and tokenizer"):
        DiffusionModel.from_unet(sd_pipe.unet, sd_pipe.scheduler, vae=sd_pipe.vae)
    with pytest.raises(UserError, match="no unet"):
        DiffusionModel.from_pipeline(object())
    with pytest.raises(UserError, match="model must be"):
        ld.sample(42, n=1, steps=2)


def test_half_precision_unet_keeps_its_dtype(digits_pipe):
    """A bfloat16 U-Net samples in bfloat16; the Jacobian (rank) runs on a float32 copy held only
    inside float32_unet()."""
    import copy

    import lowdim_app as ld
    from lowdim_app import DiffusionModel

    unet = copy.deepcopy(digits_pipe.unet).to(torch.bfloat16)
    m = DiffusionModel.from_unet(unet, digits_pipe.scheduler, model_id="digits-bf16")
    assert m.dtype == torch.bfloat16 and m.unet is unet
    assert ld.sample(m, n=2, steps=3).samples.shape == (2, 1, 16, 16)
    res = ld.jacobian_rank(m, steps=4, points=2, k=4, max_passes=60)
    assert len(res.points) == 2 and m._unet_fp32 is None and next(m.unet.parameters()).dtype == torch.bfloat16


def test_every_model_action_takes_an_object(digits_pipe, sd_pipe, tmp_path):
    import lowdim_app as ld

    # edit: search on the object, then the strip reusing it
    found = ld.find_directions(EX, digits_pipe, k=2, steps=8)
    assert len(found.search.singular_values) == 2
    res = ld.edit(found, direction=1, alpha=[-3, 0, 3])
    assert res.along.shape == (3, 1, 16, 16) and res.settings.model == found.settings.model
    ref = ld.edit(ld.find_directions(EX, "digits-gen", k=2, steps=8), direction=1, alpha=[-3, 0, 3])
    assert torch.allclose(res.along, ref.along, atol=1e-5)
    # an in-memory image and a text-to-image pipeline object
    sd = ld.DiffusionModel.from_pipeline(sd_pipe, model_id="tiny-sd-object")
    img = torch.rand(3, 128, 128) * 2 - 1
    e = ld.edit(img, sd, k=1, steps=4, alpha=[-1, 1], prompt="a house", max_passes=20)
    assert e.along.shape == (2, 3, 128, 128)
    assert ld.sample(sd_pipe, n=1, steps=2, prompt="a boat", guidance=2.0).samples.shape == (1, 3, 128, 128)
    # rank, score, calibrate, steer on the pixel pipeline object
    assert len(ld.jacobian_rank(digits_pipe, steps=4, points=2, k=4, max_passes=60).points) == 2
    imgs = ld.sample("digits-gen", n=4, steps=4).samples
    sc = ld.score(imgs, digits_pipe, noise_draws=1)
    assert len(sc.rows) == 4
    cal = ld.calibrate(imgs[:2], imgs[2:], digits_pipe, noise_draws=1)
    assert 0.0 <= cal.calibration.auroc <= 1.0
    st = ld.steer(digits_pipe, [imgs[0], imgs[1]], strengths=[0, 1], steps=6, window=3, layers="mid_block")
    assert len(st.samples) == 2
    v = ld.steering_vector(digits_pipe, imgs[:2], steps=6, window=3, layers="mid_block")
    again = ld.steer(digits_pipe, vector=v, strengths=[0, 1], steps=6, window=3)
    assert torch.allclose(again.samples, st.samples, atol=1e-5)
    au = ld.audit(REPO / "assets" / "examples", tmp_path / "audit", digits_pipe, noise_draws=1)
    assert len(au.rows) == 5 and (tmp_path / "audit" / "scores.csv").is_file()
    # the generic entry point
    assert ld.run("sample", digits_pipe, n=1, steps=2).samples.shape == (1, 1, 16, 16)
    with pytest.raises(UserError, match="unknown command"):
        ld.run("nope")


def test_feature_layer_accepts_objects_directly(digits_pipe):
    """features.common.load: a DiffusionModel, a pipeline object or an id in ``model=``."""
    from lowdim_app.features.sample import FEATURE

    s = FEATURE.Settings(n=2, steps=3)
    a = FEATURE.run(s).samples
    assert torch.equal(FEATURE.run(s, model=digits_pipe).samples, a)
    assert torch.equal(FEATURE.run(s, model="digits-gen").samples, a)


def test_every_model_feature_takes_a_model_object():
    """Each action with a `model` setting also takes `model=` (an object) in run(); `card` rewrites a
    built-in model's folder, so it needs the folder itself."""
    import dataclasses

    from lowdim_app.features import all_features

    for feature in all_features():
        if "model" in {f.name for f in dataclasses.fields(feature.Settings)} and feature.name != "card":
            assert "model" in inspect.signature(feature.run).parameters, feature.name
