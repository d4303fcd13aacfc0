"""CLI commands relu-dae, mog-ddpm, molr-mog (small settings), generated from the features."""
import json

import pytest

from lowdim_app.cli import build_parser, main
from lowdim_app.features import mog_ddpm, molr_mog, relu_dae
from lowdim_app.features.settings import from_args

pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny tensor ops


def test_mog_ddpm_cli(tmp_path, capsys):
    j, p = tmp_path / "m.json", tmp_path / "m.png"
    assert main(["mog-ddpm", "--d", "6", "--iters-large", "15", "--iters-small", "8", "--n-batch", "1024",
                 "--seed", "1", "--json", str(j), "--png", str(p)]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "python -m lowdim_app mog-ddpm --d 6" in out and "--seed 1" in out
    assert "Lemma 8 bound holds: True" in out and "done in" in out
    assert "[mog-ddpm] stage 1/3: large noise: GD vs power iteration" in captured.err
    saved = json.loads(j.read_text())
    assert saved["command"] == "mog-ddpm" and saved["settings"]["iters_large"] == 15
    n = saved["numbers"]
    assert n["large_noise"]["lemma8_bound_holds_all_steps"] is True
    assert p.read_bytes()[:4] == b"\x89PNG"


def test_relu_and_molr_cli(tmp_path):
    j = tmp_path / "r.json"
    assert main(["relu-dae", "--data", "mog", "--d", "16", "--n-gen", "200", "--steps", "200", "--no-sample",
                 "--no-hybrid", "--json", str(j), "--png", str(tmp_path / "r.png")]) == 0
    n = json.loads(j.read_text())["numbers"]
    assert {"memorize", "generalize"} <= set(n) and "hybrid" not in n and "sampling" not in n
    assert n["sizes"] == {"n_mem": 4, "n_gen": 200, "n_dup": 1}
    j = tmp_path / "q.json"
    assert main(["molr-mog", "--steps", "20", "--n-samples", "50", "--sample-steps", "10", "--json", str(j),
                 "--png", str(tmp_path / "q.png")]) == 0
    assert json.loads(j.read_text())["numbers"]["param_counts"]["moe_gaussian"] > 0


def test_bad_input_exit_2(capsys):
    assert main(["mog-ddpm", "--t-small", "5", "--t-large", "1"]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["relu-dae", "--p", "0"]) == 2
    assert main(["molr-mog", "--data", "cifar"]) == 2


EVERY_FIELD = {   # a valid non-default value for every setting of each lab
    relu_dae.ReluDaeSettings: dict(data="mog", p=7, sigma=0.3, lam=0.002, tied=False, n_mem=6, n_gen=900,
                                   pick="random", hybrid=False, n_dup=3, copies=17, d=12, mu=4.5, decay=0.6,
                                   steps=77, lr=0.005, batch=64, sample=False, levels=4, level_steps=12,
                                   sigma_max=1.5, sigma_min=0.05, n_samples=5, seed=9),
    mog_ddpm.MogDdpmSettings: dict(d=5, mu_norm=3.5, t_large=2.0, t_small=0.1, eta_large=0.7, eta_small=0.3,
                                   iters_large=11, iters_small=12, init_norm=0.4, n_batch=512, K=3, seed=4),
    molr_mog.MolrMogSettings: dict(data="digits", K=4, D=20, d=3, n_modes=2, radius=1.5, spread=0.2, steps=9,
                                   batch=32, lr=0.01, mlp_hidden=16, mlp_lr=0.001, gamma_min=0.1, gamma_max=0.9,
                                   n_samples=7, sample_steps=5, seed=3),
}


@pytest.mark.parametrize("cls", list(EVERY_FIELD), ids=lambda c: c.COMMAND)
def test_reproduce_line_parses_back_to_the_same_settings(cls):
    """The printed command keeps every field: parsing it with the real CLI parser gives the settings back."""
    import dataclasses
    import shlex

    values = EVERY_FIELD[cls]
    assert set(values) == {f.name for f in dataclasses.fields(cls)}
    settings = cls(**values)
    assert all(getattr(settings, f.name) != f.default for f in dataclasses.fields(cls))
    line = settings.to_cli(extra="--json out.json --png out.png")
    argv = shlex.split(line)
    assert argv[:3] == ["python", "-m", "lowdim_app"]
    args = build_parser().parse_args(argv[3:])
    assert from_args(cls, args) == settings and args.json == "out.json" and args.png == "out.png"
