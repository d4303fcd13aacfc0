"""Real browser: what a first-time visitor meets. Errors are said in the app's words (no CLI flags), once
(a toast, no red badge on every output), and go away with the next action; each tab's intro says what to
do and what to look at, its references folded under "About"; every lab tab is reachable at 800 px; and
after the main action the inputs, the result and the reproduce line fit in one screen at 1400 and at
800 px wide (tests/tour.py walks every tab the same way and saves the screenshots)."""
from __future__ import annotations

from tests.tour import CONTROLS, one_screen, open_tab

TOASTS = "[data-testid='toast-body']"
LABS = ("Phase transition", "Low-rank", "GL score", "Memorize/generalize", "MoG via DDPM", "MoLR-MoG")


def _visible_error_badges(page) -> int:
    return sum(1 for b in page.locator("[data-testid='status-tracker'] span.error").all() if b.is_visible())


def test_an_error_speaks_the_apps_words_once_and_goes_with_the_next_action(page, artifacts):
    open_tab(page, "Memorization", None)
    page.locator("#mem-score-btn").click()
    page.locator(TOASTS).first.wait_for(state="visible", timeout=30_000)
    text = page.locator(TOASTS).first.inner_text()
    assert "nothing to score" in text and "also generate samples" in text and "--" not in text, text
    page.wait_for_timeout(500)
    assert _visible_error_badges(page) == 0
    page.screenshot(path=str(artifacts / "walkthrough_error.png"))
    open_tab(page, "Theory labs", None)          # the next action: the old error does not follow the visitor
    page.wait_for_timeout(500)
    assert page.locator(TOASTS).count() == 0
    open_tab(page, "Edit", None)
    page.locator("#edit-go-btn").click()         # an Edit error, then a press elsewhere clears it
    page.locator(TOASTS).first.wait_for(state="visible", timeout=30_000)
    assert "Find directions" in page.locator(TOASTS).first.inner_text()
    open_tab(page, "Models", None)
    page.wait_for_timeout(500)
    assert page.locator(TOASTS).count() == 0


def test_intros_say_what_to_do_and_fold_their_references(page):
    for tab, subs in (("Models", [None]), ("Edit", [None]), ("Memorization", [None]), ("Steer", [None]),
                      ("Theory labs", list(LABS))):
        for sub in subs:
            open_tab(page, tab, sub)
            page.wait_for_timeout(300)
            intros = page.evaluate(   # the visible intro (outermost element of its class): text outside About
                "() => [...document.querySelectorAll('.tab-intro')]"
                ".filter(e => e.offsetParent && !e.parentElement.closest('.tab-intro'))"
                ".map(e => ({shown: [...e.querySelectorAll('p')].filter(p => !p.closest('details'))"
                ".map(p => p.innerText).join(' '), open: e.querySelector('details')?.open,"
                " summary: e.querySelector('summary')?.innerText}))")
            assert len(intros) == 1, (tab, sub, intros)
            shown = intros[0]["shown"]
            assert "press" in shown.lower() and "look" in shown.lower(), (tab, sub, shown)
            for reference in ("arXiv", "Thm.", "App. ", "bench/", "et al."):
                assert reference not in shown, (tab, sub, reference)
            assert intros[0]["open"] is False and intros[0]["summary"] == "About", (tab, sub, intros[0])


def test_every_lab_tab_is_reachable_at_800_px(page):
    page.set_viewport_size({"width": 800, "height": 1000})
    open_tab(page, "Theory labs", None)
    for lab in LABS:
        assert page.get_by_role("tab", name=lab, exact=True).is_visible(), lab


def test_inputs_result_and_reproduce_line_in_one_screen(page, artifacts):
    """Models and the phase lab, run with small settings: at 1400 and at 800 px wide, the tab's inputs (a
    lab's Run button at 800 px), its result and its reproduce line fit in one window height (1000 px)."""
    runs = [("models", "Models", None, "#models-sample-btn", "#models-grid", "#models-reproduce",
             {"#models-steps input[type=number]": "5", "#models-n input[type=number]": "4"}, "python -m lowdim_app"),
            ("phase", "Theory labs", "Phase transition", "#molrg-phase-run", "#molrg-phase-plot", "#molrg-phase-cli",
             {"#molrg-phase-trials input": "2", "#molrg-phase-Nhi input": "8"}, "python -m lowdim_app")]
    for name, tab, sub, button, result, reproduce, setup, done in runs:
        page.set_viewport_size({"width": 1400, "height": 1000})
        open_tab(page, tab, sub)
        for selector, value in setup.items():
            page.locator(selector).fill(value)
        page.locator(button).click()
        page.wait_for_function(f"document.querySelector({reproduce!r})?.innerText.includes({done!r})",
                               timeout=300_000)
        if name == "phase":
            page.wait_for_function("document.querySelector('#molrg-phase-status')?.innerText.includes('done')",
                                   timeout=300_000)
        for width in (1400, 800):
            page.set_viewport_size({"width": width, "height": 1000})
            page.wait_for_timeout(500)
            # below 1000 px a lab's figure goes under its inputs at full width (readable); the Run button it
            # sits under is then the control in view
            check = one_screen(page, button, result, reproduce, 1000, None if sub and width < 1000 else CONTROLS[name])
            page.screenshot(path=str(artifacts / f"walkthrough_{width}_{name}.png"))
            assert check["fits"], (name, width, check)
