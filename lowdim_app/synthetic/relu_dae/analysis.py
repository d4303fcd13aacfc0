"""Closed forms of Zhang et al. 2025 (arXiv:2512.20963), §3, checked against trained ReLU DAEs.

* memorization, ``p >= n`` separable samples (Cor. 3.2, eq. 9): the columns are ``r_i x_i`` with
  ``r_i = sqrt((||x_i||^2 - n lam) / (||x_i||^4 + sigma^2 ||x_i||^2))``; a sample repeated ``c`` times is
  a rank-1 cluster of Theorem 3.1 and gets ``n lam / c`` in place of ``n lam`` (Cor. 3.4).
* generalization, ``p << n`` (Thm. 3.1 eq. 8, Cor. 3.3): the block of a cluster ``X_k`` is
  ``U_k diag(s) O_k^T``, ``s_j^2 = (1 + n_k sigma^2 / Lambda_j)^{-1} (1 - n lam / Lambda_j)`` with
  ``(Lambda_j, U_k)`` the top ``p_k`` eigenpairs of the (uncentred) Gram matrix ``X_k X_k^T``.

The columns of an optimum are only defined up to splitting: ``w_a = a u, w_b = b u`` with
``a^2 + b^2 = r^2`` gives the same ``f`` and the same penalty (the remark after Cor. 3.2). The checks
therefore report both the best single column and the *effective* norm ``||[W1^T x_i / ||x_i||]_+||``
(the norm of all the columns that fire on ``x_i``), which eq. 9 fixes regardless of splitting.

Representation statistics (§3.3): the standard deviation is the shared spikiness score
(:func:`lowdim_app.metrics.spikiness`); ``max/l2`` and the active-unit count are this lab's.
"""
from __future__ import annotations

import torch

from ...metrics import principal_cosines, spikiness
from .data import DAEData, cosine_matrix
from .model import ReluDAE

Tensor = torch.Tensor


# ------------------------------------------------------------------------------------- closed forms
def memorization_r(X: Tensor, sigma: float, lam: float, n_total: int | None = None,
                   multiplicity: Tensor | None = None) -> Tensor:
    """Eq. 9: ``r_i = sqrt((||x_i||^2 - n lam / c_i) / (||x_i||^4 + sigma^2 ||x_i||^2))`` (``c_i`` copies)."""
    X = torch.as_tensor(X, dtype=torch.float64)
    n = len(X) if n_total is None else n_total
    c = torch.ones(len(X), dtype=torch.float64) if multiplicity is None else multiplicity.double()
    nx2 = X.pow(2).sum(1)
    num = (nx2 - n * lam / c).clamp_min(0)
    return (num / (nx2 ** 2 + sigma ** 2 * nx2)).sqrt()


def generalization_block(Xk: Tensor, pk: int, sigma: float, lam: float, n_total: int) -> dict:
    """Eq. 8 for one cluster: top-``pk`` eigenpairs of ``X_k X_k^T`` and the block ``U diag(s)``.

    Returns ``U`` (d x pk), ``Lambda`` (pk), ``s2`` (pk) and ``A = U diag(s2) U^T`` (= ``W_k W_k^T``).
    """
    Xk = torch.as_tensor(Xk, dtype=torch.float64)
    nk = len(Xk)
    lam_all, U = torch.linalg.eigh(Xk.T @ Xk)
    lam_all, U = lam_all.flip(0), U.flip(1)
    Lam, Up = lam_all[:pk], U[:, :pk]
    safe = Lam.clamp_min(1e-12)
    s2 = torch.where(Lam > n_total * lam, (1.0 / (1.0 + nk * sigma ** 2 / safe)) * (1.0 - n_total * lam / safe),
                     torch.zeros_like(Lam))
    return {"U": Up, "Lambda": Lam, "s2": s2, "A": Up @ torch.diag(s2) @ Up.T, "W": Up * s2.sqrt()}


# ------------------------------------------------------------------------------------------ checks
def alive_columns(dae: ReluDAE, rel: float = 0.05) -> Tensor:
    """Hidden units whose ``||w1_j|| ||w2_j||`` is at least ``rel`` of the largest (the rest decayed)."""
    norms = dae.W1.norm(dim=0) * dae.W2.norm(dim=0)
    return norms > rel * norms.max().clamp_min(1e-12)


def column_match(dae: ReluDAE, data: DAEData, rows: list[int] | None = None) -> dict:
    """Eq. 9 check: for each distinct training sample, its best column (cosine), that column's norm,
    the effective norm ``||[W1^T x_i/||x_i||]_+||`` and the eq. 9 norm ``r_i ||x_i||``."""
    rows = data.unique_index.tolist() if rows is None else rows
    X = data.train[rows]
    mult = data.multiplicity[rows]
    r = memorization_r(X, dae.sigma, dae.lam, n_total=len(data.train), multiplicity=mult)
    theory = (r * X.double().norm(dim=1)).float()
    C = cosine_matrix(X, dae.W1.T)                                     # n x p
    best_cos, best = C.max(1)
    xn = torch.nn.functional.normalize(X, dim=1)
    effective = (xn @ dae.W1).clamp_min(0).norm(dim=1)
    best_norm = dae.W1.norm(dim=0)[best]
    alive = alive_columns(dae)
    n_split = ((C > 0.95) & alive[None, :]).sum(1)
    # every alive column should store one training sample (cosine to its best sample)
    col_purity = C.max(0).values[alive] if alive.any() else torch.zeros(0)
    return {"rows": rows, "best_column": best.tolist(), "best_cos": best_cos.tolist(),
            "best_norm": best_norm.tolist(), "effective_norm": effective.tolist(), "eq9_norm": theory.tolist(),
            "columns_per_sample": n_split.tolist(), "alive_columns": int(alive.sum()),
            "alive_column_best_cos": col_purity.tolist(), "r": r.tolist()}


def block_analysis(dae: ReluDAE, data: DAEData, clusters: list[int] | None = None) -> list[dict]:
    """Eq. 8 check per cluster (MoG modes): assign alive columns to the cluster they fire on most, then
    compare ``W_k W_k^T`` (``W2_k W1_k^T`` untied) with the rank-``p_k`` eq. 8 matrix, the spans (principal
    cosines against the top ``p_k`` eigenvectors of ``X_k X_k^T``) and the eigenvalues."""
    X, lab = data.train, data.labels
    clusters = sorted(set(lab.tolist())) if clusters is None else clusters
    alive = alive_columns(dae)
    act = torch.stack([dae.encode(X[lab == k]).mean(0) for k in clusters])      # K x p
    owner = act.argmax(0)
    out = []
    for ki, k in enumerate(clusters):
        cols = (owner == ki) & alive
        pk = int(cols.sum())
        Xk = X[lab == k]
        res = {"cluster": int(k), "n_k": int(len(Xk)), "p_k": pk}
        if pk == 0:
            out.append(res)
            continue
        th = generalization_block(Xk, pk, dae.sigma, dae.lam, len(X))
        W1k, W2k = dae.W1[:, cols].double(), dae.W2[:, cols].double()
        M = 0.5 * (W2k @ W1k.T + W1k @ W2k.T)
        rel = float((M - th["A"]).norm() / th["A"].norm().clamp_min(1e-12))
        cosines = principal_cosines(th["U"].T, W1k.T)
        learned = torch.linalg.eigvalsh(M).flip(0)[:pk]
        neg = float((dae.encode(Xk)[:, cols] <= 0).float().mean())
        res.update({"rel_err_WWt_eq8": rel, "principal_cos": cosines.tolist(),
                    "eig_learned": learned.tolist(), "eig_eq8": th["s2"].tolist(),
                    "gram_eig": (th["Lambda"] / len(Xk)).tolist(), "inactive_fraction": neg})
        out.append(res)
    return out


def subspace_capture(dae: ReluDAE, X: Tensor) -> dict:
    """Principal cosines between span(alive W1 columns) and the top eigenvectors of ``X^T X``."""
    alive = alive_columns(dae)
    W = dae.W1[:, alive].double()
    q = min(W.shape[1], X.shape[1])
    if q == 0:
        return {"k": 0, "principal_cos": []}
    _, U = torch.linalg.eigh(X.double().T @ X.double())
    c = principal_cosines(U.flip(1)[:, :q].T, W.T)
    return {"k": q, "principal_cos": c.tolist(), "mean_cos2": float((c ** 2).mean())}


# ---------------------------------------------------------------------------- representation statistics
def representation_stats(H: Tensor) -> dict:
    """Per-row statistics of representations ``H`` (``n x p``): ``std`` (the spikiness score of §3.3,
    population standard deviation over units), ``max_over_l2`` and ``active`` (units above 5% of the
    row's largest)."""
    l2 = H.norm(dim=1).clamp_min(1e-12)
    return {"std": spikiness(H, "std"), "max_over_l2": H.max(1).values / l2,
            "active": (H > 0.05 * H.max(1, keepdim=True).values.clamp_min(1e-12)).sum(1).float()}


def stats(x) -> dict:
    """Mean, min, median and max of a set of values (empty dict for none)."""
    x = torch.as_tensor(x).double().flatten()
    if len(x) == 0:
        return {}
    return {"mean": float(x.mean()), "min": float(x.min()), "median": float(x.median()), "max": float(x.max())}
