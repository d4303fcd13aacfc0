"""Real browser: the Theory labs, Phase-transition lab fills its heat map (default Fig. 4 settings, clustering)."""


def test_phase_lab_in_browser(page, artifacts):
    page.get_by_role("tab", name="Theory labs").click()
    page.get_by_role("tab", name="Phase transition").click()
    page.locator("#molrg-phase-trials input").fill("5")
    page.locator("#molrg-phase-run").click()
    page.wait_for_function("document.querySelector('#molrg-phase-status')?.innerText.includes('done: 98 cells')",
                           timeout=180_000)
    page.locator("#molrg-phase-plot img, #molrg-phase-plot canvas, #molrg-phase-plot svg").first.wait_for(state="visible")
    page.screenshot(path=str(artifacts / "phase_lab.png"), full_page=True)


def test_theory_labs_in_browser(page, artifacts):
    page.get_by_role("tab", name="Theory labs").click()
    for tab, prefix in (("Memorize vs generalize", "relu"), ("Gaussian mixtures via DDPM", "mog"),
                        ("MoLR-MoG experts", "molr")):
        page.get_by_role("tab", name=tab).click()
        page.locator(f"#theory-{prefix}-run").click()
        page.wait_for_function(f"document.querySelector('#theory-{prefix}-status')?.innerText.toLowerCase().includes('done')",
                               timeout=240_000)
        page.wait_for_timeout(500)
        page.screenshot(path=str(artifacts / f"theory_{prefix}.png"), full_page=True)
