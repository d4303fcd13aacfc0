"""The example notebooks (examples/*.ipynb) run top to bottom with nbclient, offline, each in a fresh
folder (as a user who downloaded one would), each in well under a minute on two CPU cores."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO / "examples").glob("*.ipynb"))


def test_the_notebooks_exist():
    names = {p.stem for p in NOTEBOOKS}
    assert {"edit_digit", "phase_transition", "own_pipeline", "audit_folder"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path, tmp_path, monkeypatch, artifacts):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"
    work = tmp_path / "work"
    shutil.copytree(REPO / "examples", work, ignore=shutil.ignore_patterns("*.ipynb"), dirs_exist_ok=True)
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    t0 = time.perf_counter()
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(work)}})
    client.execute()
    seconds = time.perf_counter() - t0
    with open(artifacts / "notebooks.txt", "a") as f:
        f.write(f"{path.name}: {seconds:.1f} s\n")
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
