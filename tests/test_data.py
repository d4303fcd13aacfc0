"""Built-in digits and user-image loading/validation."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from lowdim_app.data.digits import load_digits_split, subset_indices
from lowdim_app.data.images import ImageError, load_folder, load_image, make_grid, to_pil
from lowdim_app.data.neighbours import COPY_THRESHOLD, nearest


def test_digits_split_fixed_and_in_range():
    s = load_digits_split()
    assert s.train_images.shape == (1438, 1, 16, 16) and s.test_images.shape == (359, 1, 16, 16)
    assert s.train_images.min() >= -1 and s.train_images.max() <= 1
    assert set(s.train_index).isdisjoint(s.test_index)
    assert len(set(s.train_index) | set(s.test_index)) == 1797
    # fixed split: these are properties of SPLIT_SEED = 0 and never change
    assert s.test_index[:5].tolist() == sorted(s.test_index.tolist())[:5]
    assert np.array_equal(subset_indices(16, 0), subset_indices(16, 0))
    assert len(set(subset_indices(16, 0))) == 16


def test_held_out_digits_are_never_near_copies():
    """The copy threshold sits below every held-out-digit distance (the calibration of the label)."""
    s = load_digits_split()
    d = nearest(s.test_images, s.train_images).nearest
    assert d.min() > COPY_THRESHOLD
    assert nearest(s.train_images[:20], s.train_images).nearest.max() < 1e-6


def _png(img: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("make", [
    lambda: Image.new("RGBA", (40, 30), (255, 0, 0, 0)),          # transparent -> white
    lambda: Image.new("CMYK", (20, 20), (0, 255, 0, 0)),
    lambda: Image.fromarray(np.full((20, 20), 40000, dtype=np.uint16)),  # 16-bit
    lambda: Image.new("P", (20, 20)),
    lambda: Image.new("1", (20, 20)),
])
def test_odd_modes_load_as_valid_tensors(make):
    x = load_image(make(), 16, channels=3)
    assert x.shape == (1, 3, 16, 16) and torch.isfinite(x).all() and x.min() >= -1 and x.max() <= 1


def test_transparent_pixels_become_white_and_16bit_scales():
    x = load_image(Image.new("RGBA", (8, 8), (0, 0, 0, 0)), 8, channels=1)
    assert torch.allclose(x, torch.ones_like(x))
    x16 = load_image(Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)), 8, channels=1)
    assert torch.allclose(x16, torch.ones_like(x16))


def test_animated_gif_uses_first_frame():
    frames = [Image.new("L", (10, 10), v) for v in (0, 255)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    x = load_image(buf.getvalue(), 10, channels=1)
    assert torch.allclose(x, -torch.ones_like(x))


def test_bad_images_give_one_line_errors(tmp_path):
    with pytest.raises(ImageError, match="too small"):
        load_image(Image.new("L", (1, 1)), 16, 1)
    with pytest.raises(ImageError, match="not a readable image"):
        load_image(b"definitely not a png", 16, 1)
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.png", 16, 1)
    bomb = Image.new("L", (9000, 9000))  # 81 MP > 40 MP limit; compresses to a small file
    with pytest.raises(ImageError, match="too large"):
        load_image(_png(bomb), 16, 1)


def test_folder_loader_skips_and_reports_bad_files(tmp_path):
    Image.new("L", (20, 20), 128).save(tmp_path / "a.png")
    Image.new("RGB", (30, 20), (0, 0, 255)).save(tmp_path / "b.jpg")
    (tmp_path / "broken.png").write_bytes(b"xx")
    x, used, problems = load_folder(tmp_path, 16, 1)
    assert x.shape == (2, 1, 16, 16) and len(used) == 2 and len(problems) == 1 and "broken.png" in problems[0]
    with pytest.raises(ImageError, match="no image files"):
        empty = tmp_path / "empty"
        empty.mkdir()
        load_folder(empty, 16, 1)


def test_grid_and_pil_round_trip():
    x = torch.linspace(-1, 1, 5 * 16 * 16).reshape(5, 1, 16, 16)
    imgs = to_pil(x)
    back = torch.stack([torch.from_numpy(np.asarray(i, dtype=np.float32)) / 127.5 - 1 for i in imgs]).unsqueeze(1)
    assert (back - x).abs().max() <= 1 / 127.5 + 1e-6
    g = make_grid(x, nrow=3, padding=2)
    assert g.size == (3 * 18 + 2, 2 * 18 + 2)
