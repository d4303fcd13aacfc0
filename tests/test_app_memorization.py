"""The Memorization tab through its API and in the real browser."""
import glob
from pathlib import Path

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from tests.conftest import wait_uploaded

EX = sorted(glob.glob("assets/examples/digit_*.png"))


def test_score_endpoint(client):
    table, csv_path, hist, summary, nn, repro = client.predict([handle_file(p) for p in EX[:2]], "digits-dup", "", 50,
                                                               "denoising_error", 1, 2, 0, api_name="/score")
    assert len(table["data"]) == 4 and "memorized if score <" in summary and csv_path.endswith(".csv")
    assert len(nn) == 4
    rows = open(csv_path).read().splitlines()
    assert rows[0] == "path,score,spread,verdict,implied_fpr,nearest_train_rms,reason" and len(rows) == 5 and rows[1].startswith(EX[0].split("/")[-1] + ",")
    assert ("python -m lowdim_app score digit_0_test3.png digit_2_test0.png --model digits-dup --t 50 --metric denoising_error "
            "--noise-draws 1 --no-invert --n-generate 2 --seed 0 --csv scores.csv") in repro


def test_score_with_an_uploaded_calibration_file(client, tmp_path):
    cal = "assets/calibrations/digits-dup.json"
    table, _, _, summary, _, _ = client.predict([handle_file(EX[0])], "digits-dup", "", 50, "std", 1, 0, 0,
                                                handle_file(cal), api_name="/score")
    assert len(table["data"]) == 1 and "uploaded calibration file" in summary
    with pytest.raises(AppError, match="this calibration is for digits-dup, not digits-mem"):
        client.predict([handle_file(EX[0])], "digits-mem", "", 50, "std", 1, 0, 0, handle_file(cal), api_name="/score")
    with pytest.raises(AppError, match=r"the calibration file's detector \(denoising_error\) reads no layer; clear"):
        client.predict([handle_file(EX[0])], "digits-dup", "mid_block", 50, "std", 1, 0, 0, handle_file(cal),
                       api_name="/score")
    (tmp_path / "bad.json").write_text('{"threshold": 1}')
    with pytest.raises(AppError, match="not a LowDim Lab calibration file"):
        client.predict([handle_file(EX[0])], "digits-dup", "", 50, "std", 1, 0, 0, handle_file(str(tmp_path / "bad.json")),
                       api_name="/score")


def test_score_bad_input(client):
    with pytest.raises(AppError, match="nothing to score: upload images, or set"):
        client.predict(None, "digits-dup", "", 50, "std", 1, 0, 0, api_name="/score")
    with pytest.raises(AppError, match="timestep t must be between"):
        client.predict(None, "digits-dup", "", 5000, "std", 1, 1, 0, api_name="/score")
    with pytest.raises(AppError, match="no module named"):
        client.predict([handle_file(EX[0])], "digits-dup", "no.such.layer", 50, "std", 1, 0, 0, api_name="/score")


def test_calibrate_bad_input(client):
    with pytest.raises(AppError, match="needs at least 99 reference images, got 2"):   # one-class: too few
        client.predict(None, [handle_file(p) for p in EX[:2]], "digits-dup", "", 50, "std", 0.01, api_name="/calibrate")
    with pytest.raises(AppError, match="give known-generalized"):
        client.predict([handle_file(EX[0])], None, "digits-dup", "", 50, "std", 0.01, api_name="/calibrate")
    with pytest.raises(AppError, match="reference generations need a text-to-image model"):
        client.predict(None, None, "digits-dup", "", 50, "std", 0.05, 20, api_name="/calibrate")
    with pytest.raises(AppError, match="need at least 2 generalized"):
        client.predict([handle_file(EX[0])], [handle_file(EX[1])], "digits-dup", "", 50, "std", 0.01,
                       api_name="/calibrate")
    with pytest.raises(AppError, match="target FPR must be between 0 and 0.5"):
        client.predict([handle_file(EX[0])], [handle_file(p) for p in EX[1:3]], "digits-dup", "", 50, "std", 0.9,
                       api_name="/calibrate")


def test_memorization_tab_in_browser(page, artifacts):
    page.get_by_role("tab", name="Memorization").click()
    page.locator("#mem-ngen input[type=number]").fill("8")
    page.locator("#mem-ngen input[type=number]").press("Enter")
    page.locator("#mem-score-btn").click()
    page.wait_for_function("document.querySelector('#mem-summary')?.innerText.includes('flagged')", timeout=180_000)
    page.locator("#mem-hist img").wait_for(state="visible")
    assert "python -m lowdim_app score --model digits-dup" in page.locator("#mem-reproduce").inner_text()
    assert "--n-generate 8 --seed 0" in page.locator("#mem-reproduce").inner_text()
    page.screenshot(path=str(artifacts / "memorization_tab.png"), full_page=True)


def test_memorizing_model_example_flags_its_samples(page, artifacts):
    """The digits-mem example scores 16 fresh samples of the memorizing model and flags some of them."""
    page.get_by_role("tab", name="Memorization").click()
    page.locator("#mem-examples").get_by_text("digits-mem").first.click()
    page.wait_for_function("document.querySelector('#mem-reproduce')?.innerText.includes('--model digits-mem')",
                           timeout=180_000)
    import re

    flagged = re.search(r"(\d+) of (\d+) images flagged", page.locator("#mem-summary").inner_text())
    assert flagged and int(flagged.group(2)) == 16 and int(flagged.group(1)) >= 1
    page.screenshot(path=str(artifacts / "memorization_example.png"), full_page=False)


def test_one_class_calibration_offered_and_used(client, tmp_path):
    """A model without a matching calibration gets scores only and the offer; a one-class calibration from
    known non-training images states its promise, and scoring with it gives verdicts."""
    import json

    from lowdim_app.data.digits import load_digits_split
    from lowdim_app.data.images import to_pil

    _, _, _, summary, _, _ = client.predict([handle_file(EX[0])], "digits-dup", "mid_block", 50, "std", 1, 0, 0,
                                            api_name="/score")
    assert "scores only" in summary and "one-class" in summary
    refs = []
    for i, img in enumerate(to_pil(load_digits_split().test_images[:24])):
        img.save(tmp_path / f"ref{i}.png")
        refs.append(handle_file(str(tmp_path / f"ref{i}.png")))
    _, text, cal_path = client.predict(None, refs, "digits-dup", "mid_block", 50, "std", 0.05, api_name="/calibrate")
    assert "One-class calibration" in text and "promised false-positive rate" in text and "--target-fpr 0.05" in text
    cal = json.loads(open(cal_path).read())
    assert cal["kind"] == "one-class" and cal["fpr_promise"]["n_reference"] == 24 and cal["layer"] == "mid_block"
    table, _, _, summary, _, _ = client.predict([handle_file(EX[0])], "digits-dup", "", 50, "std", 1, 0, 0,
                                                handle_file(cal_path), api_name="/score")
    assert "one-class: promised false-positive rate" in summary and table["data"][0][3] != "n/a"


def test_one_class_calibration_in_browser(page, artifacts, tmp_path):
    """The Calibrate panel with no memorized set: 24 known non-training digits at a 5 % target give a one-class
    calibration with its promise, and the fitted file lands in the score's calibration upload."""
    from lowdim_app.data.digits import load_digits_split
    from lowdim_app.data.images import to_pil

    refs = []
    for i, img in enumerate(to_pil(load_digits_split().test_images[:24])):
        img.save(tmp_path / f"ref{i:02d}.png")
        refs.append(str(tmp_path / f"ref{i:02d}.png"))
    page.get_by_role("tab", name="Memorization").click()
    page.locator("#cal-panel").get_by_text("Calibrate a threshold from known images").click()
    page.locator("#cal-gen input[type=file]").set_input_files(refs)
    wait_uploaded(page, "#cal-gen", [Path(r).name for r in refs])
    page.locator("#cal-fpr input").fill("0.05")
    page.locator("#cal-btn").click()
    page.wait_for_function("document.querySelector('#cal-text')?.innerText.includes('One-class calibration')",
                           timeout=180_000)
    assert "promised false-positive rate" in page.locator("#cal-text").inner_text()
    page.get_by_text("Layer, timestep, metric").click()          # the score's calibration upload holds the fit
    page.wait_for_function("document.querySelector('#mem-cal-upload')?.innerText.includes('digits-dup_calibration')",
                           timeout=60_000)
    page.locator("#cal-panel").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "memorization_one_class.png"), full_page=True)
