"""CLI: sample to a grid or a folder, clear errors with exit code 2."""
import subprocess
import sys

from PIL import Image

from lowdim_app.cli import main


def test_sample_grid_and_folder(tmp_path, tiny_pixel_dir):
    out = tmp_path / "grid.png"
    assert main(["sample", "--model", str(tiny_pixel_dir), "--n", "4", "--seed", "0", "--steps", "3", "--out", str(out)]) == 0
    assert Image.open(out).size[0] > 16
    folder = tmp_path / "pngs"
    assert main(["sample", "--model", str(tiny_pixel_dir), "--n", "3", "--steps", "2", "--out", str(folder)]) == 0
    files = sorted(folder.glob("*.png"))
    assert len(files) == 3 and Image.open(files[0]).size == (16, 16)


def test_sample_text_model(tmp_path, tiny_sd_dir):
    out = tmp_path / "sd.png"
    assert main(["sample", "--model", str(tiny_sd_dir), "--n", "1", "--steps", "2", "--prompt", "a cat",
                 "--guidance", "3", "--out", str(out)]) == 0
    assert out.is_file()


def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    assert main(["sample", "--model", "nope", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model") and err.count("\n") == 1
    assert main(["sample", "--steps", "0", "--out", str(tmp_path / "x.png")]) == 2
    assert "steps must be between 1 and 1000" in capsys.readouterr().err
    assert main(["sample", "--model", "google/ddpm-cifar10-32", "--out", str(tmp_path / "x.png")]) == 2
    assert "hf download" in capsys.readouterr().err


def test_module_entry_point_and_models_list():
    r = subprocess.run([sys.executable, "-m", "lowdim_app", "models"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "digits-gen" in r.stdout and "CompVis/stable-diffusion-v1-4" in r.stdout
    r = subprocess.run([sys.executable, "-m", "lowdim_app", "sample", "--n", "0"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
