"""Training sets of the ReLU-DAE lab (Zhang et al. 2025, arXiv:2512.20963, App. A.1, B.1).

* a two-mode MoG ``1/2 N(mu e_1, S_1) + 1/2 N(-mu e_1, S_2)`` with exponentially decaying covariance
  spectra ``decay^j`` (App. A.1 / B.1 use d = 1000; the default here is d = 64 so a run takes seconds);
* the built-in digits (1 x 16 x 16 = 256 pixels), centred by the training mean so that the bias-free
  DAE sees samples whose pairwise inner products can be negative (Def. 3.1 needs ``beta < 0``).

Three regimes: ``memorize`` (few samples, Cor. 3.2), ``generalize`` (many samples, Cor. 3.3) and
``hybrid`` (well-sampled data plus duplicated samples, Cor. 3.4).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ...errors import UserError

Tensor = torch.Tensor

DATA_SETS = ("digits", "mog")
REGIMES = ("memorize", "generalize", "hybrid")
PICKS = ("separable", "random")
DIGITS_TRAIN_SIZE = 1438          # training digits of the built-in split (data.digits)
MOG_MAX_SIZE = 20_000             # largest MoG training set the lab draws
# set sizes when none is given: memorized samples, generalization set, duplicated samples
DEFAULT_SIZES = {"digits": {"n_mem": 5, "n_gen": DIGITS_TRAIN_SIZE, "n_dup": 2},
                 "mog": {"n_mem": 4, "n_gen": 2000, "n_dup": 1}}


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
    """Pairwise cosines of the rows of ``X`` (and ``Y``)."""
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
    if kind not in DATA_SETS:
        raise UserError(f"data must be 'mog' or 'digits', got {kind!r}")
    if regime not in REGIMES:
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
        from ...data.digits import load_digits_split

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
