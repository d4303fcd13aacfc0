"""The documentation site: `mkdocs build --strict` (warnings are errors; the API reference comes from the
docstrings; the figures are made by the build from the CLI; the example notebooks are pages, shown with
their stored outputs), one page per capability citing its
paper, and the README's public-API snippets run as printed."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
README = (REPO / "README.md").read_text()


def test_mkdocs_build_strict(tmp_path, artifacts):
    pytest.importorskip("mkdocstrings")
    env = dict(os.environ, LOWDIM_DOCS_FIGURES=str(tmp_path / "figures"), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    # the `mkdocs` command as the README gives it (it does not put the checkout on sys.path; the hook does)
    mkdocs = shutil.which("mkdocs") or pytest.fail("the mkdocs command is not installed")
    r = subprocess.run([mkdocs, "build", "--strict", "-d", str(tmp_path / "site")], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=900)
    (artifacts / "mkdocs_build.log").write_text(r.stdout + r.stderr)
    assert r.returncode == 0, r.stderr[-3000:]
    site = tmp_path / "site"
    for fig in ("sample", "edit_strip", "edit_spectrum", "rank", "steer_strip", "steer_curve", "phase"):
        assert (site / "figures" / f"{fig}.png").stat().st_size > 1000, fig
    ref = (site / "reference" / "index.html").read_text()
    for name in ("lowdim_app.api.sample", "lowdim_app.api.find_directions", "lowdim_app.api.steer",
                 "lowdim_app.diffusion.model.DiffusionModel.from_pipeline"):
        assert f'id="{name}"' in ref, name
    assert "Wang et al." in (site / "PAPERS" / "index.html").read_text()
    for notebook in ("edit_digit", "phase_transition", "own_pipeline", "audit_folder"):   # with their stored figures
        assert "data:image/png" in (site / "examples" / notebook / "index.html").read_text(), notebook
    assert not list(REPO.glob("docs/figures"))        # the build writes nothing into the repository
    assert not (REPO / ".cache" / "mkdocs-jupyter").exists()


def test_each_capability_page_cites_its_paper():
    cites = {"editing.md": ["2409.02426", "2409.02374"], "memorization.md": ["2512.20963"],
             "steering.md": ["2512.20963"], "theory.md": ["2409.02426", "2512.20963", "2307.01178", "2601.01475"]}
    papers = (DOCS / "PAPERS.md").read_text()
    for page, ids in cites.items():
        text = (DOCS / page).read_text()
        assert text.count("**Paper.**") >= 1, page
        for arxiv in ids:
            assert f"arXiv:{arxiv}" in text and arxiv in papers, (page, arxiv)
    index = (DOCS / "index.md").read_text()
    assert "pip install -r requirements.txt && python app.py" in index and "bash scripts/test.sh" in index


def test_readme_public_api_snippets_run(tmp_path, monkeypatch, one_thread):
    """The README's `import lowdim_app as ld` examples run as printed (in a fresh folder)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "assets").symlink_to(REPO / "assets")
    blocks = re.findall(r"```python\n(import lowdim_app as ld\n.*?)```", README, re.S)
    assert blocks
    scope: dict = {}
    for block in blocks:
        exec(compile(block, "README-api", "exec"), scope)
    assert "README" in README and "Documentation" in README
