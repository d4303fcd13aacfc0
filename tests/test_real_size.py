"""The three published architectures (DDPM CIFAR-10, DDPM CelebA-HQ-256, SD v1.4) end to end through the CLI.

Each is built from its exact config (:mod:`lowdim_app.diffusion.architectures`: same block types and
module names) with every channel count divided by ``width`` and a small sample size, saved as a local
diffusers folder (random weights), and run through ``sample``, ``edit`` (with a pass budget), ``rank``
and ``score``. ``tests/test_layouts.py`` covers loading the folder layouts of a tiny pixel model;
this covers the real block structure at every action, with the budget rules the real sizes need.
"""
from __future__ import annotations

import csv
import json
import math

import pytest

from lowdim_app.cli import main
from lowdim_app.diffusion import architectures as A
from lowdim_app.methods.lowrank import min_passes

# (arch, width divisor, sample size): SD's width must keep its text encoder's width equal to the
# U-Net's cross-attention width (768 / w = 64 * (12 // w)) and its channels divisible by the groups
CASES = [("cifar10", 8, 16), ("celebahq", 8, 32), ("sd-v1-4", 4, 8)]
EDIT_PASSES = 6          # below n for every case: the search is Krylov and must stop at this budget
RANK_PASSES = min_passes(2)   # the first Krylov iteration + 16 Hutchinson probes (central differences: 2 each)


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def built(request, tmp_path_factory, one_thread):
    arch, width, size = request.param
    folder = A.build(arch, tmp_path_factory.mktemp(arch) / "model", width=width, sample_size=size)
    return arch, folder, tmp_path_factory.mktemp(arch + "-out")


def _run(argv: list[str], capsys) -> str:
    rc = main([*argv, "--device", "cpu", "--quiet"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    return out.out + out.err


def test_sample_edit_rank_score_at_the_real_block_structure(built, capsys):
    arch, folder, out = built
    model = ["--model", str(folder)]
    _run(["sample", *model, "--n", "2", "--steps", "2", "--seed", "0", "--out", str(out / "samples")], capsys)
    pngs = sorted((out / "samples").glob("*.png"))
    assert len(pngs) == 2

    log = _run(["edit", str(pngs[0]), *model, "--t", "0.5", "--k", "1", "--steps", "4", "--alpha", "-2,2",
                "--max-passes", str(EDIT_PASSES), "--out", str(out / "edit")], capsys)
    search = json.loads((out / "edit" / "edit.json").read_text())["search"]
    assert search["method"] == "krylov"
    assert 0 < search["passes"] <= EDIT_PASSES
    assert search["stopped_at_budget"] is True      # 6 passes cannot converge on n >= 256 random weights
    assert "--max-passes" in log                     # and the CLI says how to get converged directions

    _run(["rank", *model, "--steps", "2", "--points", "2", "--k", "2", "--max-passes", str(RANK_PASSES),
          "--out", str(out / "rank"), "--json", str(out / "rank.json")], capsys)
    points = json.loads((out / "rank.json").read_text())["points"]
    assert len(points) == 2
    for p in points:
        assert 0 < p["passes"] <= RANK_PASSES
        assert 0 <= p["numerical_rank"] <= p["n"]

    _run(["score", *[str(p) for p in pngs], *model, "--csv", str(out / "scores.csv")], capsys)
    with open(out / "scores.csv") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 1 + len(pngs)
    numbers = [float(c) for c in rows[1][1:] if _is_number(c)]
    assert numbers and all(math.isfinite(x) for x in numbers)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
