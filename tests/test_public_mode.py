"""Public mode (a Space): callers never reach server paths, and messages never reveal them."""
import os

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from lowdim_app.config import DEFAULT_ASSETS
from tests.conftest import start_app


@pytest.fixture(scope="module")
def public(tmp_path_factory):
    trap = tmp_path_factory.mktemp("trap")
    (trap / "model_index.json").write_text('{"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"]}')
    os.symlink("/etc/passwd", trap / "README.md")
    # as the Space runs: public mode (SPACE_ID set) under the real ZeroGPU wrapper
    with start_app("public_server.log", zerogpu=True, LOWDIM_PUBLIC="1") as url:
        yield Client(url, verbose=False), trap


PROBES = ["/nonexistent-folder-xyz", "/etc", "/etc/passwd", "..", "../../..", "~", "assets/models/digits-gen", str(DEFAULT_ASSETS / "models" / "digits-gen"),
          "x" * 100_000, "digits-gen/../../etc", "\x00", "file:///etc/passwd", "CompVis/stable-diffusion-v2"]


def _message(fn) -> str:
    with pytest.raises(AppError) as err:
        fn()
    return str(err.value)


def test_model_card_reads_only_registry_models(public):
    client, trap = public
    messages = {p[:40]: _message(lambda p=p: client.predict(p, api_name="/model_card")) for p in PROBES + [str(trap)]}
    for probe, msg in messages.items():
        assert "root:" not in msg and "/etc" not in msg.replace(repr(probe)[1:-1], "") and "\n" not in msg, (probe, msg)
        assert "unknown model" in msg or "no model given" in msg, (probe, msg)
    # the same answer whether or not a folder exists (nothing learned about the server's disk)
    assert messages["/etc"].replace("/etc", "X") == messages["/nonexistent-folder-xyz"].replace("/nonexistent-folder-xyz", "X")
    assert "digits-gen" in client.predict("digits-gen", api_name="/model_card")


def test_local_folders_are_refused_for_every_model_endpoint(public):
    client, trap = public
    folder = str(DEFAULT_ASSETS / "models" / "digits-gen")
    for call in (lambda: client.predict(folder, 1, 0, 2, "", 7.5, api_name="/sample"),
                 lambda: client.predict(None, folder, "", 50, "std", 1, 1, 0, None, api_name="/score"),
                 lambda: client.predict(str(trap), 1, 0, 2, "", 7.5, api_name="/sample")):
        msg = _message(call)
        assert "unknown model" in msg and "this server offers" in msg and "model_index" not in msg


def test_oversized_requests_are_refused_with_the_cli_command(public):
    client, _ = public
    msg = _message(lambda: client.predict("digits-gen", 64, 0, 1000, "", 7.5, api_name="/sample"))
    assert "over this server's limit of 120 s per request" in msg and "python -m lowdim_app sample" in msg


def test_no_server_folder_audit_in_public_mode(public):
    client, _ = public
    names = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert "/score" in names and "/audit" not in names
