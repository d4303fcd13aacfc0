"""CLI commands relu-dae, mog-ddpm, molr-mog (small settings)."""
import json

import pytest

from lowdim_app.cli import main


pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny tensor ops


def test_mog_ddpm_cli(tmp_path, capsys):
    j, p = tmp_path / "m.json", tmp_path / "m.png"
    assert main(["mog-ddpm", "--d", "6", "--iters-large", "15", "--iters-small", "8", "--n-batch", "1024",
                 "--seed", "1", "--json", str(j), "--png", str(p)]) == 0
    out = capsys.readouterr().out
    assert "python -m lowdim_app mog-ddpm --d 6" in out and "--seed 1" in out
    n = json.loads(j.read_text())["numbers"]
    assert n["large_noise"]["lemma8_bound_holds_all_steps"] is True
    assert p.read_bytes()[:4] == b"\x89PNG"


def test_relu_and_molr_cli(tmp_path):
    j = tmp_path / "r.json"
    assert main(["relu-dae", "--data", "mog", "--d", "16", "--n-gen", "200", "--steps", "200", "--no-sample",
                 "--no-hybrid", "--json", str(j), "--png", str(tmp_path / "r.png")]) == 0
    n = json.loads(j.read_text())["numbers"]
    assert {"memorize", "generalize"} <= set(n)
    j = tmp_path / "q.json"
    assert main(["molr-mog", "--steps", "20", "--n-samples", "50", "--sample-steps", "10", "--json", str(j),
                 "--png", str(tmp_path / "q.png")]) == 0
    assert json.loads(j.read_text())["numbers"]["param_counts"]["moe_gaussian"] > 0


def test_bad_input_exit_2(capsys):
    assert main(["mog-ddpm", "--t-small", "5", "--t-large", "1"]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["relu-dae", "--p", "0"]) == 2
    assert main(["molr-mog", "--data", "cifar"]) == 2
