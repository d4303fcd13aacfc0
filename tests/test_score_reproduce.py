"""The Memorization tab's reproduce lines, run as is in a shell next to copies of the uploaded files,
give the same scores, verdicts and calibration as the tab (score and calibrate)."""
import csv
import glob
import json
import shutil

import numpy as np
import pytest
from gradio_client import handle_file

from tests.conftest import run_reproduce_line, serve_blocks

EX = sorted(glob.glob("assets/examples/digit_*.png"))


@pytest.fixture(scope="module")
def tab():
    from lowdim_app.ui.memorization_tab import build

    with serve_blocks(build) as c:
        yield c


@pytest.fixture(scope="module")
def duplicated_pngs(tmp_path_factory):
    """Two of digits-dup's duplicated training digits as PNG files (memorized by construction)."""
    from lowdim_app.data.digits import load_digits_split
    from lowdim_app.data.images import to_pil
    from lowdim_app.diffusion import load_model

    folder = tmp_path_factory.mktemp("dup")
    idx = load_model("digits-dup").card["data"]["duplicated_index"][:2]
    paths = []
    for i, im in zip(idx, to_pil(load_digits_split().train_images[idx])):
        paths.append(folder / f"dup {i}.png")     # a space: the line must quote it
        im.save(paths[-1])
    return [str(p) for p in paths]


def _copy(paths, folder):
    for p in paths:
        shutil.copy(p, folder)


def _csv_rows(path):
    with open(path) as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "score", "spread", "verdict", "implied_fpr", "nearest_train_rms", "reason"]
    return rows[1:]


def _same_table(ui_table, cli_rows):
    assert [r[0] for r in cli_rows] == [r[0] for r in ui_table]
    assert [r[3] for r in cli_rows] == [r[3] for r in ui_table]
    assert np.allclose([float(r[1]) for r in cli_rows], [r[1] for r in ui_table], rtol=1e-5, atol=0)
    assert np.allclose([float(r[2]) for r in cli_rows], [r[2] for r in ui_table], rtol=1e-3, atol=1e-9)
    assert np.allclose([float(r[4]) for r in cli_rows], [r[4] for r in ui_table], atol=1e-9)


def test_score_line_with_uploads_and_generated_samples(tab, duplicated_pngs, tmp_path):
    uploads = [duplicated_pngs[0], EX[0], EX[1]]
    table, _, _, summary, _, repro = tab.predict([handle_file(p) for p in uploads], "digits-dup", "", 50, "denoising_error", 1, 2, 3,
                                                 api_name="/score")
    assert "--n-generate 2 --seed 3" in repro and "'dup " in repro
    assert [r[3] for r in table["data"]][:3] == ["memorized", "generalized", "generalized"]
    _copy(uploads, tmp_path)
    run_reproduce_line(repro, tmp_path)
    _same_table(table["data"], _csv_rows(tmp_path / "scores.csv"))


def test_score_line_with_an_uploaded_calibration(tab, duplicated_pngs, tmp_path):
    cal = tmp_path / "src" / "my calibration.json"
    cal.parent.mkdir()
    shutil.copy("assets/calibrations/digits-dup.json", cal)
    uploads = [EX[2], duplicated_pngs[1]]
    # the t / metric / noise fields are ignored when a calibration file is uploaded: its settings rule
    table, _, _, summary, _, repro = tab.predict([handle_file(p) for p in uploads], "digits-dup", "", 77, "entropy", 3,
                                                 0, 0, handle_file(str(cal)), api_name="/score")
    assert "uploaded calibration file my calibration.json" in summary
    assert "--calibration 'my calibration.json'" in repro and "--t" not in repro and "--metric" not in repro
    assert [r[3] for r in table["data"]] == ["generalized", "memorized"]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _copy(uploads + [str(cal)], run_dir)
    run_reproduce_line(repro, run_dir)
    _same_table(table["data"], _csv_rows(run_dir / "scores.csv"))


def test_calibrate_line_gives_the_same_calibration(tab, duplicated_pngs, tmp_path):
    mem, gen = duplicated_pngs, EX[:3]
    _, text, cal_path = tab.predict([handle_file(p) for p in mem], [handle_file(p) for p in gen], "digits-dup", "", 60,
                                    "max_min", 0.25, api_name="/calibrate")
    assert "--memorized 'dup " in text and all(f in text for f in ("--t 60", "--metric max_min", "--target-fpr 0.25"))
    assert "--out digits-dup_calibration.json" in text
    _copy(mem + gen, tmp_path)
    run_reproduce_line(text, tmp_path)
    ui, cli = json.loads(open(cal_path).read()), json.loads((tmp_path / "digits-dup_calibration.json").read_text())
    assert set(ui) == set(cli)
    assert (ui["t"], ui["metric"], ui["target_fpr"]) == (60, "max_min", 0.25)
    for key in ("model_id", "layer", "t", "metric", "target_fpr", "direction", "fpr", "tpr", "auroc", "tpr_at_1pct_fpr", "notes",
                "roc_fpr", "roc_tpr"):
        assert cli[key] == ui[key], key
    assert cli["threshold"] == pytest.approx(ui["threshold"], rel=1e-6)
    assert np.allclose(cli["memorized_scores"], ui["memorized_scores"], rtol=1e-6)
    assert np.allclose(cli["generalized_scores"], ui["generalized_scores"], rtol=1e-6)
