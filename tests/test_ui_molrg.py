"""MoLRG labs through gradio_client on a standalone Blocks with lowdim_app.ui.molrg.build(); each lab's
reproduce line, run verbatim in a shell, gives the numbers the UI showed."""
import csv as csv_module
import json
import os
import re
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402

gr = pytest.importorskip("gradio")


@pytest.fixture(scope="module")
def molrg_client(one_thread):
    from lowdim_app.ui.molrg import build
    from tests.conftest import serve_blocks

    with serve_blocks(build) as c:
        yield c


def reproduce_json(markdown: str, folder: Path) -> dict:
    """Run the UI's ``Reproduce: `...` `` line verbatim in ``folder``; the JSON it wrote (it names out.json)."""
    from tests.conftest import run_reproduce_line

    assert re.fullmatch(r"Reproduce: `python -m lowdim_app [^`]+ --json out.json --png out.png`", markdown.strip())
    run_reproduce_line(markdown, folder)
    assert (folder / "out.png").read_bytes()[:4] == b"\x89PNG"
    return json.loads((folder / "out.json").read_text())


def _without_timing(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k != "wall_s"}


def test_phase_api_and_reproduce_line(molrg_client, tmp_path):
    out = molrg_client.predict(24, 1, 2, 3, 1, 4, 3, 0.0, "svd", "hardmax", 0, api_name="/phase")
    plot, status, table, csv, png, js, cli = out
    assert status.startswith("done") and "python -m lowdim_app phase --K 1 --n 24 --d 2,3 --N 1:4 --trials 3" in cli
    lines = open(csv).read().splitlines()
    assert lines[0].startswith("d,N,success_rate") and len(lines) == 1 + 8
    rate = {(int(r.split(",")[0]), int(r.split(",")[1])): float(r.split(",")[2]) for r in lines[1:]}
    assert rate[(3, 2)] == 0.0 and rate[(3, 4)] == 1.0
    assert open(png, "rb").read(4) == b"\x89PNG"
    ui = json.loads(open(js).read())
    assert ui["success_rate"] == [[rate[(d, N)] for N in range(1, 5)] for d in (2, 3)]
    assert _without_timing(reproduce_json(cli, tmp_path)) == _without_timing(ui)


@pytest.mark.parametrize("args, message", [
    ((24, 2, 2, 3, 1, 4, 3, 0.0, "svd", "hardmax", 0), "svd"),                          # svd needs K = 1
    ((24, 1, 2, 3, 1, 4, 10**9, 0.0, "svd", "hardmax", 0), "trials must be between"),   # declared bound
    ((24, 1, 4, 3, 1, 4, 3, 0.0, "svd", "hardmax", 0), "must not exceed"),              # empty range
    ((24, 1, 2, 3, 1, 4, 3, 0.0, "nope", "hardmax", 0), "nope"),                        # unknown method
    ((48, 2, 1, 8, 1, 20, 200, 0.0, "cluster", "hardmax", 0), "web app"),               # 32000 problems
])
def test_phase_api_rejects_bad_input(molrg_client, args, message):
    with pytest.raises(Exception) as ei:
        molrg_client.predict(*args, api_name="/phase")
    assert message in str(ei.value) and "Unexpected" not in str(ei.value)


def test_ui_bounds_are_the_declared_ones():
    """The labs take their limits from the settings: what the CLI accepts the UI accepts (up to the
    phase lab's declared web budget), and a rejection carries the settings' own message."""
    from lowdim_app.errors import UserError
    from lowdim_app.features.gl_score import GLSettings
    from lowdim_app.features.molrg_rank import RankSettings
    from lowdim_app.features.phase import WEB_MAX_PROBLEMS, PhaseSettings
    from lowdim_app.ui.molrg import gl_settings, phase_settings, rank_settings

    s = phase_settings(256, 1, 1, 64, 1, 2, 150, 1.0, "svd", "hardmax", 0)   # the declared maxima
    assert s == PhaseSettings(K=1, n=256, d=tuple(range(1, 65)), N=(1, 2), trials=150, noise=1.0, method="svd")
    assert s.problems <= WEB_MAX_PROBLEMS
    assert rank_settings(256, 128, 128, 20000, 100, 20000, 50000, 0).dims == (128, 128)
    assert rank_settings(16, 3, 0, 100, 2, 0, 0, 0) == RankSettings(n=16, dims=(3,), N=100, trajectories=2,
                                                                    dae_iters=0, mlp_steps=0)
    assert gl_settings(256, 3, "1:20", "0.1,1000", 50000, 1024, 2000, 0).ratios == (0.1, 1000.0)
    for ui, cls, raw in [(lambda: phase_settings(257, 1, 2, 3, 1, 4, 3, 0.0, "svd", "hardmax", 0), PhaseSettings,
                          dict(n=257)),
                         (lambda: rank_settings(16, 2, 3, 1, 2, 0, 0, 0), RankSettings, dict(N=1)),
                         (lambda: gl_settings(12, 2, "2", "1,4", 20, 1025, 30, 0), GLSettings, dict(width=1025))]:
        with pytest.raises(UserError) as from_ui:
            ui()
        with pytest.raises(UserError) as from_settings:
            cls(**raw)
        assert str(from_ui.value) == str(from_settings.value)


def test_rank_api_and_reproduce_line(molrg_client, tmp_path):
    plot, csv, png, js, cli = molrg_client.predict(16, 2, 2, 100, 2, 20, 15, 0, api_name="/molrg_rank")
    rows = open(csv).read().splitlines()
    assert len(rows) == 19 and all(f in cli for f in ("molrg-rank --n 16 --dims 2,2 --N 100", "--trajectories 2", "--dae-iters 20"))
    ui = json.loads(open(js).read())
    assert list(ui["models"]) == ["posterior mean (Lemma 1)", "low-rank DAE (eq. 9, SGD)",
                                  "MLP denoiser (predicts x0, width 256, 1.92 kimg)"]
    table = list(csv_module.reader(open(csv)))
    assert table[0] == ["sigma", "snr", *ui["models"]]
    for j, vals in enumerate(ui["models"].values()):
        assert [float(r[2 + j]) for r in table[1:]] == pytest.approx(vals, abs=1e-5)
    assert ui["models"]["MLP denoiser (predicts x0, width 256, 1.92 kimg)"] != ui["models"]["posterior mean (Lemma 1)"]
    assert _without_timing(reproduce_json(cli, tmp_path)) == _without_timing(ui)
    with pytest.raises(Exception, match="exceeds n"):
        molrg_client.predict(8, 6, 6, 100, 2, 0, 0, 0, api_name="/molrg_rank")


def test_gl_api_and_reproduce_line(molrg_client, tmp_path):
    plot, status, csv, png, js, cli = molrg_client.predict(12, 2, "2", "1,4", 20, 16, 30, 0, api_name="/gl_score")
    assert status.startswith("done") and open(csv).read().count("\n") == 3
    assert all(f in cli for f in ("gl-score --K 2 --n 12 --d 2 --ratios 1,4 --steps 20", "--width 16", "--n-eval 30",
                                  "--seed 0"))
    ui = json.loads(open(js).read())
    assert [(r["d"], r["N_k"]) for r in ui["rows"]] == [(2, 2), (2, 8)]
    assert _without_timing(reproduce_json(cli, tmp_path)) == _without_timing(ui)
    with pytest.raises(Exception, match="not a list of numbers"):
        molrg_client.predict(12, 2, "x", "1", 20, 16, 30, 0, api_name="/gl_score")
