"""Shared figure setup and rendering.

Figures are built with matplotlib's object API (``matplotlib.figure.Figure``), never through
pyplot's global figure registry, and every figure function (decorated with :func:`locked`) and
every rendering (``to_pil``, ``save_figure``) holds one process-wide lock: matplotlib's text
layout and mathtext parser keep module-level state that is not thread-safe (``tight_layout``
parses tick labels too), and the app builds figures for concurrent requests.
"""
from __future__ import annotations

import functools
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from .. import forksafe  # noqa: E402

RENDER_LOCK = forksafe.Lock(reentrant=True)


def locked(fn):
    """Run a figure-building function under :data:`RENDER_LOCK`."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with RENDER_LOCK:
            return fn(*args, **kwargs)
    return wrapper


def new_figure(w: float = 6.0, h: float = 3.6):
    """A ``(Figure, Axes)`` pair with the project's style (grid, 110 dpi)."""
    fig = Figure(figsize=(w, h), dpi=110)
    ax = fig.add_subplot()
    ax.grid(alpha=0.3)
    return fig, ax


def _close(fig) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)   # a no-op for object-API figures; frees pyplot-made ones


def save_figure(fig, path, dpi: int | None = 110, tight: bool = True) -> Path:
    """Write ``fig`` as PNG (parent folders created) and close it; returns the path. ``dpi=None``:
    the figure's own; ``tight=False`` for figures that lay themselves out (no second draw)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with RENDER_LOCK:
        fig.savefig(path, dpi=dpi or fig.dpi, **({"bbox_inches": "tight"} if tight else {}))
    _close(fig)
    return path


def _png(fig) -> bytes:
    buf = io.BytesIO()
    with RENDER_LOCK:
        fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def show_in_notebooks() -> None:
    """In IPython / Jupyter, a figure a cell returns displays as PNG (this module selects the Agg backend,
    which has no display hook of its own)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None and hasattr(shell, "display_formatter"):
        shell.display_formatter.formatters["image/png"].for_type(Figure, _png)


show_in_notebooks()


def to_pil(fig) -> Image.Image:
    """Render ``fig`` to an RGB PIL image and close it."""
    buf = io.BytesIO()
    with RENDER_LOCK:
        fig.savefig(buf, format="png", bbox_inches="tight")
    _close(fig)
    buf.seek(0)
    return Image.open(buf).convert("RGB")
