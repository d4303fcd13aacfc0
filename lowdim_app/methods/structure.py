"""Measured low-dimensional structure of a digits model's denoiser (Wang et al. 2024, arXiv:2409.02426,
§3 and Fig. 3; App. D.1 eq. 46 for the numerical rank).

The built-in digits are 8x8 images upsampled bilinearly to 16x16, a linear map, so every training
image lies in a 64-dimensional subspace ``S`` of R^256 (:func:`digit_subspace`). The true posterior mean
``E[x0 | x_t]`` lies in ``S`` and depends on ``x_t`` only through its projection on ``S`` (the component
outside is pure noise), so its Jacobian ``J_t = d x0_hat / d x_t`` satisfies ``J = P J P`` with ``P`` the
projector on ``S``: rank <= 64 and no energy outside ``S``, at every ``t``. A trained denoiser shows the
papers' structure when its exact Jacobian does the same (:func:`jacobian_structure`), and its top right
singular vector is then an edit direction that beats a random one (:func:`edit_ratio`, Fig. 6).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import torch

from ..metrics import first_crossing, numerical_rank

ETA = 0.99
TIME_FRACTIONS = (0.3, 0.5, 0.7, 0.9)


@lru_cache(maxsize=1)
def _subspace() -> torch.Tensor:
    from ..data.digits import upsample_digits

    # upsample_digits maps values in [0, 16] to 2 * B(x / 16) - 1; B (bilinear) is the linear part
    cols = (upsample_digits(16.0 * np.eye(64)).reshape(64, -1).double() + 1) / 2
    q, r = torch.linalg.qr(cols.T)
    assert float(r.diagonal().abs().min()) > 1e-6, "the upsampling is injective"
    return q.contiguous()


def digit_subspace() -> torch.Tensor:
    """Orthonormal basis (256 x 64, float64) of the span of the built-in 16x16 digits."""
    return _subspace().clone()


def exact_jacobian(model, x_t: torch.Tensor, t: int) -> torch.Tensor:
    """``J_t`` of ``x0_hat(., t)`` at one sample (``n x n`` float64; ``J[i, j] = d x0_hat_i / d x_j``): the
    Jacobian engine's exact path (``n`` VJPs in one batched call). Meant for small ``n`` (256 here)."""
    from .jacobian.diffusion import x0_hat_operator
    from .jacobian.exact import exact_jacobian as exact

    return exact(x0_hat_operator(model, x_t, int(t)), mode="rev").double().cpu()


@dataclass
class Structure:
    """Measures of one Jacobian against the data subspace ``S`` (projector ``P``)."""

    rank: int                  # numerical rank, eq. 46 (eta)
    outside: float             # 1 - ||P J P||_F^2 / ||J||_F^2: share of the energy not in S -> S
    outside_output: float      # ||(I - P) J||_F^2 / ||J||_F^2: output leaves S
    outside_input: float       # ||P J (I - P)||_F^2 / ||J||_F^2: output in S responds to noise outside S
    fro: float                 # ||J||_F
    sigma1: float
    v1_in_subspace: float      # ||P v1||^2 of the top right singular vector

    def as_dict(self) -> dict:
        return {k: (round(v, 5) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def jacobian_structure(J: torch.Tensor, Q: torch.Tensor | None = None, eta: float = ETA) -> tuple[Structure, torch.Tensor]:
    """:class:`Structure` of ``J`` (n x n) against the span of ``Q`` (default: :func:`digit_subspace`), and
    the right singular vectors (rows, descending)."""
    Q = digit_subspace() if Q is None else Q
    J = J.double()
    _, s, Vh = torch.linalg.svd(J)
    total = float((J ** 2).sum())
    QtJ = Q.T @ J
    inside = float(((QtJ @ Q) ** 2).sum())
    out_output = total - float((QtJ ** 2).sum())
    structure = Structure(rank=int(numerical_rank(s, eta)), outside=1 - inside / total,
                          outside_output=out_output / total, outside_input=(total - out_output - inside) / total,
                          fro=total ** 0.5, sigma1=float(s[0]), v1_in_subspace=float(((Q.T @ Vh[0]) ** 2).sum()))
    return structure, Vh


def held_out_digits(n: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """``n`` test-split digits (never trained on) chosen with ``seed``, and their labels."""
    from ..data.digits import load_digits_split

    split = load_digits_split()
    pick = np.sort(np.random.default_rng(seed).choice(len(split.test_labels), size=n, replace=False))
    return split.test_images[pick], split.test_labels[pick].numpy()


def noised(model, x0: torch.Tensor, t: int, seed: int) -> torch.Tensor:
    """Forward-noised ``x_t`` (seeded noise)."""
    return model.add_noise(x0.reshape(1, *model.sample_shape), int(t), model.randn(1, seed))


def edit_ratio(model, x_t: torch.Tensor, t: int, v1: torch.Tensor, *, seed: int, alphas=(-4.0, 4.0),
               steps: int = 50) -> dict:
    """DDIM from ``x_t + alpha v1`` and from ``x_t + alpha r`` (``r`` a seeded random unit direction) down
    to 0 (the control of Wang et al. 2024, Fig. 6): mean RMS pixel change from the ``alpha = 0``
    reconstruction along each, and their ratio."""
    from .editing import Inversion, edit_effect, edit_strip, random_direction, steps_for

    inv = Inversion(x0=None, x_t=x_t.reshape(1, *model.sample_shape), t=int(t), steps=steps_for(model, t, steps))
    alphas = [0.0, *alphas]
    r = random_direction(model.sample_shape, seed)
    dirs = {"v1": v1.reshape(model.sample_shape).float(), "random": r}
    change = {}
    for name, d in dirs.items():
        strip = edit_strip(model, inv, d, alphas)
        change[name] = float(np.mean(edit_effect(strip, alphas)[1:]))
    return {"v1": change["v1"], "random": change["random"], "ratio": change["v1"] / max(change["random"], 1e-12)}


def structure_evidence(model, *, n_digits: int = 8, fractions=TIME_FRACTIONS, seed: int = 0, eta: float = ETA,
                       edit_fractions=(0.5, 0.7), inverted: bool = True, progress: bool = False) -> dict:
    """Per time fraction, over ``n_digits`` held-out digits: numerical rank and energy outside the data
    subspace of the exact ``J_t`` at the DDIM-inverted (``inverted``) or forward-noised digit, and (at
    ``edit_fractions``) the change of an edit along ``v1`` over a random direction."""
    from tqdm.auto import tqdm

    from .editing import invert

    images, labels = held_out_digits(n_digits, seed)
    Q = digit_subspace()
    out = {"n_digits": n_digits, "seed": seed, "eta": eta, "x_t": "DDIM-inverted (50-step grid)" if inverted
           else "forward-noised (seeded)", "per_t": []}
    for frac in fractions:
        t = model.timestep_from_fraction(frac)
        abar = float(model.abar(t))
        rows = []
        for i in tqdm(range(n_digits), desc=f"t = {frac}T", disable=not progress, leave=False):
            x0 = images[i:i + 1]
            x_t = invert(model, x0, t).x_t if inverted else noised(model, x0, t, seed + i)
            st, Vh = jacobian_structure(exact_jacobian(model, x_t, t), Q, eta)
            row = st.as_dict()
            if frac in edit_fractions:
                row.update({f"edit_{k}": round(v, 5) for k, v in
                            edit_ratio(model, x_t, t, Vh[0], seed=seed + 1000 + i).items()})
            rows.append(row)

        def stat(key):
            vals = np.array([r[key] for r in rows], dtype=float)
            return {"median": round(float(np.median(vals)), 4), "min": round(float(vals.min()), 4),
                    "max": round(float(vals.max()), 4)}

        entry = {"t_fraction": frac, "t": t, "snr": round((abar / (1 - abar)) ** 0.5, 5),
                 "rank": stat("rank"), "outside": stat("outside"), "outside_output": stat("outside_output"),
                 "outside_input": stat("outside_input"), "fro": stat("fro")}
        if frac in edit_fractions:
            entry["edit_ratio"] = stat("edit_ratio")
        out["per_t"].append(entry)
    out["labels"] = labels.tolist()
    return out


def classifier_path(model, image: torch.Tensor, t_fraction: float = 0.7, alphas=tuple(np.linspace(-6, 6, 25)),
                    seed: int = 0, steps: int = 50) -> dict:
    """The digit classifier's class probabilities along an edit of ``image`` (DDIM-inverted to
    ``t_fraction`` T) along ``v1`` of the exact ``J_t`` and along a random unit direction (seeded): is the
    edit semantic (the class moves) and continuous (no jump between neighbouring alphas)?

    ``max_step``: the largest total-variation distance between the probability vectors at neighbouring
    alphas; ``classes``: the argmax class per alpha; ``width``: the alpha span over which the probability of
    the alpha = 0 class falls from 0.9 to 0.1 (:func:`transition_width`); ``continuity``: the largest RMS
    pixel step over the path's length (:func:`path_continuity`, ``1 / (n - 1)`` for an even path)."""
    from ..data.classifier import predict_proba
    from .editing import MAX_ALPHAS, edit_strip, invert, random_direction

    t = model.timestep_from_fraction(t_fraction)
    inv = invert(model, image.reshape(1, *model.sample_shape), t, steps)
    _, Vh = jacobian_structure(exact_jacobian(model, inv.x_t, t))
    alphas = [float(a) for a in alphas]
    out = {"t_fraction": t_fraction, "t": t, "alphas": alphas}
    for name, d in (("v1", Vh[0].reshape(model.sample_shape).float()),
                    ("random", random_direction(model.sample_shape, seed))):
        images = torch.cat([edit_strip(model, inv, d, alphas[i:i + MAX_ALPHAS])
                            for i in range(0, len(alphas), MAX_ALPHAS)])
        p = predict_proba(images)
        start = int(p[int(np.argmin(np.abs(alphas)))].argmax())
        out[name] = {"probabilities": np.round(p, 4).tolist(), "classes": p.argmax(1).tolist(),
                     "max_step": round(float(tv_steps(p).max()), 4),
                     "width": _finite(transition_width(alphas, p[:, start])["width"]),
                     "continuity": round(path_continuity(images), 4)}
    return out


def _finite(v: float) -> float | None:
    """Rounded, or ``None`` for nan (a card is strict JSON)."""
    return None if v != v else round(float(v), 4)


def tv_steps(probabilities) -> np.ndarray:
    """Total-variation distance between the class-probability vectors at neighbouring points of a path."""
    p = np.asarray(probabilities, dtype=float)
    return 0.5 * np.abs(np.diff(p, axis=0)).sum(1)


def transition_width(alphas, prob, start: float = 0.0, hi: float = 0.9, lo: float = 0.1) -> dict:
    """How gradually a class is left along a path: going outward from ``start`` on each side, the alpha span
    over which ``prob`` (the probability of the class at ``start``) first falls from ``hi`` to ``lo``, with the
    crossings linearly interpolated between grid points (so a fine enough grid measures it, not the grid).

    Returns ``{"width": narrowest span over the sides that cross lo (nan if none), "side": -1 / +1, "at": the
    alpha of its ``lo`` crossing}``; a side whose ``prob`` starts below ``hi`` counts from ``start``."""
    a, q = np.asarray(alphas, dtype=float), np.asarray(prob, dtype=float)
    i0 = int(np.argmin(np.abs(a - start)))
    best = {"width": float("nan"), "side": 0, "at": float("nan")}

    def crossing(idx, level):     # the first fall below level along idx, and the index just past it
        below = np.nonzero(q[idx] < level)[0]
        if not len(below) or below[0] == 0:
            return None, None
        return first_crossing(a[idx], -q[idx], -level), idx[below[0]]

    for side, idx in ((-1, list(range(i0, -1, -1))), (1, list(range(i0, len(a))))):
        if len(idx) < 2:
            continue
        if q[i0] >= hi:
            a_hi, k = crossing(idx, hi)
            if a_hi is None:
                continue
            idx = idx[idx.index(k) - 1:]
        else:
            a_hi = a[i0]
        a_lo, _ = crossing(idx, lo)
        if a_lo is None:
            continue
        w = abs(a_lo - a_hi)
        if not w >= best["width"]:       # smaller, or the first (nan)
            best = {"width": float(w), "side": side, "at": float(a_lo)}
    return best


def path_continuity(images) -> float:
    """Largest RMS pixel step between neighbouring images of a path over the path's length (sum of the
    steps): ``1 / (n - 1)`` for an evenly moving path of ``n`` images, 1 for a path that jumps once."""
    x = torch.as_tensor(images).flatten(1).double()
    steps = (x[1:] - x[:-1]).pow(2).mean(1).sqrt()
    return float(steps.max() / steps.sum().clamp(min=1e-12))


def data_span_dim(model) -> int | None:
    """Dimension of the span of the model's training images, from its card (``data.span_dim``, or computed
    from ``train_index`` for a digits model); ``None`` when the card does not say what the data were."""
    card = getattr(model, "card", None) or {}
    dim = card.get("data", {}).get("span_dim")
    if dim is None and "train_index" in card and "digits" in str(card.get("data", {}).get("source", "")):
        from ..data.digits import load_digits_split
        from ..diffusion.training import span_dimension

        dim = span_dimension(load_digits_split().train_images[np.asarray(card["train_index"], dtype=int)])
    return None if dim is None else int(dim)
