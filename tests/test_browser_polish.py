"""Real browser: the app as a visitor meets it. Results that no longer match the inputs are cleared with a
note (Edit: a new image, a painted mask; Models: another model), hub models that are not available here
say so in the dropdown and on the card without an error toast, strips are labelled with their alpha /
strength, the nearest-training-image pairs are shown whole, a non-image upload is named as skipped, and
inputs of another mode are hidden."""
from __future__ import annotations

from tests.conftest import loaded_image_size, wait_uploaded

TOASTS = "[data-testid='toast-body'], .toast-body"


def _errors_shown(page) -> list[str]:
    return [t for t in page.locator(TOASTS).all_inner_texts() if "rror" in t]


def test_neighbour_pairs_are_whole(page, artifacts):
    from tests.conftest import REPO

    page.get_by_role("tab", name="Memorization").click()
    digit = sorted((REPO / "assets" / "examples").glob("digit_*.png"))[0]
    page.locator("#mem-files input[type=file]").set_input_files([str(digit)])
    wait_uploaded(page, "#mem-files", [digit.name])
    page.locator("#mem-score-btn").click()
    page.wait_for_function("document.querySelector('#mem-summary')?.innerText.includes('flagged')", timeout=180_000)
    pairs = page.locator("#mem-nn img")
    pairs.first.wait_for(state="visible")
    assert pairs.count() == 1
    # each pair (image | nearest training image, 2:1) is shown whole: contained, not centre-cropped
    fit = pairs.first.evaluate("i => getComputedStyle(i).objectFit")
    assert fit == "contain", fit
    w, h = loaded_image_size(page, "#mem-nn img")
    assert w > 1.8 * h
    page.locator("#mem-nn").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "polish_memorization_pairs.png"), full_page=True)
    from tests.tour import CONTROLS, one_screen

    for width in (1400, 800):   # the inputs, the table and the reproduce line in one screen
        page.set_viewport_size({"width": width, "height": 1000})
        page.wait_for_timeout(500)
        check = one_screen(page, "#mem-score-btn", "#mem-table", "#mem-reproduce", 1000, CONTROLS["memorization"])
        page.screenshot(path=str(artifacts / f"memorization_one_screen_{width}.png"))
        assert check["fits"], (width, check)


def test_a_non_image_among_uploads_is_named(client, tmp_path):
    from gradio_client import handle_file

    from tests.conftest import REPO

    notes = tmp_path / "notes.txt"
    notes.write_text("not an image\n")
    digit = sorted((REPO / "assets" / "examples").glob("digit_*.png"))[0]
    out = client.predict([handle_file(str(notes)), handle_file(str(digit))], "digits-dup", "", 50, "", 4, 0, 0,
                         None, False, api_name="/score")
    summary = out[3]
    assert "Skipped: notes.txt" in summary and "of 1 images flagged" in summary, summary


def test_edit_results_clear_when_the_image_or_mask_changes(page, artifacts):
    page.get_by_role("tab", name="Edit").click()
    page.locator("#edit-steps input[type=number]").fill("20")
    page.locator("#edit-find-btn").click()
    page.wait_for_function("document.querySelector('#edit-info')?.innerText.includes('numerical rank')",
                           timeout=180_000)
    # gallery captions are short and every one of the k = 5 directions is shown
    assert page.locator("#edit-v img").count() == 5
    assert "σ" in page.locator("#edit-v").inner_text()
    page.locator("#edit-go-btn").click()
    page.wait_for_function("document.querySelector('#edit-edit-info')?.innerText.includes('Mean change')",
                           timeout=180_000)
    page.locator("#edit-strip img").wait_for(state="visible")
    # the shown strip (the API's too) is the bare 7 x 2 strip of 16 px tiles at upscale 8 plus alpha labels
    # under the columns and the row names
    page.wait_for_function("(document.querySelector('#edit-strip img')?.naturalHeight || 0) > 0")
    shown = loaded_image_size(page, "#edit-strip img")
    assert shown[0] > 8 * (7 * 18 + 2) and shown[1] > 8 * (2 * 18 + 2), shown
    page.screenshot(path=str(artifacts / "polish_edit_labelled.png"), full_page=True)

    # paint a stroke on the image: the strip no longer matches, so it is cleared with a note
    page.locator("#edit-image button[aria-label='Brush']").click()
    canvas = page.locator("#edit-image canvas").first
    box = canvas.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 20, cy)
    page.mouse.down()
    page.mouse.move(cx + 20, cy, steps=8)
    page.mouse.up()
    page.wait_for_function("document.querySelector('#edit-edit-info')?.innerText.includes('press Edit')",
                           timeout=30_000)
    assert page.locator("#edit-strip img").count() == 0
    assert "numerical rank" in page.locator("#edit-info").inner_text()   # a global search still applies

    # a new image: the directions of the old one are cleared too
    page.locator("#tab-edit .gallery-item, #tab-edit button.gallery-item").nth(1).click()
    page.wait_for_function("document.querySelector('#edit-info')?.innerText.includes('image changed')",
                           timeout=30_000)
    assert page.locator("#edit-spectrum img").count() == 0 and page.locator("#edit-v img").count() == 0
    assert not _errors_shown(page)
    page.screenshot(path=str(artifacts / "polish_edit_stale_cleared.png"), full_page=True)


def test_an_unavailable_hub_model_is_marked_and_explained(page, artifacts):
    dropdown = page.locator("#models-model input")
    page.locator("#models-steps input[type=number]").fill("5")
    page.locator("#models-n input[type=number]").fill("4")
    page.locator("#models-sample-btn").click()
    page.wait_for_function("document.querySelector('#models-reproduce')?.innerText.includes('--steps 5')",
                           timeout=120_000)
    dropdown.click()
    option = page.get_by_role("option", name="google/ddpm-cifar10-32 (not available here)")
    option.wait_for(state="visible")
    option.click()
    page.wait_for_function("document.querySelector('#models-card')?.innerText.includes('not available here')",
                           timeout=30_000)
    page.wait_for_function("document.querySelector('#models-reproduce')?.innerText.includes('not available here')")
    page.wait_for_timeout(1000)
    assert not _errors_shown(page), _errors_shown(page)
    # the old grid and reproduce line no longer match the chosen model: gone
    assert page.locator("#models-grid img").count() == 0
    assert "--steps 5" not in page.locator("#models-reproduce").inner_text()
    assert "hf download google/ddpm-cifar10-32 --include" in page.locator("#models-card").inner_text()
    page.screenshot(path=str(artifacts / "polish_models_unavailable.png"), full_page=False)


def test_inputs_of_another_mode_are_hidden(page):
    page.get_by_role("tab", name="Edit").click()
    assert page.locator("#edit-prompt").is_hidden()          # the built-in digit models take no prompt
    page.get_by_role("tab", name="Steer").click()
    assert page.locator("#steer-prompt").is_hidden() and page.locator("#steer-files").is_hidden()
    page.locator("#steer-mode").get_by_text("prompt", exact=True).click()
    page.locator("#steer-prompt").wait_for(state="visible")
    assert page.locator("#steer-digit").is_hidden()
    page.get_by_role("tab", name="Theory labs").click()
    assert page.locator("#molrg-phase-variant").is_hidden()
    page.locator("#molrg-phase-method input").click()
    page.get_by_role("option", name="dae").click()
    page.locator("#molrg-phase-variant").wait_for(state="visible")




def test_cancel_shows_a_cancelled_state_not_errors(page, artifacts):
    """A long search cancelled: the info line says so, and no output carries a red Error badge."""
    page.get_by_role("tab", name="Edit").click()
    page.locator("#edit-steps input[type=number]").fill("1000")
    page.locator("#edit-find-btn").click()
    page.wait_for_timeout(2000)
    page.locator("#edit-cancel").click()
    page.wait_for_function("document.querySelector('#edit-info')?.innerText.includes('Cancelled')", timeout=30_000)
    page.wait_for_timeout(1500)
    badges = [t for t in page.locator("#tab-edit [data-testid='status-tracker']").all_inner_texts() if "Error" in t]
    assert not badges, badges
    # and none is left looking busy (gradio left the cancelled event's outputs in their pending state)
    assert page.locator("#tab-edit .generating, #tab-edit .pending").count() == 0
    assert not _errors_shown(page)
    assert "machine is free" in page.locator("#edit-info").inner_text()
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(artifacts / "polish_edit_cancelled.png"), full_page=False)


def test_main_action_above_the_fold_and_examples_on_top(page, artifacts):
    """Layout: in a 1400 x 1100 window every tab's main button is visible without scrolling, and the
    tabs' examples sit above their inputs."""
    tabs = [("Models", None, "#models-sample-btn", "#models-examples"),
            ("Edit", None, "#edit-find-btn", None),
            ("Memorization", None, "#mem-score-btn", "#mem-examples"),
            ("Steer", None, "#steer-btn", "#steer-examples"),
            ("Theory labs", "Phase transition", "#molrg-phase-run", "#molrg-phase-examples"),
            ("Theory labs", "Low-rank", "#molrg-rank-run", "#molrg-rank-examples"),
            ("Theory labs", "GL score", "#molrg-gl-run", "#molrg-gl-examples"),
            ("Theory labs", "Memorize/generalize", "#theory-relu-run", "#theory-relu-examples"),
            ("Theory labs", "MoG via DDPM", "#theory-mog-run", "#theory-mog-examples"),
            ("Theory labs", "MoLR-MoG", "#theory-molr-run", "#theory-molr-examples")]
    for tab, sub, button, examples in tabs:
        page.get_by_role("tab", name=tab).click()
        if sub:
            page.get_by_role("tab", name=sub).click()
        page.evaluate("window.scrollTo(0, 0)")
        box = page.locator(button).first.bounding_box()
        assert box is not None and box["y"] + box["height"] <= 1100, (tab, sub, box)
        if examples:
            ex = page.locator(examples).first.bounding_box()
            assert ex is not None and ex["y"] < box["y"], (tab, sub, ex, box)
    page.screenshot(path=str(artifacts / "polish_layout_molr.png"))
