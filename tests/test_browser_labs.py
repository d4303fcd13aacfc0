"""Real browser: the Theory labs, Phase-transition lab fills its heat map (default Fig. 4 settings, clustering)."""


def test_phase_lab_in_browser(page, artifacts):
    page.get_by_role("tab", name="Theory labs").click()
    page.get_by_role("tab", name="Phase transition").click()
    page.locator("#molrg-phase-trials input").fill("5")
    page.locator("#molrg-phase-run").click()
    page.wait_for_function("document.querySelector('#molrg-phase-status')?.innerText.includes('done: 98 cells')",
                           timeout=180_000)
    page.locator("#molrg-phase-plot img").first.wait_for(state="visible")   # a matplotlib figure
    page.screenshot(path=str(artifacts / "phase_lab.png"), full_page=True)


def test_theory_labs_in_browser(page, artifacts):
    page.get_by_role("tab", name="Theory labs").click()
    for tab, prefix in (("Memorize/generalize", "relu"), ("MoG via DDPM", "mog"),
                        ("MoLR-MoG", "molr")):
        page.get_by_role("tab", name=tab).click()
        page.locator(f"#theory-{prefix}-run").click()
        page.wait_for_function(f"document.querySelector('#theory-{prefix}-status')?.innerText.toLowerCase().includes('done')",
                               timeout=240_000)
        page.wait_for_timeout(500)
        page.screenshot(path=str(artifacts / f"theory_{prefix}.png"), full_page=True)


def test_cancel_in_browser_stops_the_server_run(page, artifacts):
    """Cancel during the GL lab's first training (12000 steps): the server's loop stops and logs it."""
    from tests.conftest import cancel_in_browser

    page.get_by_role("tab", name="Theory labs").click()
    page.get_by_role("tab", name="GL score").click()
    page.locator("#molrg-gl-steps input").fill("12000")
    assert cancel_in_browser(page, artifacts / "server.log", "gl_score", "#molrg-gl-run", "#molrg-gl-cancel") == 1
    assert "done" not in page.locator("#molrg-gl-status").inner_text()
    page.screenshot(path=str(artifacts / "gl_cancelled.png"), full_page=True)


def test_rank_lab_in_browser_streams_and_shows_its_files(page, artifacts):
    """Low-rank denoiser lab with a small budget: the curves arrive, then the CSV/PNG/JSON files and the
    reproduce line (which names out.json and out.png)."""
    page.get_by_role("tab", name="Theory labs").click()
    page.get_by_role("tab", name="Low-rank").click()
    for name, value in (("n", "16"), ("d1", "2"), ("d2", "2"), ("N", "100"), ("traj", "2"), ("dae", "20"),
                        ("mlp", "0")):
        page.locator(f"#molrg-rank-{name} input").fill(value)
    page.locator("#molrg-rank-run").click()
    page.wait_for_function("document.querySelector('#molrg-rank-cli')?.innerText.includes('molrg-rank --n 16')",
                           timeout=120_000)
    for kind in ("csv", "png", "json"):
        page.locator(f"#molrg-rank-{kind} a").first.wait_for(state="visible", timeout=60_000)
    cli = page.locator("#molrg-rank-cli").inner_text()
    assert "--dims 2,2" in cli and "--json out.json --png out.png" in cli
    page.locator("#molrg-rank-plot img").first.wait_for(state="visible")
    page.screenshot(path=str(artifacts / "rank_lab.png"), full_page=True)


def test_lab_progress_has_words_before_the_result(page, artifacts):
    """Progress from the first second: the labs' stage messages reach the browser's progress bar while the
    run is still going (the worker thread runs in the event's context, where gr.Progress finds its event;
    without it only a bare timer showed). bench/ui_progress.py measures the seconds."""
    page.get_by_role("tab", name="Theory labs").click()
    page.get_by_role("tab", name="MoLR-MoG").click()
    page.locator("#theory-molr-run").click()
    handle = page.wait_for_function(
        "() => { const e = [...document.querySelectorAll('.progress-level-inner')].find(x => x.offsetParent "
        "&& /stage 1\\/3/.test(x.innerText)); return e ? e.innerText : false }", timeout=60_000, polling=50)
    assert "training and sampling" in handle.json_value()
    assert "done" not in page.locator("#theory-molr-status").inner_text().lower()
    page.wait_for_function("document.querySelector('#theory-molr-status')?.innerText.toLowerCase().includes('done')",
                           timeout=240_000)


def test_lab_examples_run_once_then_show_the_stored_result(page, artifacts):
    """A lab example fills the inputs, runs once (lazily cached) and shows its result and reproduce line;
    after a reload the same example shows the stored result again."""
    page.get_by_role("tab", name="Theory labs").click()
    page.get_by_role("tab", name="Phase transition").click()
    example = page.locator("#molrg-phase-examples").get_by_text("SVD, one subspace (K = 1)")
    example.click()
    page.wait_for_function("document.querySelector('#molrg-phase-status')?.innerText.includes('done')",
                           timeout=180_000)
    assert page.locator("#molrg-phase-K input").input_value() == "1"
    assert "--method svd" in page.locator("#molrg-phase-cli").inner_text()
    page.screenshot(path=str(artifacts / "phase_example.png"), full_page=True)
    page.reload()
    page.wait_for_selector("#tabs", timeout=60_000)
    page.get_by_role("tab", name="Theory labs").click()
    page.get_by_role("tab", name="Phase transition").click()
    page.locator("#molrg-phase-examples").get_by_text("SVD, one subspace (K = 1)").click()
    page.wait_for_function("document.querySelector('#molrg-phase-status')?.innerText.includes('done')",
                           timeout=60_000)
    assert "--method svd" in page.locator("#molrg-phase-cli").inner_text()
