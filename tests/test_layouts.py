"""Pipeline folders load in both diffusers layouts; broken or partial folders are one-line errors."""
import json
import shutil

import pytest
import torch

from lowdim_app.cli import main
from lowdim_app.diffusion.registry import load_model
from lowdim_app.diffusion.tiny import to_flat_layout
from lowdim_app.errors import ModelUnavailable, UserError


@pytest.fixture
def flat_dir(tiny_pixel_dir, tmp_path):
    return to_flat_layout(tiny_pixel_dir, tmp_path / "flat")


def test_flat_layout_loads_and_samples_like_the_subfolder_layout(tiny_pixel_dir, flat_dir):
    assert not (flat_dir / "unet").exists() and (flat_dir / "config.json").is_file()
    a = load_model(str(tiny_pixel_dir), "cpu").generate(2, seed=3, steps=4)
    b = load_model(str(flat_dir), "cpu").generate(2, seed=3, steps=4)
    assert torch.equal(a, b)


def test_published_google_scheduler_config_is_read(flat_dir):
    """The oldest ddpm-cifar10-32 revisions carry a GaussianDDPMScheduler config with 'timesteps'."""
    (flat_dir / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "GaussianDDPMScheduler", "beta_end": 0.02, "beta_schedule": "linear", "beta_start": 0.0001,
         "timesteps": 1000, "variance_type": "fixed_large"}))
    m = load_model(str(flat_dir), "cpu")
    assert m.num_train_timesteps == 1000 and abs(float(m.abar(999)) - 4.0358e-05) < 1e-6


@pytest.mark.parametrize("breakage, message", [
    (lambda d: (d / "scheduler_config.json").unlink(), "the scheduler config is missing"),
    (lambda d: (d / "scheduler_config.json").write_text("{not json"), "is not valid JSON"),
    (lambda d: (d / "model_index.json").write_text("[1, 2]"), "is not a JSON object"),
    (lambda d: (d / "config.json").unlink(), "no model_index.json|U-Net config is missing"),
    (lambda d: [p.unlink() for p in d.glob("*.safetensors")], "no U-Net weights"),
])
def test_broken_folders_are_one_line_errors(flat_dir, breakage, message):
    breakage(flat_dir)
    with pytest.raises(UserError, match=message) as err:
        load_model(str(flat_dir), "cpu")
    assert "\n" not in str(err.value)


def test_pickle_only_weights_are_refused_never_unpickled(flat_dir):
    w = next(flat_dir.glob("*.safetensors"))
    shutil.move(w, flat_dir / "diffusion_pytorch_model.bin")
    with pytest.raises(ModelUnavailable, match="published only as PyTorch pickles .*never unpickles"):
        load_model(str(flat_dir), "cpu")


def test_cli_reports_a_broken_folder_with_exit_code_2(flat_dir, tmp_path, capsys):
    (flat_dir / "scheduler_config.json").unlink()
    assert main(["sample", "--model", str(flat_dir), "--n", "1", "--steps", "2", "--out", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "scheduler config is missing" in err and err.count("\n") == 1
