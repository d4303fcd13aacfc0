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
    assert README.startswith("---\ntitle: LowDim Lab") and "app_port: 7860" in README
