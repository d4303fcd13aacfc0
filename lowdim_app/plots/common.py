"""Shared matplotlib setup (Agg backend, consistent style) and figure -> PIL conversion."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402


def new_figure(w: float = 6.0, h: float = 3.6):
    fig, ax = plt.subplots(figsize=(w, h), dpi=110)
    ax.grid(alpha=0.3)
    return fig, ax


def save_figure(fig, path, dpi: int = 110):
    """Write ``fig`` as PNG (parent folders created) and close it; returns the path."""
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def to_pil(fig) -> Image.Image:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    buf.seek(0)
    return Image.open(buf).convert("RGB")
