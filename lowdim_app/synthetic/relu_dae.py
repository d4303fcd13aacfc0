"""Two-layer ReLU denoising autoencoders that memorize or generalize (seed 004 §2.2-3.3, App. A.1-A.2, B.1).

Model (eq. 5): ``f(x) = W2 [W1^T x]_+`` with ``W1, W2`` in ``R^{d x p}``; representation ``h(x) = [W1^T x]_+``.
Loss at one fixed noise level ``sigma`` with weight decay ``lam`` (eq. 6)::

    L(W2, W1) = 1/n sum_i E_eps || f(x_i + sigma eps) - x_i ||^2 + lam (||W1||_F^2 + ||W2||_F^2)

(tied: ``W1 = W2 = W``, so the penalty is ``2 lam ||W||_F^2``). The expectation over ``eps`` is a fresh
Monte-Carlo draw every step; the trainer is Adam with hand-written gradients (no autograd: a step is a
few small matrix products) and a cosine learning-rate decay, so a default run converges in seconds on a
CPU where the paper ran RMSprop for 5e5-4e7 steps (App. B.1).

Closed forms checked against the trained weights:

* memorization, ``p >= n`` separable samples (Cor. 3.2, eq. 9): the columns are ``r_i x_i`` with
  ``r_i = sqrt((||x_i||^2 - n lam) / (||x_i||^4 + sigma^2 ||x_i||^2))``; a sample repeated ``c`` times is a
  rank-1 cluster of Theorem 3.1 and gets ``n lam / c`` in place of ``n lam`` (Cor. 3.4).
* generalization, ``p << n`` (Thm. 3.1 eq. 8, Cor. 3.3): the block of a cluster ``X_k`` is
  ``U_k diag(s) O_k^T``, ``s_j^2 = (1 + n_k sigma^2 / Lambda_j)^{-1} (1 - n lam / Lambda_j)`` with
  ``(Lambda_j, U_k)`` the top ``p_k`` eigenpairs of the (uncentred) Gram matrix ``X_k X_k^T``.

The columns of an optimum are only defined up to splitting: ``w_a = a u, w_b = b u`` with ``a^2 + b^2 = r^2``
gives the same ``f`` and the same penalty (the paper's remark after Cor. 3.2). The checks therefore report
both the best single column and the *effective* norm ``||[W1^T x_i / ||x_i||]_+||`` (the norm of all the
columns that fire on ``x_i``), which eq. 9 fixes regardless of splitting.

Data: a two-mode MoG with means ``+-mu e_1`` and exponentially decaying covariance spectra ``decay^j``
(App. A.1 / B.1 use d = 1000; the default here is d = 64 so a run takes seconds), and the built-in digits
(1 x 16 x 16 = 256 pixels), centred by the training mean so that the bias-free DAE sees samples whose
pairwise inner products can be negative (Def. 3.1 needs ``beta < 0``).

Sampling (App. B.1): a set of DAEs on a geometric VE grid ``sigma_max -> sigma_min`` (paper: 2 -> 0.02),
each fine-tuned from the main model (warm start; "varying sigma only slightly perturbs the solution",
§3.2), then DDIM eq. 1, ``x_{l-1} = f_l(x_l) + (sigma_{l-1}/sigma_l) (x_l - f_l(x_l))`` from
``x_L ~ N(0, sigma_max^2 I)``; the last step returns ``f_1(x_1)``. (Eq. 1 writes the score as
``(x - f)/sigma^2`` together with a minus sign in the update; both signs flip, the update above is the one
they give.)
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from ..errors import UserError, check_range

Tensor = torch.Tensor


# ----------------------------------------------------------------------------------------------- model
@dataclass
class ReluDAE:
    """``f(x) = W2 [W1^T x]_+`` trained at noise ``sigma`` with weight decay ``lam``."""

    W1: Tensor
    W2: Tensor
    sigma: float
    lam: float
    tied: bool
    loss_curve: list[float] = field(default_factory=list)   # data term every ``log_every`` steps
    log_every: int = 50
    steps: int = 0
    wall_s: float = 0.0

    @property
    def d(self) -> int:
        return self.W1.shape[0]

    @property
    def p(self) -> int:
        return self.W1.shape[1]

    def encode(self, x: Tensor) -> Tensor:
        """Representation ``h(x) = [W1^T x]_+`` for rows ``x`` (``n x d`` -> ``n x p``)."""
        return (x @ self.W1).clamp_min(0)

    def __call__(self, x: Tensor) -> Tensor:
        return self.encode(x) @ self.W2.T

    def objective(self, X: Tensor, seed: int = 0, draws: int = 8) -> dict:
        """Monte-Carlo estimate of eq. 6 on ``X`` (data term, penalty, total)."""
        g = torch.Generator().manual_seed(seed)
        x0 = X.repeat(draws, 1)
        xt = x0 + self.sigma * torch.randn(x0.shape, generator=g)
        data = float((self(xt) - x0).pow(2).sum(1).mean())
        pen = float(self.lam * (self.W1.pow(2).sum() + self.W2.pow(2).sum()))
        return {"data": data, "penalty": pen, "total": data + pen}


def train_dae(X: Tensor, p: int, sigma: float, lam: float, *, tied: bool = True, steps: int = 3000,
              lr: float = 1e-2, batch: int = 512, seed: int = 0, init_scale: float = 1.0,
              init: tuple[Tensor, Tensor] | None = None, log_every: int = 50,
              callback: Callable[[int, float], None] | None = None) -> ReluDAE:
    """Minimise eq. 6 with Adam (hand-written gradients, cosine learning-rate decay).

    ``X``: ``n x d`` training rows (duplicates allowed). When ``n < batch`` every step uses all rows
    repeated ``batch // n`` times, each with its own noise draw; otherwise a random mini-batch of ``batch``
    rows. ``init``: warm start ``(W1, W2)``; otherwise ``N(0, init_scale^2 / d)`` entries.
    ``callback(step, data_loss)`` is called every ``log_every`` steps (progress, cancellation).
    """
    X = torch.as_tensor(X, dtype=torch.float32)
    n, d = X.shape
    g = torch.Generator().manual_seed(seed)
    if init is not None:
        W1 = init[0].clone().float()
        W2 = W1.clone() if tied else init[1].clone().float()
    else:
        W1 = torch.randn(d, p, generator=g) * (init_scale / math.sqrt(d))
        W2 = W1.clone() if tied else torch.randn(d, p, generator=g) * (init_scale / math.sqrt(d))
    params = [W1] if tied else [W1, W2]
    m = [torch.zeros_like(P) for P in params]
    v = [torch.zeros_like(P) for P in params]
    b1, b2, eps = 0.9, 0.999, 1e-8
    reps = max(1, batch // n) if n < batch else 0
    x_full = X.repeat(reps, 1) if reps else None
    curve: list[float] = []
    start = time.perf_counter()
    with torch.no_grad():
        for step in range(steps):
            x0 = x_full if reps else X[torch.randint(0, n, (batch,), generator=g)]
            B = x0.shape[0]
            xt = x0 + sigma * torch.randn(x0.shape, generator=g)
            Z = xt @ W1
            H = Z.clamp_min(0)
            V = W1 if tied else W2
            R = H @ V.T - x0                                   # residual f(x_t) - x_0
            G1 = xt.T @ ((R @ V) * (Z > 0)) * (2.0 / B)        # d/dW1 of the data term
            G2 = R.T @ H * (2.0 / B)                           # d/dW2 of the data term
            grads = [G1 + G2 + 4 * lam * W1] if tied else [G1 + 2 * lam * W1, G2 + 2 * lam * W2]
            if step % log_every == 0 or step == steps - 1:
                loss = float(R.pow(2).sum(1).mean())
                curve.append(loss)
                if callback is not None:
                    callback(step, loss)
            lr_t = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
            c1, c2 = 1 - b1 ** (step + 1), 1 - b2 ** (step + 1)
            for P, G, mm, vv in zip(params, grads, m, v):
                mm.mul_(b1).add_(G, alpha=1 - b1)
                vv.mul_(b2).addcmul_(G, G, value=1 - b2)
                P.sub_(lr_t * (mm / c1) / ((vv / c2).sqrt() + eps))
    if not torch.isfinite(W1).all():
        raise UserError("training diverged (non-finite weights); lower the learning rate")
    return ReluDAE(W1=W1, W2=W1 if tied else W2, sigma=float(sigma), lam=float(lam), tied=tied,
                   loss_curve=curve, log_every=log_every, steps=steps, wall_s=time.perf_counter() - start)


# ------------------------------------------------------------------------------------------------ data
@dataclass
class DAEData:
    """Training rows (duplicates included), their cluster/class labels and multiplicities, test rows."""

    kind: str
    train: Tensor                  # n x d (duplicates repeated)
    labels: Tensor                 # n (MoG: mode 0/1; digits: class)
    test: Tensor
    test_labels: Tensor
    mean: Tensor                   # added back for display (digits are centred)
    image_shape: tuple[int, ...] | None
    unique_index: Tensor           # rows of ``train`` that are distinct samples (first copy)
    multiplicity: Tensor           # copies of each row's sample in ``train``
    duplicated: list[int] = field(default_factory=list)   # rows (in train) that were duplicated
    info: dict = field(default_factory=dict)

    @property
    def unique(self) -> Tensor:
        return self.train[self.unique_index]


def mog_components(d: int, mu: float, decay: float, seed: int) -> tuple[Tensor, list[Tensor]]:
    """Means ``+-mu e_1`` and covariance square roots ``Q_k diag(decay^{j/2})`` (random orthogonal ``Q_k``)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.zeros(2, d)
    means[0, 0], means[1, 0] = mu, -mu
    spec = decay ** torch.arange(d, dtype=torch.float64)
    roots = []
    for _ in range(2):
        Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        roots.append((Q * spec.sqrt()).float())
    return means, roots


def sample_mog(counts: tuple[int, int], d: int, mu: float, decay: float, seed: int,
               sample_seed: int) -> tuple[Tensor, Tensor]:
    """``counts[k]`` samples from mode ``k`` of ``1/2 N(mu e_1, S_1) + 1/2 N(-mu e_1, S_2)``."""
    means, roots = mog_components(d, mu, decay, seed)
    g = torch.Generator().manual_seed(sample_seed)
    xs, ls = [], []
    for k, c in enumerate(counts):
        z = torch.randn(c, d, generator=g)
        xs.append(means[k] + z @ roots[k].T)
        ls.append(torch.full((c,), k, dtype=torch.long))
    return torch.cat(xs), torch.cat(ls)


def cosine_matrix(X: Tensor, Y: Tensor | None = None) -> Tensor:
    Xn = torch.nn.functional.normalize(X, dim=1)
    Yn = Xn if Y is None else torch.nn.functional.normalize(Y, dim=1)
    return Xn @ Yn.T


def separable_subset(X: Tensor, n: int, seed: int, max_cos: float = 0.0) -> list[int]:
    """Greedy seeded choice of ``n`` rows with pairwise cosine ``< max_cos`` (Def. 3.1 with ``beta < 0``).

    The paper picks its 5 memorized CelebA images "for clear separability" (App. B.1). When fewer than
    ``n`` rows pass, the rest are filled with the rows whose largest cosine to the chosen ones is smallest.
    """
    C = cosine_matrix(X)
    order = np.random.default_rng(seed).permutation(len(X))
    pick: list[int] = []
    for i in order:
        if all(C[i, j] < max_cos for j in pick):
            pick.append(int(i))
            if len(pick) == n:
                return pick
    while len(pick) < n:
        rest = torch.tensor([i for i in range(len(X)) if i not in pick])
        worst = C[rest][:, pick].max(1).values
        pick.append(int(rest[int(worst.argmin())]))
    return pick


def _with_duplicates(X: Tensor, labels: Tensor, dup_rows: list[int], copies: int):
    n = len(X)
    extra = [i for i in dup_rows for _ in range(copies)]
    train = torch.cat([X, X[extra]]) if extra else X
    lab = torch.cat([labels, labels[extra]]) if extra else labels
    mult = torch.ones(len(train), dtype=torch.long)
    for i in dup_rows:
        mult[i] = copies + 1
    for r, i in enumerate(extra):
        mult[n + r] = copies + 1
    return train, lab, mult


def make_data(kind: str, regime: str, *, n: int | None = None, n_dup: int = 1, copies: int = 0,
              d: int = 64, mu: float = 5.0, decay: float = 0.7, pick: str = "separable",
              n_test: int = 200, seed: int = 0) -> DAEData:
    """Training data for one regime.

    * ``memorize``: ``n`` samples (MoG: split over the two modes, ``pick`` ignored; digits: a
      ``separable`` (greedy, pairwise cosine < 0) or ``random`` subset of the centred training digits).
    * ``generalize``: ``n`` samples (MoG: half per mode; digits: the first ``n`` of a seeded permutation,
      default all 1438).
    * ``hybrid`` (Cor. 3.4): MoG: ``n`` samples of mode +, and ``n_dup`` samples of mode - each repeated
      ``copies`` extra times (so mode - is represented only by duplicated rank-1 clusters);
      digits: ``n`` training digits plus ``n_dup`` of them repeated ``copies`` extra times.
    """
    if kind not in ("mog", "digits"):
        raise UserError(f"data must be 'mog' or 'digits', got {kind!r}")
    if regime not in ("memorize", "generalize", "hybrid"):
        raise UserError(f"regime must be memorize, generalize or hybrid, got {regime!r}")
    dup_rows: list[int] = []
    if kind == "mog":
        test, test_labels = sample_mog((n_test // 2, n_test - n_test // 2), d, mu, decay, seed, seed + 1000)
        if regime == "memorize":
            n = 4 if n is None else n
            X, lab = sample_mog((n - n // 2, n // 2), d, mu, decay, seed, seed + 1)
        elif regime == "generalize":
            n = 2000 if n is None else n
            X, lab = sample_mog((n - n // 2, n // 2), d, mu, decay, seed, seed + 2)
        else:
            n = 1000 if n is None else n
            X, lab = sample_mog((n, n_dup), d, mu, decay, seed, seed + 3)
            dup_rows = list(range(n, n + n_dup))
        mean = torch.zeros(d)
        image_shape = (1, 8, 8) if d == 64 else None
        info = {"source": f"MoG 1/2 N(+{mu} e1, S1) + 1/2 N(-{mu} e1, S2), spectra decay^j, decay={decay}, d={d}"}
    else:
        from ..data.digits import load_digits_split

        split = load_digits_split()
        full = split.train_images.reshape(len(split.train_images), -1).float()
        mean = full.mean(0)
        full = full - mean
        labels_all = split.train_labels.clone()
        test = split.test_images.reshape(len(split.test_images), -1).float() - mean
        test_labels = split.test_labels.clone()
        image_shape = (1, 16, 16)
        if regime == "memorize":
            n = 5 if n is None else n
            if pick == "separable":
                idx = separable_subset(full, n, seed)
            elif pick == "random":
                idx = np.random.default_rng(seed).choice(len(full), size=n, replace=False).tolist()
            else:
                raise UserError(f"pick must be 'separable' or 'random', got {pick!r}")
        else:
            n = len(full) if n is None else n
            idx = np.random.default_rng(seed + 7).permutation(len(full))[:n].tolist()
            if regime == "hybrid":
                dup_rows = np.random.default_rng(seed + 8).choice(n, size=min(n_dup, n), replace=False).tolist()
        X, lab = full[idx], labels_all[idx]
        info = {"source": "scikit-learn digits, 16x16, centred by the training mean", "train_index": idx}
    train, lab, mult = _with_duplicates(X, lab, dup_rows, copies if regime == "hybrid" else 0)
    return DAEData(kind=kind, train=train, labels=lab, test=test, test_labels=test_labels, mean=mean,
                   image_shape=image_shape, unique_index=torch.arange(len(X)), multiplicity=mult,
                   duplicated=dup_rows, info=info)


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


def memorization_solution(X: Tensor, sigma: float, lam: float, p: int | None = None) -> Tensor:
    """``W_mem = (r_1 x_1, ..., r_n x_n, 0, ..., 0)`` (eq. 9), ``d x max(p, n)``."""
    r = memorization_r(X, sigma, lam)
    W = (X.double() * r[:, None]).T
    if p is not None and p > W.shape[1]:
        W = torch.cat([W, torch.zeros(W.shape[0], p - W.shape[1], dtype=W.dtype)], 1)
    return W.float()


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


# ------------------------------------------------------------------------------------------ analysis
def alive_columns(dae: ReluDAE, rel: float = 0.05) -> Tensor:
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
    proj = (xn @ dae.W1).clamp_min(0)
    effective = proj.norm(dim=1)
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
        Q, _ = torch.linalg.qr(W1k)
        cosines = torch.linalg.svdvals(th["U"].T @ Q)
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
    Q, _ = torch.linalg.qr(W)
    _, U = torch.linalg.eigh(X.double().T @ X.double())
    U = U.flip(1)[:, :q]
    c = torch.linalg.svdvals(U.T @ Q)
    return {"k": q, "principal_cos": c.tolist(), "mean_cos2": float((c ** 2).mean())}


def representations(dae: ReluDAE, X: Tensor, *, draws: int = 1, seed: int = 0, noisy: bool = True) -> Tensor:
    """``h(x + sigma eps)`` for each row (``draws`` noise draws each, stacked)."""
    g = torch.Generator().manual_seed(seed)
    x = X.repeat(draws, 1)
    if noisy:
        x = x + dae.sigma * torch.randn(x.shape, generator=g)
    return dae.encode(x)


def spikiness(H: Tensor) -> dict:
    """Per-row statistics of representations: std (the paper's score), max/l2 and active count."""
    l2 = H.norm(dim=1).clamp_min(1e-12)
    return {"std": H.std(1), "max_over_l2": H.max(1).values / l2,
            "active": (H > 0.05 * H.max(1, keepdim=True).values.clamp_min(1e-12)).sum(1).float()}


def auroc(pos: Tensor, neg: Tensor) -> float:
    """P(pos > neg) + 1/2 P(tie) (Mann-Whitney)."""
    pos, neg = torch.as_tensor(pos).double().flatten(), torch.as_tensor(neg).double().flatten()
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).double().mean() + 0.5 * (diff == 0).double().mean())


def denoise(dae: ReluDAE, X: Tensor, seed: int = 0) -> dict:
    """One-step denoising (App. A.2): ``y = x + sigma eps``, ``f(y)``; MSE per coordinate."""
    g = torch.Generator().manual_seed(seed)
    y = X + dae.sigma * torch.randn(X.shape, generator=g)
    out = dae(y)
    return {"noisy": y, "out": out, "mse": (out - X).pow(2).mean(1), "noisy_mse": (y - X).pow(2).mean(1)}


# ------------------------------------------------------------------------------------------ sampling
def noise_levels(sigma_max: float, sigma_min: float, levels: int) -> list[float]:
    """Geometric VE grid, largest first (paper: sigma in [0.02, 2])."""
    return [float(s) for s in np.geomspace(sigma_max, sigma_min, levels)]


def train_level_daes(base: ReluDAE, X: Tensor, sigmas: list[float], *, steps: int = 300, lr: float = 3e-3,
                     batch: int = 512, seed: int = 0, callback=None) -> list[ReluDAE]:
    """One DAE per noise level, each fine-tuned from ``base`` (warm start)."""
    out = []
    for i, s in enumerate(sigmas):
        out.append(train_dae(X, base.p, s, base.lam, tied=base.tied, steps=steps, lr=lr, batch=batch,
                             seed=seed + 101 * (i + 1), init=(base.W1, base.W2)))
        if callback is not None:
            callback(i, s)
    return out


def ddim_sample(daes: list[ReluDAE], n: int, seed: int = 0) -> Tensor:
    """Eq. 1 with the DAE denoiser: ``x <- f_l(x) + (sigma_{l-1}/sigma_l)(x - f_l(x))``, ``x_L ~ N(0, sigma_L^2 I)``."""
    sig = [m.sigma for m in daes]
    g = torch.Generator().manual_seed(seed)
    x = sig[0] * torch.randn(n, daes[0].d, generator=g)
    for i, m in enumerate(daes):
        f = m(x)
        nxt = sig[i + 1] if i + 1 < len(daes) else 0.0
        x = f + (nxt / sig[i]) * (x - f)
    return x


def nearest_train(samples: Tensor, X: Tensor) -> dict:
    """Nearest training row by cosine similarity, and the relative distance to it."""
    C = cosine_matrix(samples, X)
    cos, idx = C.max(1)
    dist = (samples - X[idx]).norm(dim=1) / X[idx].norm(dim=1).clamp_min(1e-12)
    return {"cos": cos, "index": idx, "rel_dist": dist}


# --------------------------------------------------------------------------------------------- the lab
@dataclass
class ReluLabConfig:
    """Settings of the memorize-vs-generalize lab (defaults: a run takes ~10-30 s on a laptop CPU)."""

    data: str = "digits"          # "digits" or "mog"
    p: int = 16                   # hidden units (same for every regime)
    sigma: float = 0.2            # training noise (paper: 0.2)
    lam: float = 1e-3             # weight decay lambda of eq. 6
    tied: bool = True
    n_mem: int | None = None      # memorization set size (default: digits 5, MoG 4 = 2 per mode)
    n_gen: int | None = None      # generalization set size (default: digits all 1438, MoG 2000)
    pick: str = "separable"       # digits memorization subset: "separable" or "random"
    hybrid: bool = True
    n_dup: int | None = None      # duplicated samples in the hybrid regime (default: digits 2, MoG 1)
    copies: int = 200             # extra copies of each duplicated sample
    d: int = 64                   # MoG dimension (paper: 1000)
    mu: float = 5.0               # MoG means +-mu e_1 (paper: 5)
    decay: float = 0.7            # MoG covariance spectrum decay^j
    steps: int = 1500
    lr: float = 1e-2
    batch: int = 128
    sample: bool = True
    levels: int = 6               # DDIM noise levels (sigma_max -> sigma_min, geometric)
    level_steps: int = 150
    sigma_max: float = 2.0
    sigma_min: float = 0.02
    n_samples: int = 16
    seed: int = 0

    def validate(self) -> None:
        if self.data not in ("digits", "mog"):
            raise UserError(f"data must be 'digits' or 'mog', got {self.data!r}")
        if self.pick not in ("separable", "random"):
            raise UserError(f"pick must be 'separable' or 'random', got {self.pick!r}")
        check_range("p", self.p, 1, 256)
        check_range("sigma", self.sigma, 0.0, 5.0)
        check_range("lam", self.lam, 0.0, 1.0)
        check_range("d", self.d, 2, 1024)
        check_range("mu", self.mu, 0.1, 50.0)
        check_range("decay", self.decay, 0.05, 1.0)
        check_range("steps", self.steps, 1, 200_000)
        check_range("lr", self.lr, 1e-6, 1.0)
        check_range("batch", self.batch, 1, 8192)
        check_range("levels", self.levels, 2, 50)
        check_range("level_steps", self.level_steps, 1, 20_000)
        check_range("sigma_max", self.sigma_max, 1e-3, 100.0)
        check_range("sigma_min", self.sigma_min, 1e-4, self.sigma_max)
        check_range("n_samples", self.n_samples, 1, 256)
        check_range("copies", self.copies, 0, 5000)
        check_range("seed", self.seed, 0, 2 ** 31 - 1)
        n_all = 1438 if self.data == "digits" else 20000
        if self.n_mem is not None:
            check_range("n_mem", self.n_mem, 1 if self.data == "digits" else 2, min(n_all, 512))
        if self.n_gen is not None:
            check_range("n_gen", self.n_gen, 2, n_all)
        if self.n_dup is not None:
            check_range("n_dup", self.n_dup, 1, 32)

    def resolved(self) -> "ReluLabConfig":
        c = ReluLabConfig(**asdict(self))
        if c.n_mem is None:
            c.n_mem = 5 if c.data == "digits" else 4
        if c.n_gen is None:
            c.n_gen = 1438 if c.data == "digits" else 2000
        if c.n_dup is None:
            c.n_dup = 2 if c.data == "digits" else 1
        return c


@dataclass
class ReluLabResult:
    config: dict
    numbers: dict = field(default_factory=dict)       # JSON-able
    models: dict = field(default_factory=dict)        # regime -> ReluDAE
    data: dict = field(default_factory=dict)          # regime -> DAEData
    arrays: dict = field(default_factory=dict)        # for figures
    stage: str = ""
    done: bool = False


def _regime_numbers(dae: ReluDAE, data: DAEData, seed: int, clustered: bool) -> tuple[dict, dict]:
    nums: dict = {"n_rows": int(len(data.train)), "n_distinct": int(len(data.unique_index)), "p": dae.p,
                  "final_data_loss": dae.loss_curve[-1] if dae.loss_curve else None,
                  "objective": dae.objective(data.unique, seed=seed), "train_seconds": round(dae.wall_s, 2),
                  "alive_columns": int(alive_columns(dae).sum())}
    U = data.unique
    C = cosine_matrix(U)
    off = C - 2 * torch.eye(len(U))
    nums["beta_max_pairwise_cos"] = float(off.max()) if len(U) > 1 else None
    if not dae.tied:
        nums["untied_rel_diff_W1_W2"] = float((dae.W1 - dae.W2).norm() / dae.W1.norm().clamp_min(1e-12))
    arrays: dict = {}
    rows_tr = list(range(min(len(U), 500)))
    Htr = representations(dae, U[rows_tr], draws=max(1, 100 // max(1, len(rows_tr))), seed=seed + 11)
    Hte = representations(dae, data.test[:500], seed=seed + 12)
    sp_tr, sp_te = spikiness(Htr), spikiness(Hte)
    arrays["std_train"], arrays["std_test"] = sp_tr["std"], sp_te["std"]
    arrays["h_example"] = representations(dae, U[:1], seed=seed + 13)[0]
    for nm, sp in (("train", sp_tr), ("test", sp_te)):
        nums[f"rep_std_{nm}"] = _summary(sp["std"])
        nums[f"rep_max_over_l2_{nm}"] = _summary(sp["max_over_l2"])
        nums[f"rep_active_units_{nm}"] = _summary(sp["active"])
    dn_tr = denoise(dae, U[:200], seed=seed + 14)
    dn_te = denoise(dae, data.test[:200], seed=seed + 15)
    nums["denoise_mse_train"] = float(dn_tr["mse"].mean())
    nums["denoise_mse_test"] = float(dn_te["mse"].mean())
    nums["noisy_input_mse"] = float(dn_te["noisy_mse"].mean())
    arrays["denoise_train"], arrays["denoise_test"] = dn_tr, dn_te
    if clustered and data.kind == "mog":
        nums["blocks_eq8"] = block_analysis(dae, data)
    if data.kind == "digits":
        nums["subspace_capture"] = subspace_capture(dae, data.unique)
    return nums, arrays


def _summary(x: Tensor) -> dict:
    x = torch.as_tensor(x).double().flatten()
    if len(x) == 0:
        return {}
    return {"mean": float(x.mean()), "min": float(x.min()), "median": float(x.median()), "max": float(x.max())}


def iter_relu_lab(cfg: ReluLabConfig, progress: Callable[[str, float], None] | None = None
                  ) -> Iterator[ReluLabResult]:
    """Run the lab stage by stage, yielding the (growing) result after each stage (live UI, cancellation)."""
    cfg.validate()
    c = cfg.resolved()
    res = ReluLabResult(config=asdict(c))
    t0 = time.perf_counter()
    timings: dict = {}
    res.numbers["timings_s"] = timings

    def note(msg: str, frac: float) -> None:
        if progress is not None:
            progress(msg, frac)

    common = dict(d=c.d, mu=c.mu, decay=c.decay, seed=c.seed)
    regimes = ["memorize", "generalize"] + (["hybrid"] if c.hybrid else [])
    sizes = {"memorize": c.n_mem, "generalize": c.n_gen,
             "hybrid": c.n_gen if c.data == "digits" else max(2, c.n_gen // 2)}
    for k, regime in enumerate(regimes):
        frac = k / (len(regimes) + 2)
        note(f"training the {regime} DAE", frac)
        ts = time.perf_counter()
        data = make_data(c.data, regime, n=sizes[regime], n_dup=c.n_dup, copies=c.copies, pick=c.pick, **common)
        dae = train_dae(data.train, c.p, c.sigma, c.lam, tied=c.tied, steps=c.steps, lr=c.lr, batch=c.batch,
                        seed=c.seed + 17 * (k + 1),
                        callback=lambda step, loss, regime=regime, frac=frac: note(
                            f"training the {regime} DAE: step {step + 1}/{c.steps}, loss {loss:.4f}", frac))
        res.models[regime], res.data[regime] = dae, data
        nums, arrays = _regime_numbers(dae, data, c.seed + k, clustered=regime != "memorize")
        if regime == "memorize":
            nums["eq9"] = column_match(dae, data)
        if regime == "hybrid":
            nums["duplicated_eq9"] = column_match(dae, data, rows=data.duplicated)
            dup_std = spikiness(representations(dae, data.train[data.duplicated], draws=20, seed=c.seed + 21))["std"]
            rest = [i for i in range(len(data.unique_index)) if i not in data.duplicated][:500]
            rest_std = spikiness(representations(dae, data.train[rest], seed=c.seed + 22))["std"]
            nums["rep_std_duplicated"], nums["rep_std_not_duplicated"] = _summary(dup_std), _summary(rest_std)
            nums["auroc_std_duplicated_vs_rest"] = auroc(dup_std, rest_std)
            arrays["std_dup"], arrays["std_rest"] = dup_std, rest_std
        res.numbers[regime] = nums
        res.arrays[regime] = arrays
        timings[regime] = round(time.perf_counter() - ts, 2)
        res.stage = regime
        yield res
    m, g = res.arrays["memorize"], res.arrays["generalize"]
    res.numbers["auroc_std_mem_train_vs_gen_train"] = auroc(m["std_train"], g["std_train"])
    res.numbers["auroc_std_mem_train_vs_mem_test"] = auroc(m["std_train"], m["std_test"])
    if c.sample:
        ts = time.perf_counter()
        sig = noise_levels(c.sigma_max, c.sigma_min, c.levels)
        res.numbers["sampling"] = {"sigmas": sig, "level_steps": c.level_steps}
        for k, regime in enumerate(regimes):
            note(f"DDIM sampling with the {regime} DAEs", (len(regimes) + k / len(regimes)) / (len(regimes) + 2))
            data = res.data[regime]
            daes = train_level_daes(res.models[regime], data.train, sig, steps=c.level_steps, batch=c.batch,
                                    seed=c.seed + 31 * (k + 1))
            S = ddim_sample(daes, c.n_samples, seed=c.seed + 41)
            nn = nearest_train(S, data.unique)
            res.arrays[regime]["samples"] = S
            res.arrays[regime]["samples_nearest"] = data.unique[nn["index"]]
            res.numbers["sampling"][regime] = {
                "nearest_train_cos": _summary(nn["cos"]), "copy_fraction_cos_ge_0.95": float((nn["cos"] >= 0.95).float().mean()),
                "nearest_train_rel_dist": _summary(nn["rel_dist"])}
            res.stage = f"sampling-{regime}"
            yield res
        timings["sampling"] = round(time.perf_counter() - ts, 2)
    timings["total"] = round(time.perf_counter() - t0, 2)
    res.done = True
    res.stage = "done"
    note("done", 1.0)
    yield res


def run_relu_lab(cfg: ReluLabConfig | None = None, progress=None) -> ReluLabResult:
    res = None
    for res in iter_relu_lab(cfg or ReluLabConfig(), progress):
        pass
    return res
