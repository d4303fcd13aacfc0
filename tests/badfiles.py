"""A corpus of hostile and odd upload files (what strangers send a public server).

``make_corpus(folder)`` writes them and returns ``[(path, kind, expect)]`` where ``expect`` is
``"valid"`` (a usable image: the endpoint should answer with a result) or ``"refuse"`` (the
endpoint must answer with one clear line). Generated, never downloaded; deterministic.
"""
from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

RNG = np.random.default_rng(0)


def _digit(size=32) -> Image.Image:
    yy, xx = np.mgrid[0:size, 0:size] / size
    ring = np.exp(-((np.hypot(xx - 0.5, yy - 0.5) - 0.3) ** 2) / 0.005)
    return Image.fromarray((ring * 255).astype(np.uint8), "L")


def _png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header + tiny zlib stream that would decode to width x height grey pixels."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    raw = zlib.compress(b"\x00" * (width + 1) * 64)   # only the first rows; the decoder would need far more
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def make_corpus(folder: Path) -> list[tuple[Path, str, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    out: list[tuple[Path, str, str]] = []

    def write(name: str, data: bytes, kind: str, expect: str):
        p = folder / name
        p.write_bytes(data)
        out.append((p, kind, expect))

    good = _png_bytes(_digit())
    write("good.png", good, "valid png", "valid")
    # truncated and corrupt
    for cut in (8, 33, 60, len(good) // 2):
        write(f"truncated_{cut}.png", good[:cut], "truncated png", "refuse")
    # every pixel present, only the 12-byte IEND chunk cut off: decoders are lenient, we are not
    write(f"truncated_{len(good) - 12}.png", good[:-12], "png cut before its end chunk", "refuse")
    jpg = io.BytesIO()
    _digit().convert("RGB").save(jpg, format="JPEG")
    for cut in (2, 100, len(jpg.getvalue()) // 2):
        write(f"truncated_{cut}.jpg", jpg.getvalue()[:cut], "truncated jpeg", "refuse")
    write("empty.png", b"", "zero bytes", "refuse")
    for i in range(6):
        write(f"random_{i}.png", RNG.integers(0, 256, 2000 + 500 * i, dtype=np.uint8).tobytes(), "random bytes", "refuse")
    # other formats renamed to .png
    renamed = {
        "text.png": b"hello, I am not an image\n" * 20,
        "page.png": b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>",
        "vector.png": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>',
        "doc.png": b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF",
        "array.png": b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (4,), }" + b" " * 40 + b"\n" + b"\x00" * 32,
        "script.png": b"#!/bin/sh\nrm -rf /\n",
    }
    for name, data in renamed.items():
        write(name, data, "not an image", "refuse")
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        z.writestr("a.png", good)
    write("archive.png", zbuf.getvalue(), "zip renamed", "refuse")
    # decompression bombs and huge sizes
    for w, h in ((9000, 9000), (20000, 3000), (50000, 50000), (7000, 7000)):
        write(f"bomb_{w}x{h}.png", _bomb_png(w, h), "decompression bomb", "refuse")
    # odd but usable modes
    arr = np.asarray(_digit())
    write("sixteen_bit.png", _png_bytes(Image.fromarray(arr.astype(np.uint16) * 257)), "16-bit", "valid")
    write("cmyk.jpg", (lambda b: (_digit().convert("CMYK").save(b, format="JPEG"), b.getvalue())[1])(io.BytesIO()),
          "CMYK", "valid")
    rgba = _digit().convert("RGBA")
    rgba.putalpha(Image.fromarray(arr))
    write("rgba.png", _png_bytes(rgba), "RGBA", "valid")
    write("palette.png", _png_bytes(_digit().convert("RGB").convert("P")), "palette", "valid")
    frames = [_digit(), Image.fromarray(255 - arr)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    write("animated.gif", gif.getvalue(), "animated", "valid")
    exif = Image.Exif()
    exif[0x0112] = 6
    rot = io.BytesIO()
    _digit().convert("RGB").save(rot, format="JPEG", exif=exif.tobytes())
    write("exif_rotated.jpg", rot.getvalue(), "EXIF-rotated", "valid")
    write("strip.png", _png_bytes(Image.fromarray(np.tile(np.arange(200, dtype=np.uint8), (2, 20)))), "2 px strip",
          "valid")
    # no content
    write("one_pixel.png", _png_bytes(Image.new("L", (1, 1), 128)), "1x1", "refuse")
    write("black.png", _png_bytes(Image.new("L", (64, 64), 0)), "all black", "refuse")
    write("transparent.png", _png_bytes(Image.new("RGBA", (64, 64), (0, 0, 0, 0))), "fully transparent", "refuse")
    nan = io.BytesIO()
    Image.fromarray(np.full((16, 16), np.nan, dtype=np.float32), "F").save(nan, format="TIFF")
    write("nan.tif", nan.getvalue(), "NaN TIFF", "refuse")
    inf = io.BytesIO()
    Image.fromarray(np.full((16, 16), np.inf, dtype=np.float32), "F").save(inf, format="TIFF")
    write("inf.tif", inf.getvalue(), "inf TIFF", "refuse")
    # odd names (the content is a good image)
    for name in ("..%2F..%2Fetc%2Fpasswd.png", "ünïcödé 数字 🧭.png", "space and 'quote\".png", "-rf.png",
                 "$(touch pwned).png", "a" * 200 + ".png", ".hidden.png", "semi;colon.png"):
        write(name, good, "odd file name", "valid")
    # many random variants so the corpus is large: random truncations and bit flips of a good PNG
    for i in range(60):
        data = bytearray(good)
        if i % 2:
            data = data[: int(RNG.integers(16, len(good) - 1))]
        else:
            for j in RNG.integers(16, len(data), 8):
                data[j] ^= 0xFF
        write(f"mangled_{i:02d}.png", bytes(data), "mangled png", "either")
    return out


def make_tensor_files(folder: Path) -> list[tuple[Path, str, str]]:
    """Saved directions and steering vectors that are well-formed files but unusable: every value NaN, every
    value infinite, or all zeros (no direction to move along). ``[(path, endpoint, what the refusal says)]``;
    each file has its own name, which the refusal must name (not the name the server stores it under)."""
    import torch

    from lowdim_app.methods.editing import Direction
    from lowdim_app.methods.steering import SteeringVector

    folder.mkdir(parents=True, exist_ok=True)
    fills = {"nan": (float("nan"), "NaN or infinite"), "inf": (float("inf"), "NaN or infinite"),
             "neginf": (float("-inf"), "NaN or infinite"), "zero": (0.0, "all zeros")}
    out = []
    for name, (value, says) in fills.items():
        path = Direction(torch.full((1, 16, 16), value), "digits-gen", 699, index=1, sigma=1.0).save(
            folder / f"my_{name}_direction.safetensors")
        out.append((path, "/apply_direction", says))
        vector = SteeringVector({"up_blocks.0.resnets.0": torch.full((1, 64, 8, 8), value)}, "spatial", 10,
                                "digits-dup", 100, concept=("digit:4",), concept_n=100, seed=0)
        out.append((vector.save(folder / f"my_{name}_vector.safetensors"), "/steer", says))
    # one NaN among good values is as unusable as all of them
    v = torch.randn(1, 16, 16, generator=torch.Generator().manual_seed(0))
    v[0, 3, 5] = float("nan")
    out.append((Direction(v, "digits-gen", 699, index=1).save(folder / "one_nan_direction.safetensors"),
                "/apply_direction", "NaN or infinite"))
    return out
