"""Built-in digits and user-image loading/validation."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from lowdim_app.data.digits import load_digits_split, subset_indices
from lowdim_app.data.images import ImageError, load_folder, load_image, make_grid, to_pil
from lowdim_app.data.neighbours import COPY_THRESHOLD
from lowdim_app.metrics import nearest


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


def _striped(img: Image.Image) -> Image.Image:
    """The same mode with a stripe of another value, so the image has content."""
    from PIL import ImageDraw

    ImageDraw.Draw(img).rectangle([0, 0, img.width // 2, img.height], fill=_other(img.mode))
    return img


def _other(mode):
    return {"RGBA": (0, 0, 255, 255), "CMYK": (255, 0, 0, 0), "RGB": (255, 255, 0), "L": 0, "1": 1}[mode]


@pytest.mark.parametrize("make", [
    lambda: _striped(Image.new("RGBA", (40, 30), (255, 0, 0, 0))),          # transparent part -> white
    lambda: _striped(Image.new("CMYK", (20, 20), (0, 255, 0, 0))),
    lambda: Image.fromarray(np.r_[np.full((10, 20), 40000), np.zeros((10, 20))].astype(np.uint16)),  # 16-bit
    lambda: _striped(Image.new("RGB", (20, 20), (200, 30, 30))).convert("P"),
    lambda: _striped(Image.new("1", (20, 20))),
])
def test_odd_modes_load_as_valid_tensors(make):
    x = load_image(make(), 16, channels=3)
    assert x.shape == (1, 3, 16, 16) and torch.isfinite(x).all() and x.min() >= -1 and x.max() <= 1


def test_transparent_pixels_become_white_and_16bit_scales():
    half = np.zeros((8, 8, 4), dtype=np.uint8)
    half[:, 4:, 3] = 255                      # left half transparent, right half opaque black
    x = load_image(Image.fromarray(half, "RGBA"), 8, channels=1)
    assert torch.allclose(x[..., :4], torch.ones_like(x[..., :4])) and torch.allclose(x[..., 4:], -torch.ones_like(x[..., 4:]))
    x16 = load_image(Image.fromarray(np.r_[np.full((4, 8), 65535), np.zeros((4, 8))].astype(np.uint16)), 8, channels=1)
    assert torch.allclose(x16[..., :4, :], torch.ones_like(x16[..., :4, :]))


@pytest.mark.parametrize("make, message", [
    (lambda: Image.new("RGBA", (8, 8), (0, 0, 0, 0)), "fully transparent"),
    (lambda: Image.new("L", (8, 8), 0), "no content"),
    (lambda: Image.new("RGB", (6000, 60), (9, 9, 9)), "no content"),
    (lambda: Image.fromarray(np.full((8, 8), np.nan, dtype=np.float32), "F"), "NaN or infinite"),
    (lambda: np.full((8, 8, 3), np.inf), "NaN or infinite"),
])
def test_images_without_content_are_refused(make, message):
    with pytest.raises(ImageError, match=message):
        load_image(make(), 16, channels=1)


def test_pixel_limit_is_checked_before_decoding(monkeypatch):
    """An image over the pixel limit is refused from its header: load() is never called."""
    big = _png(Image.new("L", (7000, 7000)))   # 49 MP: under PIL's own bomb error (2x its limit)
    called = []
    monkeypatch.setattr(Image.Image, "load", lambda self: called.append(1))
    with pytest.raises(ImageError, match="too large"):
        load_image(big, 16, 1)
    assert not called


def test_animated_gif_uses_first_frame():
    first = Image.fromarray(np.tile(np.array([0, 255], dtype=np.uint8), (10, 5)))
    frames = [first, Image.new("L", (10, 10), 128)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    x = load_image(buf.getvalue(), 10, channels=1)
    assert torch.allclose(x, load_image(first, 10, channels=1), atol=1e-6)


def test_bad_images_give_one_line_errors(tmp_path):
    with pytest.raises(ImageError, match="too small"):
        load_image(Image.new("L", (1, 1)), 16, 1)
    with pytest.raises(ImageError, match="not a readable image"):
        load_image(b"definitely not a png", 16, 1)
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.png", 16, 1)
    whole = _png(Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)))
    load_image(whole, 16, 1)
    with pytest.raises(ImageError, match="truncated or corrupt"):   # every pixel there, end chunk cut off
        load_image(whole[:-12], 16, 1)
    bomb = Image.new("L", (9000, 9000))  # 81 MP > 40 MP limit; compresses to a small file
    with pytest.raises(ImageError, match="too large"):
        load_image(_png(bomb), 16, 1)


def test_folder_loader_skips_and_reports_bad_files(tmp_path):
    _striped(Image.new("L", (20, 20), 128)).save(tmp_path / "a.png")
    _striped(Image.new("RGB", (30, 20), (0, 0, 255))).save(tmp_path / "b.jpg")
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


def test_the_digits_split_cannot_be_changed_by_a_caller():
    """One request editing the digits it got must not change the digits the next request sees."""
    a = load_digits_split()
    a.train_images.zero_()
    a.test_labels[:] = 0
    b = load_digits_split()
    assert b.train_images.abs().sum() > 0 and b.test_labels.max() == 9
