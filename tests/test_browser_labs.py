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


def test_cancel_in_browser_stops_the_server_run(page, artifacts):
    """Cancel during the GL lab's first training (12000 steps): the server's loop stops and logs it."""
    import time

    log = artifacts / "server.log"
    before = log.read_text().count("gl_score: run stopped by Cancel")
    page.get_by_role("tab", name="Theory labs").click()
    page.get_by_role("tab", name="Generalization score").click()
    page.locator("#molrg-gl-run").click()
    page.wait_for_timeout(3000)
    page.locator("#molrg-gl-cancel").click()
    deadline = time.time() + 60
    while time.time() < deadline and log.read_text().count("gl_score: run stopped by Cancel") == before:
        time.sleep(0.5)
    assert log.read_text().count("gl_score: run stopped by Cancel") == before + 1
    assert "done" not in page.locator("#molrg-gl-status").inner_text()
    page.screenshot(path=str(artifacts / "gl_cancelled.png"), full_page=True)
