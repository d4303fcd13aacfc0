"""CLI of the MoLRG lab: phase, molrg-rank, gl-score (small settings)."""
import json

import pytest

from lowdim_app.cli import main


pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny tensor ops


def test_phase_cli_json_png(tmp_path, capsys):
    js, png, csv = tmp_path / "o.json", tmp_path / "o.png", tmp_path / "o.csv"
    rc = main(["phase", "--K", "2", "--n", "24", "--d", "2:4", "--N", "1:5", "--trials", "4", "--method", "cluster",
               "--seed", "0", "--json", str(js), "--png", str(png), "--csv", str(csv), "--quiet"])
    assert rc == 0
    obj = json.loads(js.read_text())
    assert obj["d_values"] == [2, 3, 4] and obj["N_values"] == [1, 2, 3, 4, 5]
    grid = obj["success_rate"]
    assert grid[0][0] == 0.0 and grid[0][2] == 1.0 and grid[2][4] == 1.0 and grid[2][2] == 0.0
    assert obj["settings"]["seed"] == 0 and obj["settings"]["K"] == 2
    assert png.read_bytes()[:4] == b"\x89PNG" and csv.read_text().startswith("d,N,")
    assert "d\\N" in capsys.readouterr().out


def test_phase_cli_errors(capsys):
    assert main(["phase", "--K", "2", "--method", "svd", "--quiet"]) == 2
    assert "svd" in capsys.readouterr().err
    assert main(["phase", "--K", "3", "--n", "10", "--d", "2:4", "--quiet"]) == 2
    assert main(["phase", "--trials", "0", "--quiet"]) == 2
    assert "error:" in capsys.readouterr().err


def test_molrg_rank_cli(tmp_path):
    js = tmp_path / "r.json"
    rc = main(["molrg-rank", "--n", "16", "--dims", "2,3", "--N", "100", "--steps", "8", "--trajectories", "2",
               "--dae-iters", "0", "--mlp-steps", "0", "--json", str(js), "--png", str(tmp_path / "r.png"), "--quiet"])
    assert rc == 0
    obj = json.loads(js.read_text())
    lo, hi = obj["bounds"]
    assert (lo, hi) == (2 / 16, 5 / 16)
    vals = obj["models"]["posterior mean (Lemma 1)"]
    assert len(vals) == 8 and all(lo - 1e-9 <= v <= hi + 1e-9 for v in vals)
    assert main(["molrg-rank", "--n", "8", "--dims", "6,6", "--quiet"]) == 2
    assert main(["molrg-rank", "--n", "16", "--dims", "2,3", "--mlp-width", "0", "--quiet"]) == 2


def test_rank_cli_mlp_recipe(tmp_path):
    """The MLP's width and budget reach the trainer; the curve is labelled with them."""
    js = tmp_path / "r.json"
    rc = main(["molrg-rank", "--n", "12", "--dims", "2,2", "--N", "50", "--steps", "6", "--trajectories", "2",
               "--dae-iters", "0", "--mlp-steps", "20", "--mlp-width", "16", "--mlp-batch", "8", "--json", str(js),
               "--quiet"])
    assert rc == 0
    models = json.loads(js.read_text())["models"]
    name = "MLP denoiser (width 16, 0.16 kimg)"
    assert name in models and len(models[name]) == 6 and all(0 < v <= 1 for v in models[name])


def test_gl_score_cli(tmp_path):
    js = tmp_path / "g.json"
    rc = main(["gl-score", "--K", "2", "--n", "12", "--d", "2:3", "--ratios", "1,4", "--steps", "30",
               "--n-eval", "40", "--width", "32", "--json", str(js), "--png", str(tmp_path / "g.png"), "--quiet"])
    assert rc == 0
    rows = json.loads(js.read_text())["rows"]
    assert [(r["d"], r["N_k"]) for r in rows] == [(2, 2), (2, 8), (3, 3), (3, 12)]
    assert all(r["gl"] > 0 for r in rows)
    assert main(["gl-score", "--ratios", "0", "--quiet"]) == 2
