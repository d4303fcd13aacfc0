"""Real browser (Debian chromium + Playwright): open the app, sample a grid, save a screenshot."""


def test_sample_grid_in_browser(page, artifacts):
    page.locator("#models-steps input[type=number]").fill("10")
    page.locator("#models-sample-btn").click()
    img = page.locator("#models-grid img")
    img.wait_for(state="visible", timeout=120_000)
    page.wait_for_function("document.querySelector('#models-reproduce')?.innerText.includes('--steps 10')")
    assert img.evaluate("i => i.naturalWidth") >= 128
    assert "Measured regime evidence" in page.locator("#models-card").inner_text()
    page.screenshot(path=str(artifacts / "models_tab.png"), full_page=True)
