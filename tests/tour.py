"""A visitor's walkthrough of the app in Debian chromium: each tab's main action with small settings,
then, at each window width, the tab scrolled so that its main button, its result and its reproduce line
are in view, and a screenshot of that one screen.

``python -m tests.tour OUT_FOLDER [URL]`` (without URL it starts ``python app.py``) writes
``OUT_FOLDER/<width>_<tab>.png`` and ``OUT_FOLDER/tour.json`` (per tab and width: the span from the top
of the button to the bottom of the reproduce line, and whether it fits the window). The browser tests
import :data:`TABS` and :func:`one_screen`.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

WIDTHS = ((1400, 1000), (800, 1000))

# tab, sub-tab, main button, the result, the reproduce line, setup (selector -> value), wait for (selector, text)
TABS = [
    ("models", "Models", None, "#models-sample-btn", "#models-grid", "#models-reproduce",
     {"#models-steps input[type=number]": "10", "#models-n input[type=number]": "8"},
     ("#models-reproduce", "python -m lowdim_app")),
    ("memorization", "Memorization", None, "#mem-score-btn", "#mem-table", "#mem-reproduce",
     {"#mem-ngen input[type=number]": "4"},
     ("#mem-reproduce", "python -m lowdim_app")),
    ("steer", "Steer", None, "#steer-btn", "#steer-strip", "#steer-info",
     {"#steer-count input[type=number]": "4"}, ("#steer-info", "python -m lowdim_app")),
    ("phase", "Theory labs", "Phase transition", "#molrg-phase-run", "#molrg-phase-plot", "#molrg-phase-cli",
     {"#molrg-phase-trials input": "3"}, ("#molrg-phase-status", "done")),
    ("rank", "Theory labs", "Low-rank", "#molrg-rank-run", "#molrg-rank-plot", "#molrg-rank-cli",
     {"#molrg-rank-n input": "16", "#molrg-rank-d1 input": "2", "#molrg-rank-d2 input": "2",
      "#molrg-rank-N input": "100", "#molrg-rank-traj input": "2", "#molrg-rank-dae input": "20",
      "#molrg-rank-mlp input": "0"}, ("#molrg-rank-cli", "python -m lowdim_app")),
    ("gl", "Theory labs", "GL score", "#molrg-gl-run", "#molrg-gl-plot", "#molrg-gl-cli",
     {"#molrg-gl-steps input": "200", "#molrg-gl-neval input": "100"}, ("#molrg-gl-status", "done")),
    ("relu", "Theory labs", "Memorize/generalize", "#theory-relu-run", "#theory-relu-figure", "#theory-relu-cli",
     {"open:#theory-relu-advanced": "", "#theory-relu-steps input": "300"}, ("#theory-relu-status", "done")),
    ("mog", "Theory labs", "MoG via DDPM", "#theory-mog-run", "#theory-mog-figure", "#theory-mog-cli",
     {}, ("#theory-mog-status", "done")),
    ("molr", "Theory labs", "MoLR-MoG", "#theory-molr-run", "#theory-molr-figure", "#theory-molr-cli",
     {}, ("#theory-molr-status", "done")),
    ("edit", "Edit", None, "#edit-go-btn", "#edit-strip", "#edit-edit-info",
     {"#edit-steps input[type=number]": "20"}, ("#edit-edit-info", "python -m lowdim_app")),
]


def open_tab(page, tab: str, sub: str | None) -> None:
    page.get_by_role("tab", name=tab, exact=True).click()
    if sub:
        page.get_by_role("tab", name=sub, exact=True).click()


def _wait_text(page, selector: str, text: str, timeout: int = 480_000) -> None:
    page.wait_for_function(f"document.querySelector({selector!r})?.innerText.includes({text!r})", timeout=timeout)


def run_main_action(page, name, tab, sub, button, result, reproduce, setup, wait) -> None:
    open_tab(page, tab, sub)
    for selector, value in setup.items():
        if selector.startswith("open:"):   # an accordion holding the next inputs
            page.locator(selector[5:]).locator("button").first.click()
            continue
        page.locator(selector).first.fill(value)
    for selector in setup:
        if selector.startswith("open:"):   # folded again, as a visitor finds it
            page.locator(selector[5:]).locator("button").first.click()
    if name == "edit":
        page.locator("#edit-find-btn").click()
        _wait_text(page, "#edit-info", "numerical rank")
    page.locator(button).click()
    _wait_text(page, *wait)
    page.wait_for_timeout(1500)


def boxes(page, selectors) -> list[dict | None]:
    out = []
    for s in selectors:
        loc = page.locator(s).first
        out.append(loc.bounding_box() if loc.count() and loc.is_visible() else None)
    return out


CONTROLS = {"models": "#models-controls", "memorization": "#mem-controls", "steer": "#steer-controls",
            "phase": "#molrg-phase-controls", "rank": "#molrg-rank-controls", "gl": "#molrg-gl-controls",
            "relu": "#theory-relu-controls", "mog": "#theory-mog-controls", "molr": "#theory-molr-controls",
            "edit": "#edit-edit-controls"}


def one_screen(page, button: str, result: str, reproduce: str, height: int, controls: str | None = None) -> dict:
    """Scroll so that the ``controls`` (the inputs of the main action, when given), ``button``, ``result`` and
    ``reproduce`` are in view; their span and whether it fits in ``height``."""
    page.evaluate("window.scrollTo(0, 0)")
    wanted = (button, result, reproduce) + ((controls,) if controls else ())
    found = boxes(page, wanted)
    if any(b is None for b in found):
        return {"fits": False, "missing": [s for s, b in zip(wanted, found) if b is None]}
    top = min(b["y"] for b in found)
    bottom = max(b["y"] + b["height"] for b in found)
    page.evaluate(f"window.scrollTo(0, {max(0, top - 8)})")
    page.wait_for_timeout(300)
    return {"fits": bottom - top <= height, "span": round(bottom - top), "top": round(top)}


def tour(url: str, out: Path, only: list[str] | None = None, controls: bool = True) -> dict:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    report: dict = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                    args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": WIDTHS[0][0], "height": WIDTHS[0][1]})
        page.set_default_timeout(300_000)
        page.goto(url)
        page.wait_for_selector("#tabs", timeout=60_000)
        for name, tab, sub, button, result, reproduce, setup, wait in TABS:
            if only and name not in only:
                continue
            page.set_viewport_size({"width": WIDTHS[0][0], "height": WIDTHS[0][1]})
            print(name, "running", flush=True)
            try:
                run_main_action(page, name, tab, sub, button, result, reproduce, setup, wait)
                failed = None
            except Exception as err:   # keep going: the screenshot shows what the visitor saw
                failed = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
            for width, height in WIDTHS:
                page.set_viewport_size({"width": width, "height": height})
                page.wait_for_timeout(500)
                open_tab(page, tab, sub) if width == WIDTHS[0][0] else None
                # a lab's figure goes under its inputs below 1000 px: the Run button it sits under is the control
                lab = sub is not None and width < 1000
                check = one_screen(page, button, result, reproduce, height,
                                   CONTROLS.get(name) if controls and not lab else None)
                if failed:
                    check["failed"] = failed
                report[f"{width}_{name}"] = check
                page.screenshot(path=str(out / f"{width}_{name}.png"))
                print(name, width, check, flush=True)
        browser.close()
    (out / "tour.json").write_text(json.dumps(report, indent=1))
    return report


def main() -> None:
    out = Path(sys.argv[1])
    only = sys.argv[3].split(",") if len(sys.argv) > 3 else None
    if len(sys.argv) > 2 and sys.argv[2] != "-":
        tour(sys.argv[2], out, only)
        return
    from tests.conftest import start_app

    with start_app("tour_server.log") as url:
        tour(url, out, only)


if __name__ == "__main__":
    main()
