"""Packaging: pyproject.toml declares the dependencies (requirements.txt lists the same), the wheel ships
the built-in models, calibrations and example images, and an installed wheel works from outside the
repository (the `lowdim` console script and the Python API)."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = ["pyproject.toml", "setup.py", "README.md", "lowdim_app", "assets"]


def requirement_lines(path: Path) -> list[str]:
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-r"):
            out.append(line)
    return out


def test_requirements_txt_matches_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert requirement_lines(REPO / "requirements.txt") == project["dependencies"]
    assert project["scripts"]["lowdim"] == "lowdim_app.cli:main"
    dev = requirement_lines(REPO / "requirements-dev.txt")
    for tool in ("mkdocs", "mkdocstrings[python]", "nbclient", "nbformat", "ipykernel"):
        assert any(d.startswith(tool) for d in dev), tool


def local_build_backend() -> bool:
    """Whether this Python can build the wheel without fetching a build backend: setuptools >= 70.1
    (bdist_wheel built in) or an older one with the `wheel` package."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    import setuptools

    major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


def build_wheel(out: Path) -> Path:
    """The wheel of a clean copy of the sources (the build never writes into the repository)."""
    src = out / "src"
    for name in SOURCES:
        p = REPO / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyi"))
        else:
            src.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, src / name)
    flags = ["--no-build-isolation"] if local_build_backend() else []   # else pip fetches setuptools itself
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *flags, "-w", str(out / "dist"), str(src)],
                   check=True, capture_output=True, text=True, timeout=600)
    (wheel,) = (out / "dist").glob("lowdim_lab-*.whl")
    return wheel


def venv(path: Path, system_site: bool) -> Path:
    args = [sys.executable, "-m", "venv", str(path)] + (["--system-site-packages"] if system_site else [])
    subprocess.run(args, check=True, timeout=300)
    return path / ("Scripts" if os.name == "nt" else "bin")


def run_installed(bindir: Path, cwd: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", LOWDIM_DEVICE="cpu")
    env.pop("LOWDIM_ASSETS", None)
    r = subprocess.run([str(bindir / "lowdim"), "sample", "--model", "digits-gen", "--n", "4", "--steps", "5",
                        "--out", "x.png"], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (cwd / "x.png").is_file() and "wrote x.png" in r.stdout
    code = ("import lowdim_app, lowdim_app.config as c\n"
            "from lowdim_app import find_directions\n"
            "assert str(REPO) not in lowdim_app.__file__, lowdim_app.__file__\n"
            "assert (c.DEFAULT_ASSETS / 'calibrations' / 'digits-dup.json').is_file(), c.DEFAULT_ASSETS\n"
            "f = find_directions(c.DEFAULT_ASSETS / 'examples' / 'digit_2_test0.png', 'digits-gen', k=2, steps=8)\n"
            "from lowdim_app.data.prompts import load_prompt_set\n"
            "assert len(load_prompt_set('sd14-memorized')) == len(load_prompt_set('sd14-nonmemorized')) == 500\n"
            "print(len(f.search.singular_values), lowdim_app.__file__)\n").replace("REPO", repr(str(REPO)))
    r = subprocess.run([str(bindir / "python"), "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("2 ") and str(cwd.parent) in r.stdout
    a = subprocess.run([str(bindir / "lowdim"), "--help"], cwd=cwd, env=env, capture_output=True, text=True)
    b = subprocess.run([str(bindir / "python"), "-m", "lowdim_app", "--help"], cwd=cwd, env=env,
                       capture_output=True, text=True)
    assert a.returncode == b.returncode == 0 and a.stdout == b.stdout


def test_wheel_ships_models_and_installs_outside_the_repo(tmp_path, artifacts):
    t0 = time.perf_counter()
    wheel = build_wheel(tmp_path)
    t_build = time.perf_counter() - t0
    names = set(zipfile.ZipFile(wheel).namelist())
    for mid in ("digits-gen", "digits-mem", "digits-dup"):
        assert f"lowdim_app/assets/models/{mid}/unet/diffusion_pytorch_model.safetensors" in names
        assert f"lowdim_app/assets/models/{mid}/scheduler/scheduler_config.json" in names
        assert f"lowdim_app/assets/calibrations/{mid}.json" in names
    assert "lowdim_app/assets/examples/digit_2_test0.png" in names and "lowdim_app/api.py" in names
    for f in ("sd14_memorized_500.jsonl", "sd14_nonmemorized_500.txt", "README.md"):   # the benchmark's prompt sets
        assert f"lowdim_app/data/memorization_prompts/{f}" in names, f
    assert not any(n.startswith(("tests/", "bench/")) or n.endswith((".pyc", ".pyi")) for n in names)
    t0 = time.perf_counter()
    bindir = venv(tmp_path / "venv", system_site=True)
    subprocess.run([str(bindir / "python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True,
                   timeout=600)
    t_install = time.perf_counter() - t0
    work = tmp_path / "work"
    work.mkdir()
    run_installed(bindir, work)
    (artifacts / "packaging.txt").write_text(
        f"wheel {wheel.name}: {wheel.stat().st_size / 1e6:.1f} MB, built in {t_build:.1f} s\n"
        f"venv (--system-site-packages) + pip install --no-deps: {t_install:.1f} s\n")


@pytest.mark.long
def test_fresh_venv_installs_the_wheel_with_its_dependencies(tmp_path, artifacts):
    """The full install a new user does (`pip install lowdim_lab-*.whl` into an empty venv; the torch
    wheel comes from pip's configured index, e.g. the CPU build)."""
    wheel = build_wheel(tmp_path)
    bindir = venv(tmp_path / "venv", system_site=False)
    t0 = time.perf_counter()
    r = subprocess.run([str(bindir / "python"), "-m", "pip", "install", "-q", str(wheel)], capture_output=True,
                       text=True, timeout=3000)
    assert r.returncode == 0, r.stderr[-3000:]
    t_install = time.perf_counter() - t0
    work = tmp_path / "work"
    work.mkdir()
    run_installed(bindir, work)
    with open(artifacts / "packaging.txt", "a") as f:
        f.write(f"fresh venv, pip install with dependencies: {t_install:.0f} s\n")


def front_matter() -> dict:
    """The Space's configuration: the YAML block at the top of the README (flat keys are enough here)."""
    text = (REPO / "README.md").read_text().split("---", 2)[1]
    out = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith((" ", "-")):
            key, value = line.split(":", 1)
            out[key.strip()] = value.strip().strip('"')
    return out


def test_space_front_matter_matches_what_the_pinned_stack_runs_on():
    """The Space's Python is the lowest that every pinned runtime dependency declares it supports (their
    Requires-Python), the Gradio SDK version is the pinned gradio, and ``spaces`` supports that Python."""
    from importlib.metadata import metadata

    from packaging.specifiers import SpecifierSet

    fm = front_matter()
    python = fm["python_version"]
    pins = {line.split("==")[0].split(">=")[0].strip(): line for line in requirement_lines(REPO / "requirements.txt")}
    assert fm["sdk"] == "gradio" and SpecifierSet(pins["gradio"][len("gradio"):]).contains(fm["sdk_version"])
    for name in ("torch", "diffusers", "transformers", "gradio", "accelerate", "spaces"):
        need = metadata(name).get("Requires-Python") or ""
        assert SpecifierSet(need).contains(python + ".0"), f"{name} needs Python {need}, the Space runs {python}"
    lower = [f"3.{m}" for m in range(8, 15) if all(SpecifierSet(metadata(n).get("Requires-Python") or "").contains(
        f"3.{m}.0") for n in ("torch", "diffusers", "transformers", "gradio", "accelerate", "spaces"))]
    assert lower and python == lower[0], f"the lowest Python the stack runs on is {lower[:1]}, the Space says {python}"


def test_docker_image_hygiene(app_server):
    """`COPY . .` leaves out version control and build/run outputs; the HEALTHCHECK command succeeds
    against a running app (and fails against a closed port)."""
    ignored = (REPO / ".dockerignore").read_text().split()
    for entry in (".git", ".gradio", "build", "test-artifacts", "**/__pycache__"):
        assert entry in ignored, entry
    docker = (REPO / "Dockerfile").read_text()
    health = next(line for line in docker.splitlines() if line.strip().startswith("CMD python -c"))
    code = health.split('python -c "', 1)[1].rsplit('" || exit 1', 1)[0]
    port = app_server.rstrip("/").rsplit(":", 1)[1]
    ok = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, GRADIO_SERVER_PORT=port), timeout=30)
    down = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, GRADIO_SERVER_PORT="9"), timeout=30,
                          capture_output=True)
    assert ok.returncode == 0 and down.returncode != 0
