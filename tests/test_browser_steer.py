"""Real browser: a Steer example fills the inputs and shows its strip and reproduce line; Cancel on the Edit
tab stops a running search (the server logs it) and leaves no result."""
from tests.conftest import loaded_image_size


def test_a_steer_example_shows_its_strip(page, artifacts):
    page.get_by_role("tab", name="Steer").click()
    page.locator("#steer-examples").get_by_text("7").first.click()
    page.wait_for_function("document.querySelector('#steer-info')?.innerText.includes('--concept digit:7')",
                           timeout=240_000)
    assert "--model digits-dup" in page.locator("#steer-info").inner_text()
    for image in ("#steer-strip img", "#steer-contrast-img img"):   # labelled from the raw strips right after
        loaded_image_size(page, image, 128)
    assert "digits-dup" in page.locator("#steer-model input").input_value()
    page.screenshot(path=str(artifacts / "steer_example.png"), full_page=True)
    from tests.tour import CONTROLS, one_screen

    for width in (1400, 800):   # the inputs, the strip and the reproduce line in one screen
        page.set_viewport_size({"width": width, "height": 1000})
        page.wait_for_timeout(500)
        check = one_screen(page, "#steer-btn", "#steer-strip", "#steer-info", 1000, CONTROLS["steer"])
        page.screenshot(path=str(artifacts / f"steer_one_screen_{width}.png"))
        assert check["fits"], (width, check)


def test_cancel_stops_a_direction_search(page, artifacts):
    """A long exact search (1000 DDIM steps of inversion first): Cancel stops it within seconds."""
    from tests.conftest import cancel_in_browser

    page.get_by_role("tab", name="Edit").click()
    page.locator("#edit-steps input[type=number]").fill("1000")
    assert cancel_in_browser(page, artifacts / "server.log", "edit", "#edit-find-btn", "#edit-cancel", 500) == 1
    assert "numerical rank" not in page.locator("#edit-info").inner_text()
