"""Theory labs (ReLU DAE, DDPM on a MoG, MoLR-MoG) through gradio_client on a standalone Blocks with
lowdim_app.ui.theory.build(), and the round trip: each tab's reproduce line, run as is in a shell,
writes the numbers and the figure the tab showed."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

gr = pytest.importorskip("gradio")

REPO = Path(__file__).resolve().parent.parent
VOLATILE = {"wall_s", "timings_s", "train_seconds"}     # wall-clock times differ between two runs


@pytest.fixture(scope="module")
def client(one_thread):
    from lowdim_app.ui.theory import build
    from tests.conftest import serve_blocks

    with serve_blocks(build) as c:
        yield c


@pytest.mark.parametrize("api,args", [
    ("/mog_ddpm", (6, 4.0, 0.01, 0.05, 1.0, 0.5, 20, 10, 2, 1024, 0)),     # t_small >= t_large
    ("/mog_ddpm", (6, 4.0, 1.0, 2.0, 1.0, 0.5, 20, 10, 2, 1024, 0)),       # t_small >= t_large
    ("/relu_dae", ("cifar", 8, 0.2, 1e-3, True, 2, 300, False, 0, 300, False, 0)),
    ("/relu_dae", ("mog", 10**9, 0.2, 1e-3, True, 2, 300, False, 0, 300, False, 0)),
    ("/molr_mog", ("synthetic", 2, 8, 2, 2, "many", 0)),
])
def test_bad_input_is_one_line_error(client, api, args):
    with pytest.raises(Exception) as ei:
        client.predict(*args, api_name=api)
    assert "Unexpected" not in str(ei.value)


def assert_same_numbers(a, b, path=""):
    """Equal but for wall-clock times; floats to 1e-9 relative (LAPACK kernels may pick different code
    paths in two processes, which moves the last bits of e.g. principal cosines of a degenerate block)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), path
        for k in a:
            if k not in VOLATILE:
                assert_same_numbers(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_numbers(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), (path, a, b)
    else:
        assert a == b and type(a) is type(b), (path, a, b)


def _mog_numbers(n, cli):
    assert "python -m lowdim_app mog-ddpm" in cli and "--iters-large 20" in cli
    assert n["large_noise"]["angle_end_deg"]["gd_population"] < n["large_noise"]["angle_start_deg"]


def _relu_numbers(n, cli):
    assert "relu-dae --data mog" in cli
    assert "memorize" in n and "generalize" in n and "eq9" in n["memorize"]
    assert "sampling" in n and "hybrid" not in n


def _molr_numbers(n, cli):
    assert set(n["eval_loss"]) == {"moe_mog", "moe_gaussian", "latent_mlp"}


LABS = {   # inputs in the tab's order (small settings), stages, checks of the numbers
    "/mog_ddpm": ((6, 4.0, 2.5, 0.05, 1.0, 0.5, 20, 10, 2, 1024, 0), 3, _mog_numbers),
    "/relu_dae": (("mog", 8, 0.2, 1e-3, True, 2, 300, False, 0, 200, True, 0), 4, _relu_numbers),
    "/molr_mog": (("synthetic", 2, 8, 2, 2, 20, 0), 3, _molr_numbers),
}


@pytest.mark.parametrize("api", list(LABS))
def test_tab_and_its_reproduce_line_give_the_same_numbers_and_figure(client, api, tmp_path):
    """The tab streams one status per stage and ends with "done in"; its reproduce line, run verbatim in
    a shell in an empty folder, writes out.json / out.png equal to what the tab showed (numbers exactly
    but for wall-clock times, the figure pixel for pixel) and to the files the tab offers."""
    from PIL import Image

    args, n_stages, check = LABS[api]
    job = client.submit(*args, api_name=api)
    fig, nums, _status, cli, files = job.result()
    check(json.loads(nums)["numbers"], cli)
    assert Path(fig).read_bytes()[:4] == b"\x89PNG"
    statuses = [out[2] for out in job.outputs() if isinstance(out[2], str)]   # not the heartbeats (unchanged outputs)
    assert [s.split(":")[0] for s in statuses[:-1]] == [f"stage {k}/{n_stages}" for k in range(2, n_stages + 1)]
    assert statuses[-1].startswith("**done in ") and "done" not in "".join(statuses[:-1])
    assert cli.startswith("Reproduce: `python -m lowdim_app ") and cli.endswith(" --json out.json --png out.png`")
    assert [Path(f).name for f in files] == ["out.json", "out.png"]
    assert json.loads(Path(files[0]).read_text()) == json.loads(nums)

    line = cli.removeprefix("Reproduce: `").removesuffix("`")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    proc = subprocess.run(line, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == line                 # the CLI prints the same line back
    shell = json.loads((tmp_path / "out.json").read_text())
    assert_same_numbers(shell, json.loads(nums))
    a, b = np.asarray(Image.open(tmp_path / "out.png")), np.asarray(Image.open(fig))
    assert a.shape == b.shape and np.array_equal(a, b)
