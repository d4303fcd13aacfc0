"""Figures for Jacobian editing: singular-value spectrum with the numerical rank (Wang et al. 2024,
eq. 46), change vs edit strength beside the random control (Fig. 6), rank vs SNR (Fig. 3a)."""
from __future__ import annotations

import numpy as np
import torch

from .common import locked, new_figure


def direction_images(T: torch.Tensor) -> torch.Tensor:
    """Directions (k x C x H x W) scaled to [-1, 1] per direction for display; latents show channels 0-2."""
    T = T[:, :3] if T.shape[1] > 3 else T
    return T / T.flatten(1).abs().amax(1).clamp(min=1e-12).view(-1, 1, 1, 1)


@locked
def spectrum_figure(singular_values, numerical_rank: int | None = None, eta: float = 0.99, title: str = "",
                    data_dim: int | None = None):
    """Singular values of ``J_t`` with the numerical rank; ``data_dim``: the dimension of the span of the
    training images (the posterior mean's Jacobian has at most that rank), drawn when the spectrum reaches it."""
    s = np.asarray(singular_values, dtype=float)
    fig, ax = new_figure()
    ax.semilogy(np.arange(1, len(s) + 1), np.maximum(s, 1e-12), "o-", ms=3, lw=1)
    if numerical_rank is not None:
        ax.axvline(numerical_rank, color="C3", ls="--", label=f"numerical rank r = {numerical_rank} (eta = {eta})")
    if data_dim and data_dim < len(s):
        ax.axvline(data_dim, color="C2", ls=":", label=f"data dimension {data_dim} (span of the training images)")
    if numerical_rank is not None or (data_dim and data_dim < len(s)):
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, frameon=False)   # off the data
    ax.set_xlabel("index i")
    ax.set_ylabel("singular value of J_t")
    ax.set_title(title or "Spectrum of d x0_hat / d x_t", fontsize=10)
    fig.tight_layout()
    return fig


@locked
def effect_figure(alphas, along, control, label: str = "singular direction", proba_along=None, proba_control=None):
    """RMS pixel change from the alpha = 0 reconstruction along a direction and along the random
    unit direction of the control (Wang et al. 2024, Fig. 6). With the digit classifier's probabilities of
    both rows (``len(alphas) x 10``), a second panel: the probability of the class at alpha = 0 and of the
    most likely other class vs alpha, the direction solid, the random control dashed -- is the edit semantic
    (the class moves) and continuous?"""
    if proba_along is None:
        fig, ax = new_figure(5.5, 3.0)
    else:
        fig, ax = new_figure(9.5, 3.2)
        grid = fig.add_gridspec(1, 2)
        ax.set_subplotspec(grid[0])
    ax.plot(alphas, along, "o-", label=label)
    ax.plot(alphas, control, "s--", label="random unit direction (control)")
    ax.set_xlabel("alpha")
    ax.set_ylabel("RMS pixel change vs alpha = 0")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2 if proba_along is None else 1,
              frameon=False)   # off the data
    if proba_along is not None:
        pa, pc = np.asarray(proba_along, dtype=float), np.asarray(proba_control, dtype=float)
        zero = int(np.argmin(np.abs(np.asarray(alphas, dtype=float))))
        start = int(pa[zero].argmax())
        other = np.delete(np.arange(pa.shape[1]), start)
        top = int(other[np.concatenate([pa, pc])[:, other].max(0).argmax()])   # most likely other class
        px = fig.add_subplot(grid[1])
        px.grid(alpha=0.3)
        px.plot(alphas, pa[:, start], "-", color="C0", marker=".", label=f"p({start}) along {label}")
        px.plot(alphas, pa[:, top], "-", color="C3", marker=".", label=f"p({top}) along {label}")
        px.plot(alphas, pc[:, start], "--", color="C0", label=f"p({start}) random")
        px.plot(alphas, pc[:, top], "--", color="C3", label=f"p({top}) random")
        px.set_ylim(-0.03, 1.03)
        px.set_xlabel("alpha")
        px.set_ylabel("digit classifier probability")
        px.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


@locked
def rank_snr_figure(points, title: str = "", data_dim: int | None = None):
    """Rank / n against the SNR along a trajectory; ``data_dim``: the dimension of the span of the training
    images, drawn as a line (the posterior mean's Jacobian has at most that rank)."""
    fig, ax = new_figure()
    snr = [p.snr for p in points]
    frac = [p.rank_fraction for p in points]
    ax.semilogx(snr, frac, "o-", label="numerical rank / n")
    if data_dim and points:
        n = points[0].n
        ax.axhline(data_dim / n, color="C2", ls="--",
                   label=f"data dimension / n = {data_dim}/{n} (span of the training images)")
    lb = [p.snr for p in points if p.rank_is_lower_bound]
    if lb:
        ax.semilogx(lb, [p.rank_fraction for p in points if p.rank_is_lower_bound], "v", color="C3",
                    label="lower bound (top-k exhausted)")
    ax.set_xlabel("SNR = 1 / sigma_t")
    ax.set_ylabel("rank(J_t) / n")
    ax.set_ylim(0, max(1.0, max(frac) * 1.05))
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)   # under the axis, off the data
    ax.set_title(title or "Low-rank Jacobian along a sampling trajectory (Wang et al. 2024, Fig. 3a)", fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- labelled strips (display only)
def _font(size: int):
    from matplotlib import font_manager
    from PIL import ImageFont

    try:
        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except Exception:   # pragma: no cover - matplotlib always ships DejaVu Sans
        return ImageFont.load_default()


def strip_geometry(width: int, height: int, ncols: int, nrows: int, padding: int = 2) -> tuple[int, int, int] | None:
    """``(upscale, tile_w, tile_h)`` of a ``make_grid`` strip of ``nrows x ncols`` tiles, or ``None``."""
    for up in range(max(1, width // (ncols * 4)), 0, -1):
        if width % up or height % up:
            continue
        w, h = width // up - padding, height // up - padding
        if w % ncols or h % nrows:
            continue
        tw, th = w // ncols - padding, h // nrows - padding
        if tw >= 8 and th >= 8:
            return up, tw, th
    return None


def label_strip(strip, values, *, symbol: str = "α", rows=(), highlight: float | None = 0.0, mask=None,
                padding: int = 2):
    """A copy of a ``make_grid`` strip (one column per value) for display: ``symbol = value`` under each
    column, the ``highlight`` column (the unedited reconstruction, alpha = 0) framed and bold, a label
    left of each row, and with ``mask`` (a boolean ``H x W`` array) its outline drawn on every tile.
    The strip the API returns and the CLI writes stays unlabelled."""
    import numpy as np
    from PIL import Image, ImageDraw

    img = strip.convert("RGB") if hasattr(strip, "convert") else Image.fromarray(np.asarray(strip)).convert("RGB")
    values = [float(v) for v in values]
    n, r = len(values), max(1, len(rows))
    geo = strip_geometry(img.width, img.height, n, r, padding)
    if geo is None:   # not a strip of this shape: equal columns, no mask
        up, tw, th = 1, img.width // max(n, 1) - padding, img.height // r - padding
        mask = None
    else:
        up, tw, th = geo
    pitch_x, pitch_y, pad = (tw + padding) * up, (th + padding) * up, padding * up
    cell_w, cell_h = tw * up, th * up
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.any():
            m = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((cell_w, cell_h), Image.Resampling.NEAREST)) > 0
            inner = m.copy()
            inner[1:-1, 1:-1] = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
            edge = m & ~inner
            thick = max(1, up // 4)
            for _ in range(thick - 1):   # a visible line at a large upscale
                grown = edge.copy()
                grown[1:] |= edge[:-1]
                grown[:, 1:] |= edge[:, :-1]
                edge = grown & m
            arr = np.asarray(img).copy()
            for i in range(n):
                for j in range(r):
                    y, x = pad + j * pitch_y, pad + i * pitch_x
                    tile = arr[y:y + cell_h, x:x + cell_w]
                    tile[edge[:tile.shape[0], :tile.shape[1]]] = (255, 60, 60)
            img = Image.fromarray(arr)
    size = int(min(max(12, min(pitch_x, 200) // 5), 22))
    font, bold = _font(size), _font(size + 1)
    # labels below the tiles, a margin above them: the app draws its label badge and toolbar over the top
    head, top = size * 2, size
    left = (max(int(bold.getlength(str(t))) for t in rows) + 12) if rows else 0
    out = Image.new("RGB", (img.width + left, img.height + head + top), "white")
    out.paste(img, (left, top))
    draw = ImageDraw.Draw(out)
    zero = None
    if highlight is not None and values:
        zero = int(np.argmin([abs(v - highlight) for v in values]))
        if abs(values[zero] - highlight) > 1e-9:
            zero = None
    texts = [f"{symbol} = {v:+.3g}" if v else f"{symbol} = 0" for v in values]
    while size > 10 and max(draw.textlength(t, font=bold) for t in texts) + 6 > pitch_x:
        size -= 1
        font, bold = _font(size), _font(size + 1)
    if max(draw.textlength(t, font=bold) for t in texts) + 6 > pitch_x:   # still too wide: the values alone, alike
        texts = [f"{v:+.3g}" if v else f"{symbol} = 0" for v in values]
    for i, v in enumerate(values):
        cx = left + pad + i * pitch_x + cell_w // 2
        text = texts[i]
        f = bold if i == zero else font
        draw.text((cx, top + img.height + head // 2), text, fill=(200, 30, 30) if i == zero else (20, 20, 20), font=f, anchor="mm")
        if i == zero:
            x0 = left + pad + i * pitch_x - max(1, pad // 2)
            draw.rectangle([x0, top - 3, x0 + cell_w + pad, out.height - 1], outline=(220, 40, 40), width=3)
    for j, t in enumerate(rows):
        cy = top + pad + j * pitch_y + cell_h // 2
        draw.text((left - 6, cy), str(t), fill=(20, 20, 20), font=bold, anchor="rm")
    return out
