"""CLI of the MoLRG labs: phase, molrg-rank, gl-score (small settings), generated from the features."""
import argparse
import json
import shlex

import pytest

from lowdim_app.cli import main
from lowdim_app.features.gl_score import FEATURE as GL, GLSettings
from lowdim_app.features.molrg_rank import FEATURE as RANK, RankSettings
from lowdim_app.features.phase import FEATURE as PHASE, PhaseSettings
from lowdim_app.features.settings import add_arguments, from_args

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
    assert main(["molrg-rank", "--dims", "2,2,2,2", "--quiet"]) == 2          # at most 3 components


def test_rank_cli_mlp_recipe(tmp_path):
    """The MLP's width, budget and parameterization reach the trainer; the curve is labelled with them."""
    js = tmp_path / "r.json"
    rc = main(["molrg-rank", "--n", "12", "--dims", "2,2", "--N", "50", "--steps", "6", "--trajectories", "2",
               "--dae-iters", "0", "--mlp-steps", "20", "--mlp-width", "16", "--mlp-batch", "8", "--json", str(js),
               "--quiet"])
    assert rc == 0
    models = json.loads(js.read_text())["models"]
    name = "MLP denoiser (predicts x0, width 16, 0.16 kimg)"
    assert name in models and len(models[name]) == 6 and all(0 < v <= 1 for v in models[name])
    rc = main(["molrg-rank", "--n", "12", "--dims", "2,2", "--N", "50", "--steps", "6", "--trajectories", "2",
               "--dae-iters", "0", "--mlp-steps", "20", "--mlp-width", "16", "--mlp-batch", "8", "--mlp-param", "edm",
               "--json", str(js), "--quiet"])
    assert rc == 0 and "MLP denoiser (EDM preconditioning, width 16, 0.16 kimg)" in json.loads(js.read_text())["models"]


def test_gl_score_cli(tmp_path, capsys):
    js, csv = tmp_path / "g.json", tmp_path / "g.csv"
    rc = main(["gl-score", "--K", "2", "--n", "12", "--d", "2:3", "--ratios", "1,4", "--steps", "30",
               "--n-eval", "40", "--width", "32", "--json", str(js), "--csv", str(csv), "--png", str(tmp_path / "g.png"),
               "--quiet"])
    assert rc == 0
    rows = json.loads(js.read_text())["rows"]
    assert [(r["d"], r["N_k"]) for r in rows] == [(2, 2), (2, 8), (3, 3), (3, 12)]
    assert all(r["gl"] > 0 for r in rows)
    table = csv.read_text().splitlines()
    assert table[0] == "d_k,N_k,ratio,gl_score,train_loss"
    assert [float(line.split(",")[3]) for line in table[1:]] == pytest.approx([r["gl"] for r in rows], abs=1e-5)
    assert "d_k,N_k,ratio,gl_score" in capsys.readouterr().out
    assert main(["gl-score", "--ratios", "0", "--quiet"]) == 2
    assert main(["gl-score", "--d", "10", "--ratios", "3000", "--quiet"]) == 2     # N_k = 30000 > 20000


@pytest.mark.parametrize("settings", [
    PhaseSettings(K=1, n=30, d=(2, 5), N=(3, 4, 5), trials=7, method="dae", noise=0.25, norm="fro", threshold=0.3,
                  balanced=False, cluster_init="random", restarts=3, cluster_iters=9, dae_variant="softmax",
                  dae_preset="paper", dae_iters=11, dae_lr=0.125, dae_batch=0, chunk="cell", seed=5),
    RankSettings(n=20, dims=(3,), N=77, steps=7, trajectories=3, eta=0.9, dae_iters=0, mlp_steps=5, mlp_width=9,
                 mlp_depth=2, mlp_batch=3, mlp_lr=0.01, p_mean=-0.5, p_std=1.25, seed=9),
    GLSettings(K=1, n=20, d=(2, 4), ratios=(0.5, 3.0), steps=7, lr=0.01, batch=5, width=9, depth=2, p_mean=-3.5,
               p_std=0.75, n_eval=11, sample_steps=5, seed=4),
])
def test_reproduce_line_carries_every_setting(settings):
    """Settings -> ``to_cli()`` -> the command's parser -> the same settings (no field dropped)."""
    feature = {"phase": PHASE, "molrg-rank": RANK, "gl-score": GL}[settings.COMMAND]
    line = settings.to_cli(extra="--json out.json --png out.png")
    parser = argparse.ArgumentParser()
    add_arguments(parser, feature.Settings)
    feature.add_output_arguments(parser)
    words = shlex.split(line)
    assert words[:4] == ["python", "-m", "lowdim_app", settings.COMMAND]
    args = parser.parse_args(words[4:])
    assert from_args(feature.Settings, args) == settings
    assert (args.json, args.png) == ("out.json", "out.png")
