"""Real browser: the Edit tab finds directions on the default example digit, shows the edit strip, the
classifier's path along alpha (text and the effect figure's second panel), the reproduce line and the file it
names; after Edit, the edit controls, the strip and the reproduce line are in one
screen at 1400 and at 800 px wide."""
from tests.conftest import loaded_image_size
from tests.tour import CONTROLS, one_screen


def test_edit_tab_in_browser(page, artifacts):
    page.get_by_role("tab", name="Edit").click()
    page.locator("#edit-find-btn").click()
    page.locator("#edit-spectrum img").wait_for(state="visible", timeout=180_000)
    page.wait_for_function("document.querySelector('#edit-info')?.innerText.includes('numerical rank')")
    page.locator("#edit-go-btn").click()
    page.wait_for_function("document.querySelector('#edit-edit-info')?.innerText.includes('random')",
                           timeout=180_000)
    # the labelled strip (alpha per column) is drawn from the API's strip right after the run
    loaded_image_size(page, "#edit-strip img")
    page.locator("#edit-strip").scroll_into_view_if_needed()
    page.locator("#edit-strip img").wait_for(state="visible", timeout=60_000)
    text = page.locator("#edit-edit-info").inner_text()
    assert "Mean change along the direction" in text and "python -m lowdim_app edit image.png" in text
    # the default example (a 5 at 0.5T, 25 alphas in [-3, 3]): the classifier reads a 3 at the end of the v1 row,
    # a 5 along the random row, and the effect figure has its classifier panel (two panels: twice as wide)
    assert "--t 0.5" in text and "class at alpha = -3 / +0 / +3: along v1" in text and "5 / 5 / 3" in text, text
    assert "random 5 / 5 / 5" in text, text
    effect = page.locator("#edit-effect img")
    effect.wait_for(state="visible")
    size = loaded_image_size(page, "#edit-effect img")
    assert size[0] > 2.5 * size[1], size
    effect.scroll_into_view_if_needed()
    page.locator("#edit-effect").screenshot(path=str(artifacts / "edit_effect.png"))
    # the file the reproduce line names is offered for download
    page.locator("#edit-files a[download='image.png']").wait_for(state="visible")
    page.screenshot(path=str(artifacts / "edit_tab.png"), full_page=True)
    for width in (1400, 800):
        page.set_viewport_size({"width": width, "height": 1000})
        page.wait_for_timeout(500)
        check = one_screen(page, "#edit-go-btn", "#edit-strip", "#edit-edit-info", 1000, CONTROLS["edit"])
        page.screenshot(path=str(artifacts / f"edit_one_screen_{width}.png"))
        assert check["fits"], (width, check)
