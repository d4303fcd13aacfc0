"""Batched solvers for the problems that training the low-rank DAE is equivalent to.

Wang et al. 2024 (arXiv:2409.02426): Thm. 1 (PCA, eq. 12), Thm. 3 (subspace clustering,
eq. 18) and the success criterion of App. E.1. Everything works on a *batch* of independent problems at once
(batched SVD / QR / eigh), padded to common sizes with masks:

* ``X``      ``(B, N, n)`` samples (rows), ``smask`` ``(B, N)`` which rows are real,
* ``d``      ``(B,)`` subspace dimension of each problem (all components of one problem
  share it, as in the paper's phase-transition experiment),
* bases      ``(B, K, n, dmax)`` (or ``(B, n, dmax)`` for K = 1) with the columns past ``d``
  set to zero.

PCA when ``N < d`` (Thm. 2 ii): only ``N`` directions are determined by the data; every
completion by orthonormal vectors orthogonal to them is an optimum of eq. 12. We complete
with *random* (seeded) orthonormal vectors, i.e. we pick one optimum at random instead of
whatever LAPACK returns for the zero singular values.

Subspace clustering (eq. 18) is solved by K-subspaces alternation (assign every point to
the subspace with the largest ``||U_k^T x||``, refit each ``U_k`` by PCA of its points, with
the random completion above), mutual orthogonality of the ``U_k`` is not imposed (the usual
relaxation; the true subspaces are orthogonal). Initialisation (``init``):

* ``"spectral"`` (default): spectral clustering of the absolute-cosine affinity
  ``|<x_i, x_j>| / (||x_i|| ||x_j||)`` (top-K eigenvectors of the normalised affinity,
  rows normalised, K-means with farthest-point seeding), then K-subspaces refinement.
  For orthogonal subspaces and noise-free data the affinity has exactly K blocks.
* ``"random"``: Haar-random orthonormal bases.

With ``restarts = R > 1`` the first run uses ``init`` and the others random bases; the run
with the largest objective (eq. 18) is kept (ties go to the earlier run).
"""
from __future__ import annotations

import itertools

import torch

__all__ = [
    "pca_subspaces", "random_completion", "k_subspaces", "clustering_objective",
    "projector_distances", "subspace_error", "success", "stiefel_retract",
]


def _rel_tol(dtype) -> float:
    return 1e-9 if dtype == torch.float64 else 1e-4


def stiefel_retract(Z: torch.Tensor) -> torch.Tensor:
    """QR retraction onto the Stiefel manifold, with the sign fix ``diag(R) > 0`` so that an
    already-orthonormal ``Z`` is returned unchanged. Batched over leading dimensions."""
    q, r = torch.linalg.qr(Z)
    sgn = torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))
    sgn = torch.where(sgn == 0, torch.ones_like(sgn), sgn)
    return q * sgn.unsqueeze(-2)


def random_completion(U: torch.Tensor, valid: torch.Tensor, generator: torch.Generator | None = None):
    """Replace the invalid columns of ``U`` (``(..., n, r)``; valid ones must come first and be
    orthonormal) by random orthonormal vectors orthogonal to the valid ones."""
    G = torch.randn(U.shape, generator=generator, dtype=torch.float64).to(U.dtype)
    Z = torch.where(valid.unsqueeze(-2), U, G)
    return stiefel_retract(Z)


def _dim_mask(d: torch.Tensor, dmax: int, shape_prefix) -> torch.Tensor:
    """``(..., dmax)`` bool mask of the first ``d`` columns, broadcast to ``shape_prefix``."""
    ar = torch.arange(dmax)
    return ar < d.reshape(d.shape + (1,)).expand(tuple(shape_prefix) + (dmax,))


def pca_subspaces(X: torch.Tensor, d, smask: torch.Tensor | None = None,
                  generator: torch.Generator | None = None, dmax: int | None = None) -> torch.Tensor:
    """Top-``d`` principal subspace (Thm. 1, eq. 12: ``max ||U^T X||_F^2, U^T U = I``) of each
    problem in a batch.

    ``X`` ``(..., N, n)``; ``d`` int or ``(...)`` tensor; ``smask`` ``(..., N)``. Returns
    ``(..., n, dmax)`` with zero columns past ``d``. Directions with zero singular value
    (``N < d``) get a random orthonormal completion (see module doc).
    """
    lead = X.shape[:-2]
    N, n = X.shape[-2:]
    d = torch.as_tensor(d, dtype=torch.long).expand(lead) if not isinstance(d, torch.Tensor) \
        else d.to(torch.long).expand(lead)
    dmax = int(d.max()) if dmax is None else int(dmax)
    if smask is not None:
        X = X * smask.unsqueeze(-1).to(X.dtype)
    if N == 0:
        U = torch.zeros(lead + (n, dmax), dtype=X.dtype)
        S = torch.zeros(lead + (dmax,), dtype=X.dtype)
    else:
        U, S, _ = torch.linalg.svd(X.transpose(-1, -2), full_matrices=False)  # (..., n, r)
        r = U.shape[-1]
        if r < dmax:
            U = torch.cat([U, torch.zeros(lead + (n, dmax - r), dtype=X.dtype)], -1)
            S = torch.cat([S, torch.zeros(lead + (dmax - r,), dtype=X.dtype)], -1)
        U, S = U[..., :dmax], S[..., :dmax]
    smax = S.amax(-1, keepdim=True) if S.shape[-1] else S
    valid = S > _rel_tol(X.dtype) * torch.clamp(smax, min=1e-300)
    valid = valid & (torch.arange(dmax) < d.unsqueeze(-1))
    U = random_completion(U, valid, generator)
    return U * _dim_mask(d, dmax, lead).unsqueeze(-2).to(U.dtype)


# ----------------------------------------------------------------------------- clustering
def _proj_energy(X: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
    """``||U_k^T x_i||^2``: ``X (B, N, n)``, ``U (B, K, n, d)`` -> ``(B, N, K)``."""
    return (torch.einsum("bin,bknd->bikd", X, U) ** 2).sum(-1)


def clustering_objective(X, U, smask=None) -> torch.Tensor:
    """Eq. 18: ``(1/N) sum_i max_k ||U_k^T x_i||^2`` per problem ``(B,)``."""
    e = _proj_energy(X, U).amax(-1)
    if smask is None:
        return e.mean(-1)
    m = smask.to(e.dtype)
    return (e * m).sum(-1) / m.sum(-1).clamp(min=1)


def _spectral_labels(X, smask, K, kmeans_iters=20):
    B, N, n = X.shape
    norms = X.norm(dim=-1).clamp(min=1e-300)
    Xn = X / norms.unsqueeze(-1)
    A = (Xn @ Xn.transpose(-1, -2)).abs()
    m = smask.to(X.dtype)
    A = A * m.unsqueeze(-1) * m.unsqueeze(-2)
    A = A - torch.diag_embed(torch.diagonal(A, dim1=-2, dim2=-1))
    deg = A.sum(-1)
    dinv = torch.where(deg > 0, deg.clamp(min=1e-300).rsqrt(), torch.zeros_like(deg))
    L = dinv.unsqueeze(-1) * A * dinv.unsqueeze(-2)
    _, V = torch.linalg.eigh(L)
    E = V[..., -K:]                                           # top-K eigenvectors
    E = E / E.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    # farthest-point seeding from the first valid row
    first = torch.argmax(smask.to(torch.int8), dim=-1)
    centers = [E[torch.arange(B), first]]
    for _ in range(1, K):
        C = torch.stack(centers, 1)                            # (B, j, K)
        dist = torch.cdist(E, C).amin(-1)
        dist = torch.where(smask, dist, torch.full_like(dist, -1.0))
        centers.append(E[torch.arange(B), dist.argmax(-1)])
    C = torch.stack(centers, 1)
    for _ in range(kmeans_iters):
        dist = torch.cdist(E, C)
        lab = dist.argmin(-1)
        oh = torch.nn.functional.one_hot(lab, K).to(X.dtype) * m.unsqueeze(-1)
        cnt = oh.sum(1)
        newC = torch.einsum("bik,bie->bke", oh, E) / cnt.clamp(min=1).unsqueeze(-1)
        C = torch.where(cnt.unsqueeze(-1) > 0, newC, C)
    return torch.cdist(E, C).argmin(-1)


def _fit_clusters(X, smask, labels, K, d, dmax, generator):
    B, N, n = X.shape
    oh = (torch.nn.functional.one_hot(labels, K).bool() & smask.unsqueeze(-1))  # (B, N, K)
    Xk = X.unsqueeze(1).expand(B, K, N, n)
    mk = oh.permute(0, 2, 1)
    dk = d.unsqueeze(1).expand(B, K)
    return pca_subspaces(Xk, dk, smask=mk, generator=generator, dmax=dmax)


def k_subspaces(X: torch.Tensor, K: int, d, smask: torch.Tensor | None = None, iters: int = 20,
                init: str = "spectral", restarts: int = 1, generator: torch.Generator | None = None,
                U0: torch.Tensor | None = None):
    """K-subspaces alternation for eq. 18, batched. Returns ``(U (B, K, n, dmax), labels (B, N),
    objective (B,))``. ``U0`` (``(B, K, n, dmax)``) overrides ``init`` for the first run."""
    B, N, n = X.shape
    d = torch.as_tensor(d, dtype=torch.long).expand(B).clone()
    dmax = int(d.max())
    if smask is None:
        smask = torch.ones(B, N, dtype=torch.bool)
    if init not in ("spectral", "random"):
        raise ValueError(f"unknown init {init!r} (spectral | random)")
    R = max(1, int(restarts))
    Xr = X.repeat(R, 1, 1)
    mr = smask.repeat(R, 1)
    dr = d.repeat(R)
    colmask = _dim_mask(dr, dmax, (B * R,)).unsqueeze(1).unsqueeze(-2).to(X.dtype)  # (BR,1,1,dmax)
    G = torch.randn(B * R, K, n, dmax, generator=generator, dtype=torch.float64).to(X.dtype)
    U = stiefel_retract(G) * colmask
    if U0 is not None:
        U[:B] = U0.to(X.dtype) * colmask[:B]
        labels = _proj_energy(Xr, U).argmax(-1)
    else:
        labels = _proj_energy(Xr, U).argmax(-1)
        if init == "spectral":
            labels[:B] = _spectral_labels(X, smask, K)
    for _ in range(int(iters)):
        U = _fit_clusters(Xr, mr, labels, K, dr, dmax, generator)
        new = _proj_energy(Xr, U).argmax(-1)
        if torch.equal(new, labels):
            break
        labels = new
    obj = clustering_objective(Xr, U, mr).reshape(R, B)
    # keep the best run (first on ties, up to rounding)
    tol = 1e-9 * obj.abs().amax(0, keepdim=True).clamp(min=1e-300)
    best = torch.argmax((obj >= obj.amax(0, keepdim=True) - tol).to(torch.int8), dim=0)
    idx = best * B + torch.arange(B)
    return U[idx], labels[idx], obj.amax(0)


# ----------------------------------------------------------------------------- success metric
def projector_distances(Ua: torch.Tensor, Ub: torch.Tensor, da, db, norm: str = "spectral"):
    """Pairwise ``||U_a U_a^T - U_b U_b^T||`` between the components of two batched sets of bases.

    ``Ua (B, Ka, n, dmax)``, ``Ub (B, Kb, n, dmax)`` with zero columns past the dimensions
    ``da (B, Ka)``, ``db (B, Kb)``. Returns ``(B, Ka, Kb)``. ``norm``: ``"spectral"`` (operator
    2-norm = sine of the largest principal angle; 1 if the dimensions differ) or ``"fro"``
    (``sqrt(da + db - 2 ||U_a^T U_b||_F^2)``).
    """
    C = torch.einsum("band,bkne->bakde", Ua, Ub)              # (B, Ka, Kb, dmax, dmax)
    da = torch.as_tensor(da).to(torch.long)
    db = torch.as_tensor(db).to(torch.long)
    if norm in ("fro", "frobenius"):
        f2 = (C ** 2).sum((-1, -2))
        val = da.unsqueeze(-1) + db.unsqueeze(-2) - 2 * f2
        return val.clamp(min=0).sqrt()
    if norm != "spectral":
        raise ValueError(f"unknown norm {norm!r} (spectral | fro)")
    sv = torch.linalg.svdvals(C)                             # descending
    dd = torch.minimum(da.unsqueeze(-1), db.unsqueeze(-2)).clamp(min=1)
    smin = torch.gather(sv, -1, (dd - 1).unsqueeze(-1)).squeeze(-1).clamp(max=1.0)
    dist = (1 - smin ** 2).clamp(min=0).sqrt()
    same = da.unsqueeze(-1) == db.unsqueeze(-2)
    return torch.where(same, dist, torch.ones_like(dist))


def subspace_error(U_hat, U_true, d_hat, d_true=None, norm: str = "spectral"):
    """App. E.1 error ``min_Pi (1/K) sum_k ||U_Pi(k) U_Pi(k)^T - U_k* U_k*^T||`` per problem.

    Bases ``(B, K, n, dmax)`` (or ``(B, n, dmax)`` for one component); ``d_hat``/``d_true``
    ``(B,)`` or ``(B, K)``. Returns ``(error (B,), best permutation (B, K))`` where
    ``perm[b, k]`` is the estimated component matched to true component ``k``.
    """
    if U_hat.ndim == 3:
        U_hat, U_true = U_hat.unsqueeze(1), U_true.unsqueeze(1)
    B, K = U_true.shape[:2]
    d_true = d_hat if d_true is None else d_true
    d_hat = torch.as_tensor(d_hat).to(torch.long)
    d_true = torch.as_tensor(d_true).to(torch.long)
    if d_hat.ndim == 1:
        d_hat = d_hat.unsqueeze(-1).expand(B, U_hat.shape[1])
    if d_true.ndim == 1:
        d_true = d_true.unsqueeze(-1).expand(B, K)
    D = projector_distances(U_hat, U_true, d_hat, d_true, norm)   # (B, Khat, K)
    perms = torch.tensor(list(itertools.permutations(range(U_hat.shape[1]), K)), dtype=torch.long)
    # cost[b, p] = mean_k D[b, perm_p[k], k]
    cols = torch.arange(K)
    cost = D[:, perms, cols].mean(-1)                               # (B, P)
    best = cost.argmin(-1)
    return cost.gather(-1, best.unsqueeze(-1)).squeeze(-1), perms[best]


def success(U_hat, U_true, d_hat, d_true=None, norm: str = "spectral", threshold: float = 0.5):
    """App. E.1 success: ``subspace_error <= threshold`` (bool ``(B,)``)."""
    err, _ = subspace_error(U_hat, U_true, d_hat, d_true, norm)
    return err <= threshold
