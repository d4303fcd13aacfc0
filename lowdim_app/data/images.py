"""Image loading and validation: user files -> tensors in [-1, 1], tensors -> PIL.

Every entry point raises :class:`ImageError` with a one-line reason on bad input (unreadable,
too many pixels -- checked from the header before anything is decoded --, a PNG cut off before
its end chunk or with a corrupt chunk, too small, NaN or infinite pixel values, fully transparent,
no content at all (every pixel the same), empty folder) so the UI and CLI can show it.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

MAX_PIXELS = 40_000_000  # hard refusal above this (decompression-bomb guard)
MAX_FILE_BYTES = 50 * 1024 * 1024
MIN_SIDE = 2
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class ImageError(ValueError):
    """A user image that cannot be used; ``str(err)`` is the message to show."""


def _open(source) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, np.ndarray):
        arr = source
        if arr.size and np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise ImageError("the image has NaN or infinite pixel values")
        if arr.dtype != np.uint8:
            hi = float(arr.max()) if arr.size else 1.0
            arr = np.clip(arr.astype(np.float64) / (hi if hi > 1 else 1.0) * 255, 0, 255).astype(np.uint8)
        return Image.fromarray(arr)
    if isinstance(source, (bytes, bytearray)):
        data = io.BytesIO(source)
        name = "<bytes>"
    else:
        path = Path(os.fspath(source))
        if not path.is_file():
            raise ImageError(f"{path.name}: no such file")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ImageError(f"{path.name}: file larger than {MAX_FILE_BYTES // 2**20} MB")
        data, name = path, path.name
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        img = Image.open(data)
        if img.width * img.height > MAX_PIXELS:   # from the header, before any pixel is decoded
            raise ImageError(f"{name}: image too large ({img.width}x{img.height}, over {MAX_PIXELS // 10**6} megapixels)")
        img.load()
        if img.format == "PNG":   # chunk CRCs and the closing IEND: a cut-off upload decodes without them
            if hasattr(data, "seek"):
                data.seek(0)
            Image.open(data).verify()
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(f"{name}: image too large (over {MAX_PIXELS // 10**6} megapixels)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        why = "unknown format" if isinstance(err, UnidentifiedImageError) else "truncated or corrupt"
        raise ImageError(f"{name}: not a readable image ({why})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    return img


def check_readable(source) -> None:
    """Raise :class:`ImageError` unless ``source`` (path or bytes) is a complete image of allowed size
    with something to see (what :func:`load_image` checks, without resizing)."""
    img = to_rgb_or_gray(_open(source), 3)
    lo, hi = min(e[0] for e in img.getextrema()), max(e[1] for e in img.getextrema())
    if lo == hi:
        raise ImageError(f"the image has no content (every pixel is {lo})")


def to_rgb_or_gray(img: Image.Image, channels: int) -> Image.Image:
    """First frame, EXIF orientation applied, alpha composited on white, 16-bit / CMYK / palette converted."""
    if getattr(img, "is_animated", False):
        img = next(iter(ImageSequence.Iterator(img))).copy()
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # broken EXIF must not make a readable image unusable
        pass
    if img.width * img.height > MAX_PIXELS:
        raise ImageError(f"image too large ({img.width}x{img.height})")
    if min(img.size) < MIN_SIDE:
        raise ImageError(f"image too small ({img.width}x{img.height}); need at least {MIN_SIDE}x{MIN_SIDE}")
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise ImageError("the image has NaN or infinite pixel values")
        lo, hi = float(arr.min()), float(arr.max())
        scale = 65535.0 if hi > 255 else 255.0
        arr = np.clip(arr / scale * 255.0, 0, 255) if hi > 1 or lo < 0 else arr * 255.0
        img = Image.fromarray(arr.astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        if rgba.getextrema()[3][1] == 0:
            raise ImageError("the image is fully transparent (nothing to see)")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("L" if channels == 1 else "RGB")


def load_image(source, size: int | tuple[int, int], channels: int = 3, invert: bool = False) -> torch.Tensor:
    """Any image source (path, bytes, PIL, array) -> ``1 x C x H x W`` float32 in [-1, 1].

    The image is center-cropped to a square and resized (bicubic, antialiased) to ``size``.
    ``invert`` flips intensities (useful for dark-on-light digit drawings).
    """
    img = to_rgb_or_gray(_open(source), channels)
    lo, hi = img.getextrema() if channels == 1 else (min(e[0] for e in img.getextrema()), max(e[1] for e in img.getextrema()))
    if lo == hi:
        raise ImageError(f"the image has no content (every pixel is {lo})")
    h, w = (size, size) if isinstance(size, int) else size
    img = ImageOps.fit(img, (w, h), method=Image.Resampling.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    if invert:
        arr = 1.0 - arr
    t = torch.from_numpy(arr.copy())
    t = t.unsqueeze(0) if channels == 1 else t.permute(2, 0, 1)
    return (t * 2 - 1).unsqueeze(0).contiguous()


def list_image_files(folder) -> list[Path]:
    folder = Path(os.fspath(folder))
    if not folder.is_dir():
        raise ImageError(f"{folder}: not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ImageError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def load_folder(folder, size: int, channels: int, skip_bad: bool = True) -> tuple[torch.Tensor, list[Path], list[str]]:
    """All images of a folder -> ``N x C x size x size``; unreadable files are skipped and reported."""
    tensors, used, problems = [], [], []
    for path in list_image_files(folder):
        try:
            tensors.append(load_image(path, size, channels))
            used.append(path)
        except ImageError as err:
            if not skip_bad:
                raise
            problems.append(str(err))
    if not tensors:
        raise ImageError(f"{folder}: none of the images could be read ({problems[0]})")
    return torch.cat(tensors), used, problems


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``N x C x H x W`` in [-1, 1] -> ``N x H x W x C`` uint8."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def to_pil(images: torch.Tensor, upscale: int = 1) -> list[Image.Image]:
    """Tensor batch -> list of PIL images (grayscale for one channel), optionally upscaled (nearest)."""
    out = []
    for arr in to_uint8(images):
        img = Image.fromarray(arr[..., 0], mode="L") if arr.shape[-1] == 1 else Image.fromarray(arr)
        if upscale > 1:
            img = img.resize((img.width * upscale, img.height * upscale), Image.Resampling.NEAREST)
        out.append(img)
    return out


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2, upscale: int = 1) -> Image.Image:
    """Tile a batch into one image (like torchvision's make_grid, which we do not depend on)."""
    n = images.shape[0]
    if n == 0:
        raise ValueError("no images to tile")
    nrow = nrow or int(np.ceil(np.sqrt(n)))
    ncol = int(np.ceil(n / nrow))
    tiles = to_uint8(images)
    h, w, c = tiles.shape[1:]
    canvas = np.full((ncol * (h + padding) + padding, nrow * (w + padding) + padding, c), 255, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, q = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + q * (w + padding)
        canvas[y : y + h, x : x + w] = tile
    img = Image.fromarray(canvas[..., 0], mode="L") if c == 1 else Image.fromarray(canvas)
    if upscale > 1:
        img = img.resize((img.width * upscale, img.height * upscale), Image.Resampling.NEAREST)
    return img
