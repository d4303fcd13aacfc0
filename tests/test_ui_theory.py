"""Theory labs (issue 6) through gradio_client on a standalone Blocks with lowdim_app.ui.theory.build()."""
import json
import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402

gr = pytest.importorskip("gradio")


@pytest.fixture(scope="module")
def client(one_thread):
    from lowdim_app.ui.theory import build
    from tests.conftest import serve_blocks

    with serve_blocks(build) as c:
        yield c


def test_mog_ddpm_api(client):
    fig, nums, status, cli = client.predict(6, 4.0, 2.5, 0.05, 1.0, 0.5, 20, 10, 2, 1024, 0, api_name="/mog_ddpm")
    n = json.loads(nums)
    assert "done" in status and "python -m lowdim_app mog-ddpm" in cli and "--iters-large 20" in cli
    assert n["large_noise"]["angle_end_deg"]["gd_population"] < n["large_noise"]["angle_start_deg"]
    assert open(fig, "rb").read(4) == b"\x89PNG"


def test_relu_and_molr_api(client):
    fig, nums, status, cli = client.predict("mog", 8, 0.2, 1e-3, True, 2, 300, False, 0, 300, False, 0,
                                            api_name="/relu_dae")
    n = json.loads(nums)
    assert "done" in status and "relu-dae --data mog" in cli
    assert "memorize" in n and "generalize" in n and "eq9" in n["memorize"]
    fig, nums, status, cli = client.predict("synthetic", 2, 8, 2, 2, 30, 0, api_name="/molr_mog")
    n = json.loads(nums)
    assert "done" in status and set(n["eval_loss"]) == {"moe_mog", "moe_gaussian", "latent_mlp"}


@pytest.mark.parametrize("api,args", [
    ("/mog_ddpm", (6, 4.0, 0.01, 0.05, 1.0, 0.5, 20, 10, 2, 1024, 0)),     # t_large out of bounds
    ("/mog_ddpm", (6, 4.0, 1.0, 2.0, 1.0, 0.5, 20, 10, 2, 1024, 0)),       # t_small >= t_large
    ("/relu_dae", ("cifar", 8, 0.2, 1e-3, True, 2, 300, False, 0, 300, False, 0)),
    ("/relu_dae", ("mog", 10**9, 0.2, 1e-3, True, 2, 300, False, 0, 300, False, 0)),
    ("/molr_mog", ("synthetic", 2, 8, 2, 2, "many", 0)),
])
def test_bad_input_is_one_line_error(client, api, args):
    with pytest.raises(Exception) as ei:
        client.predict(*args, api_name=api)
    assert "Unexpected" not in str(ei.value)
