"""The Steer tab through its API and in the real browser."""
import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError


def test_steer_endpoint_with_contrast(client):
    strip, curve, contrast, info = client.predict("digits-dup", "digit class", 4, "", None, 1, None, 1.5, 4, "recipe",
                                                  "", True, api_name="/steer")
    assert strip and curve and contrast and "spatial vector" in info and "--contrast" in info


def test_steer_an_uploaded_source_image(client):
    """An uploaded image is DDIM-inverted, then steered."""
    strip, curve, _, info = client.predict("digits-dup", "digit class", 7, "", None, 1,
                                           handle_file("assets/examples/digit_3_test2.png"), 1.5, 3, "recipe", "", False,
                                           api_name="/steer")
    assert strip and curve and "--source IMAGE" in info


@pytest.mark.parametrize("args, message", [
    (("digits-dup", "digit class", 12, "", None, 1, None, 1.5, 4, "recipe", "", False), "digit class must be between"),
    (("digits-dup", "prompt", 4, "a cat", None, 1, None, 1.5, 4, "recipe", "", False), "need a text model"),
    (("digits-dup", "digit class", 4, "", None, 1, None, 1e9, 4, "recipe", "", False), "a_max must be between"),
    (("digits-dup", "uploaded images", 4, "", None, 1, None, 1.5, 4, "recipe", "", False), "upload concept images"),
])
def test_steer_bad_input(client, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name="/steer")


def test_steer_tab_in_browser(page, artifacts):
    page.get_by_role("tab", name="Steer").click()
    page.locator("#steer-btn").click()
    page.wait_for_function("document.querySelector('#steer-info')?.innerText.includes('Reproduce')", timeout=180_000)
    page.locator("#steer-contrast-img img").wait_for(state="visible")
    page.screenshot(path=str(artifacts / "steer_tab.png"), full_page=True)
