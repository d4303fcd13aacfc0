"""The Models tab through its API (gradio_client) against the real `python app.py` server."""
import pytest
from gradio_client.exceptions import AppError
from PIL import Image


def test_sample_endpoint_returns_a_grid(client):
    img_path, repro = client.predict("digits-gen", 4, 0, 10, "", 7.5, api_name="/sample")
    img = Image.open(img_path)
    assert img.size[0] >= 2 * 16 * 4 and "python -m lowdim_app sample --model digits-gen --n 4 --seed 0 --steps 10" in repro


def test_same_seed_same_grid(client):
    a, _ = client.predict("digits-gen", 2, 7, 5, "", 7.5, api_name="/sample")
    b, _ = client.predict("digits-gen", 2, 7, 5, "", 7.5, api_name="/sample")
    assert list(Image.open(a).getdata()) == list(Image.open(b).getdata())


@pytest.mark.parametrize("args, message", [
    (("digits-gen", 4, 0, 5000, "", 7.5), "1000"),
    (("digits-gen", 0, 0, 10, "", 7.5), "minimum value 1"),
    (("digits-gen", 4, -3, 10, "", 7.5), "seed must be between"),
    (("not-a-model", 4, 0, 10, "", 7.5), "unknown model"),
    (("google/ddpm-cifar10-32", 1, 0, 10, "", 7.5), "not in the local Hugging Face cache"),
])
def test_bad_input_is_a_clear_error(client, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name="/sample")


def test_model_card_endpoint(client):
    card = client.predict("digits-mem", api_name="/model_card")
    assert "digits-mem" in card and "near-copy share" in card and "wall time" in card


def test_hub_examples_only_for_models_this_server_has(monkeypatch):
    """Examples for hub models appear when their weights are here, and not otherwise (offline, no cache)."""
    from lowdim_app.diffusion.registry import ModelEntry
    from lowdim_app.ui import models_tab

    entries = [ModelEntry("digits-gen", "", "builtin", True),
               ModelEntry("CompVis/stable-diffusion-v1-4", "", "hub", True),
               ModelEntry("google/ddpm-cifar10-32", "", "hub", False)]
    monkeypatch.setattr(models_tab, "list_models", lambda rt: entries)
    rows = models_tab._hub_examples()
    assert [r[0] for r in rows] == ["CompVis/stable-diffusion-v1-4"] and len(rows[0]) == 6
    monkeypatch.setattr(models_tab, "list_models", lambda rt: entries[:1])
    assert models_tab._hub_examples() == []
