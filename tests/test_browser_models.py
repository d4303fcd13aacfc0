"""Real browser (Debian chromium + Playwright): open the app, sample a grid, save a screenshot."""

from tests.conftest import loaded_image_size


def test_sample_grid_in_browser(page, artifacts):
    page.locator("#models-steps input[type=number]").fill("10")
    page.locator("#models-sample-btn").click()
    img = page.locator("#models-grid img")
    img.wait_for(state="visible", timeout=120_000)
    page.wait_for_function("document.querySelector('#models-reproduce')?.innerText.includes('--steps 10')")
    assert loaded_image_size(page, "#models-grid img", 128)[0] >= 128
    assert "Measured regime evidence" in page.locator("#models-card").inner_text()
    page.screenshot(path=str(artifacts / "models_tab.png"), full_page=True)


def test_an_example_fills_the_inputs_and_shows_its_result(page, artifacts):
    """Clicking the digits-mem example sets the model and shows that model's grid and reproduce line."""
    page.locator("#models-examples").get_by_text("digits-mem").first.click()
    page.wait_for_function("document.querySelector('#models-reproduce')?.innerText.includes('--model digits-mem')",
                           timeout=180_000)
    assert loaded_image_size(page, "#models-grid img", 128)[0] >= 128
    assert "digits-mem" in page.locator("#models-model input").input_value()
    page.screenshot(path=str(artifacts / "models_example.png"), full_page=False)
