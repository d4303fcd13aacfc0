"""The README's gradio_client snippet runs against the real server, and the README's commands exist."""
import re
from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_readme_gradio_client_snippet_runs(app_server, capsys):
    block = re.search(r"```python\n(from gradio_client import Client.*?)```", README, re.S).group(1)
    code = block.replace("http://127.0.0.1:7860/", app_server)
    exec(compile(code, "README-snippet", "exec"), {})
    out = capsys.readouterr().out
    assert "python -m lowdim_app sample --model digits-gen --n 16 --seed 0 --steps 50" in out


def test_readme_commands_match_ci():
    assert "pip install -r requirements.txt && python app.py" in README
    assert "bash scripts/test.sh" in README
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in ci
    assert README.startswith("---\ntitle: LowDim Lab")


def test_front_matter_is_a_zerogpu_gradio_space():
    """ZeroGPU Spaces must use the Gradio SDK (Hugging Face ZeroGPU docs); models are preloaded as safetensors."""
    import yaml

    meta = yaml.safe_load(README.split("---\n")[1])
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and str(meta["python_version"]) == "3.11"
    import gradio

    assert meta["sdk_version"] == gradio.__version__
    for entry in meta["preload_from_hub"]:
        repo, files = entry.split()[:2]
        assert repo in ("google/ddpm-cifar10-32", "CompVis/stable-diffusion-v1-4")
        weights = [f for f in files.split(",") if "model" in f and not f.endswith(".json")]
        assert weights and all(f.endswith(".safetensors") for f in weights), entry
    req = (Path(__file__).resolve().parent.parent / "requirements.txt").read_text()
    assert "\nspaces" in req


def test_readme_python_snippets_run(tmp_path, monkeypatch):
    """The README's Python examples (feature layer and diffusion wrapper) run as printed."""
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(from lowdim_app.*?)```", README, re.S)
    assert len(blocks) == 2
    out = {}
    for block in blocks:
        exec(compile(block, "README-python", "exec"), out)
    assert (tmp_path / "grid.png").is_file() and out["x0_hat"].shape == (16, 1, 16, 16)
    assert out["result"].reproduce().startswith("python -m lowdim_app sample --model digits-gen --n 16 --seed 0 --steps 50")
