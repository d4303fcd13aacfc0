"""Request budgets: a feature's cost -> seconds on the device; oversized requests refused with the CLI line."""
import pytest

from lowdim_app.config import Runtime, from_environment
from lowdim_app.diffusion import architectures as A
from lowdim_app.diffusion.registry import unet_config
from lowdim_app.errors import UserError
from lowdim_app.features import budget, get
from lowdim_app.features.sample import SampleSettings


def test_families_of_the_real_architectures():
    assert budget.family_of(A.sd_unet_config()) == "sd-v1"
    assert budget.family_of(A.pixel_unet_config("cifar10")) == "ddpm-32"
    assert budget.family_of(A.pixel_unet_config("celebahq")) == "ddpm-256"
    assert budget.family_of(unet_config("digits-gen")) == "digits"
    assert budget.family_of(None) is None


def test_estimate_is_passes_times_seconds_per_forward():
    s = SampleSettings(model="digits-gen", n=4, steps=10)
    cpu = budget.estimate(get("sample"), s, Runtime(device="cpu"), unet_config("digits-gen"))
    assert cpu.cost.forward == 40 and cpu.seconds == pytest.approx(40 * budget.SECONDS_PER_FORWARD["cpu"]["digits"])
    sd = budget.estimate(get("sample"), s.replace(model="x"), Runtime(device="cpu"), A.sd_unet_config())
    assert sd.cost.forward == 80                       # guidance doubles the batch of a text model
    assert sd.seconds == pytest.approx(80 * budget.SECONDS_PER_FORWARD["cpu"]["sd-v1"])


def test_an_oversized_request_is_refused_with_the_command_to_run_elsewhere():
    big = SampleSettings(model="digits-gen", n=64, steps=1000)
    with pytest.raises(UserError) as err:
        budget.check(get("sample"), big, Runtime(device="cpu", request_budget_s=120), unet_config("digits-gen"))
    msg = str(err.value)
    assert "over this server's limit of 120 s" in msg and big.to_cli() in msg and "\n" not in msg
    small = budget.check(get("sample"), SampleSettings(model="digits-gen"), Runtime(device="cpu", request_budget_s=120),
                         unet_config("digits-gen"))
    assert small.seconds < 120
    assert budget.check(get("sample"), big, Runtime(device="cpu"), unet_config("digits-gen")).seconds > 120  # no limit


def test_gpu_duration_is_padded_and_capped():
    est = budget.Estimate(seconds=40.0, device="cuda", family="sd-v1", cost=None)
    assert budget.gpu_duration(est, 120) == 60 and budget.gpu_duration(est, 50) == 50
    tiny = budget.Estimate(seconds=1.0, device="cuda", family="digits", cost=None)
    assert budget.gpu_duration(tiny, 120) == budget.MIN_GPU_DURATION_S


def test_budget_from_the_environment(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("LOWDIM_PUBLIC", raising=False)
    monkeypatch.delenv("LOWDIM_REQUEST_BUDGET_S", raising=False)
    assert from_environment().request_budget_s is None
    monkeypatch.setenv("SPACE_ID", "someone/lowdim-lab")           # on a Space: public mode, 120 s
    assert from_environment().public and from_environment().request_budget_s == 120
    monkeypatch.setenv("LOWDIM_REQUEST_BUDGET_S", "none")
    assert from_environment().request_budget_s is None
    monkeypatch.setenv("LOWDIM_REQUEST_BUDGET_S", "30")
    assert from_environment().request_budget_s == 30


def test_the_app_refuses_an_oversized_request_in_one_line(monkeypatch):
    from gradio_client.exceptions import AppError

    from lowdim_app.ui.models_tab import build
    from tests.conftest import serve_blocks

    monkeypatch.setenv("LOWDIM_REQUEST_BUDGET_S", "5")
    with serve_blocks(build) as client:
        with pytest.raises(AppError, match=r"over this server's limit of 5 s per request; run it on your own "
                                           r"machine: `python -m lowdim_app sample --model digits-gen --n 64"):
            client.predict("digits-gen", 64, 0, 200, "", 7.5, api_name="/sample")
        img, _ = client.predict("digits-gen", 2, 0, 5, "", 7.5, api_name="/sample")
        assert img
