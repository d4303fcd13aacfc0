"""Run the example notebooks (examples/*.ipynb) top to bottom and store them with their outputs, figures
included, so a reader on GitHub or in the documentation site sees every result without running anything.

Each runs in a fresh temporary folder (as a user who downloaded it would), offline, on one CPU thread;
the files a notebook writes stay there. Run it again whenever the built-in models or the library change
what a notebook shows: ``python scripts/execute_notebooks.py [NAME ...]``. ``tests/test_notebooks.py``
executes a copy of each in CI and checks that the stored outputs are complete.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def execute(path: Path, work: Path, timeout: int = 600):
    """The notebook at ``path`` run in ``work``: a fresh ``NotebookNode`` with its outputs."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    shutil.copytree(REPO / "examples", work, ignore=shutil.ignore_patterns("*.ipynb"), dirs_exist_ok=True)
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(work)}})
    client.execute()
    return nb


def tidy(nb):
    """The outputs a reader should see: progress bars and warnings (stderr) are left out."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not (o.output_type == "stream" and o.get("name") == "stderr")]
    return nb


def environment() -> None:
    os.environ["PYTHONPATH"] = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
    os.environ.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", MPLBACKEND="Agg", GRADIO_ANALYTICS_ENABLED="False")


def main(names: list[str]) -> int:
    import nbformat

    environment()
    paths = [REPO / "examples" / f"{n.removesuffix('.ipynb')}.ipynb" for n in names] or \
        sorted((REPO / "examples").glob("*.ipynb"))
    for path in paths:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="lowdim-notebook-") as tmp:
            nb = tidy(execute(path, Path(tmp) / "work"))
        text = nbformat.writes(nb)
        if tmp in text or str(REPO) in text or "site-packages" in text:
            print(f"{path.name}: an output names a machine path; not stored", file=sys.stderr)
            return 1
        path.write_text(text)
        print(f"{path.name}: executed and stored in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
