"""The Edit tab through its API (gradio_client), including transfer and bad input."""
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

EX = "assets/examples/digit_2_test0.png"


def _editor():
    return {"background": handle_file(EX), "layers": [], "composite": None}


def test_find_edit_save_apply(client):
    spectrum, v, u, info, _idx = client.predict(_editor(), "digits-gen", 0.7, 4, 50, "", False,
                                                        api_name="/find_directions")
    assert "numerical rank r =" in info and len(v) == 4 and len(u) == 4
    strip, effect, text = client.predict(_editor(), 2, 6, 5, 0, api_name="/edit")
    assert "Mean change along the direction" in text and "--direction 2" in text
    path = client.predict(2, api_name="/save_direction")
    assert path.endswith(".safetensors")
    _, _, text2 = client.predict(_editor(), handle_file(path), "digits-gen", 50, "", 4, 3, 0, api_name="/apply_direction")
    assert "saved direction v2" in text2
    with pytest.raises(AppError, match="computed on digits-gen, not digits-dup"):
        client.predict(_editor(), handle_file(path), "digits-dup", 50, "", 4, 3, 0, api_name="/apply_direction")


@pytest.mark.parametrize("args, message", [
    ((None, "digits-gen", 0.7, 4, 50, "", False), "upload an image"),
    (("EDITOR", "digits-gen", 0.7, 99, 50, "", False), "maximum value 16"),
    (("EDITOR", "digits-gen", 0.7, 4, 50, "", True), "paint the region"),
])
def test_find_directions_bad_input(client, args, message):
    args = tuple(_editor() if a == "EDITOR" else a for a in args)
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name="/find_directions")


def test_edit_bad_alpha_range(client):
    client.predict(_editor(), "digits-gen", 0.7, 2, 20, "", False, api_name="/find_directions")
    with pytest.raises(AppError, match="alpha range A must be between"):
        client.predict(_editor(), 1, 1e9, 5, 0, api_name="/edit")
