"""One fix to gradio, installed when the app is built.

gradio 6.31 saves every image output (``gr.Image``, ``gr.Gallery``, figures as images) to a cache file
named by the hash of its bytes, and rewrites that file in place each time. Two requests that return
the same image at the same moment (the same seed, twice) then race: one truncates the file while the
other's client downloads it, and gets an empty image. :func:`save_pil_to_cache` writes under a
temporary name and renames into place, as gradio already does for files (``save_file_to_cache``).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def save_pil_to_cache(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    """gradio's ``save_pil_to_cache``, but a reader never sees a partly written file."""
    from gradio.processing_utils import encode_pil_to_bytes, hash_bytes

    data = encode_pil_to_bytes(img, format)
    folder = Path(cache_dir) / hash_bytes(data)
    folder.mkdir(exist_ok=True, parents=True)
    target = folder / f"{name}.{format}"
    if not target.exists():
        fd, staging = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(staging, target)
    return str(target.resolve())


def install() -> None:
    import gradio.processing_utils as pu

    if pu.save_pil_to_cache is not save_pil_to_cache:
        pu.save_pil_to_cache = save_pil_to_cache
