"""The example notebooks (examples/*.ipynb) are stored with their outputs, figures included (a reader on
GitHub or in the documentation site sees every result), and still run top to bottom with nbclient,
offline, each in a fresh folder (as a user who downloaded one would), each in well under a minute on two
CPU cores; the run gives the same kinds of output, cell by cell, as the stored notebook."""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "examples").glob("*.ipynb"))


def _runner():
    spec = importlib.util.spec_from_file_location("execute_notebooks", REPO / "scripts" / "execute_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _kinds(cell) -> list[str]:
    """What a code cell shows: the output types, with the MIME types of rich outputs (a figure: image/png)."""
    out = []
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream" and o.get("name") == "stderr":
            continue   # progress bars and warnings: not stored
        data = o.get("data") or {}
        out.append(o["output_type"] + ("/image" if "image/png" in data else ""))
    return sorted(set(out))


def test_the_notebooks_exist():
    names = {p.stem for p in NOTEBOOKS}
    assert {"edit_digit", "phase_transition", "own_pipeline", "audit_folder"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_with_its_outputs(path):
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "run it top to bottom once"
    assert any("/image" in k for c in code for k in _kinds(c)), "no figure stored"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    text = path.read_text()
    for path_part in ("/tmp/", "/work/", "/root/", "site-packages", str(REPO)):   # no machine paths
        assert path_part not in text, path_part


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, artifacts):
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    runner = _runner()
    runner.environment()
    t0 = time.perf_counter()
    ran = runner.execute(path, tmp_path / "work", timeout=300)
    seconds = time.perf_counter() - t0
    with open(artifacts / "notebooks.txt", "a") as f:
        f.write(f"{path.name}: {seconds:.1f} s\n")
    assert not [o for c in ran.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    stored = nbformat.read(path, as_version=4)
    assert [_kinds(c) for c in ran.cells if c.cell_type == "code"] == \
        [_kinds(c) for c in stored.cells if c.cell_type == "code"], "the stored outputs are stale: " \
        "python scripts/execute_notebooks.py"
