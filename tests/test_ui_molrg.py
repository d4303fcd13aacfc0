"""MoLRG labs through gradio_client on a standalone Blocks with lowdim_app.ui.molrg.build()."""
import os

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


def test_phase_api(molrg_client):
    out = molrg_client.predict(24, 1, 2, 3, 1, 4, 3, 0.0, "svd", "hardmax", 0, api_name="/phase")
    plot, status, table, csv, png, cli = out
    assert status.startswith("done") and "python -m lowdim_app phase --K 1 --n 24 --d 2:3 --N 1:4" in cli
    lines = open(csv).read().splitlines()
    assert lines[0].startswith("d,N,success_rate") and len(lines) == 1 + 8
    rate = {(int(r.split(",")[0]), int(r.split(",")[1])): float(r.split(",")[2]) for r in lines[1:]}
    assert rate[(3, 2)] == 0.0 and rate[(3, 4)] == 1.0
    assert open(png, "rb").read(4) == b"\x89PNG"


@pytest.mark.parametrize("args", [
    (24, 2, 2, 3, 1, 4, 3, 0.0, "svd", "hardmax", 0),        # svd needs K = 1
    (24, 1, 2, 3, 1, 4, 10**9, 0.0, "svd", "hardmax", 0),    # trials out of bounds
    (24, 1, 4, 3, 1, 4, 3, 0.0, "svd", "hardmax", 0),        # empty range
    (24, 1, 2, 3, 1, 4, 3, 0.0, "nope", "hardmax", 0),       # unknown method
])
def test_phase_api_rejects_bad_input(molrg_client, args):
    with pytest.raises(Exception) as ei:
        molrg_client.predict(*args, api_name="/phase")
    assert "Unexpected" not in str(ei.value)


def test_rank_api(molrg_client):
    plot, csv, png, cli = molrg_client.predict(16, 2, 3, 100, 2, 0, 0, 0, api_name="/molrg_rank")
    rows = open(csv).read().splitlines()
    assert len(rows) == 19 and "molrg-rank --n 16 --dims 2,3" in cli
    with pytest.raises(Exception):
        molrg_client.predict(8, 6, 6, 100, 2, 0, 0, 0, api_name="/molrg_rank")


def test_gl_api(molrg_client):
    plot, status, csv, png, cli = molrg_client.predict(12, 2, "2", "1,4", 20, 16, 30, 0, api_name="/gl_score")
    assert status.startswith("done") and open(csv).read().count("\n") == 3
    assert "gl-score --K 2 --n 12 --d 2:2" in cli
    with pytest.raises(Exception):
        molrg_client.predict(12, 2, "x", "1", 20, 16, 30, 0, api_name="/gl_score")
