"""Numerical rank (Wang et al. 2024, arXiv:2409.02426, App. D.1 eq. 46) against closed forms.

``rank = min { r : sum_{i<=r} s_i^2 / sum_i s_i^2 > eta^2 }``; the spectra below are chosen so that
thresholding the energy at ``eta`` instead of ``eta^2`` (or the singular values instead of their
squares) gives a different rank.
"""
import math

import pytest
import torch

from lowdim_app.errors import UserError
from lowdim_app.metrics import numerical_rank


def geometric_rank(q: float, n: int, eta: float) -> int:
    """Closed form for ``s_i = q^i`` (i = 0..n-1): the energy share of the top r is
    ``(1 - q^{2r}) / (1 - q^{2n})``, so r is the smallest integer above
    ``log(1 - eta^2 (1 - q^{2n})) / log(q^2)``."""
    x = math.log(1 - eta ** 2 * (1 - q ** (2 * n))) / math.log(q * q)
    return min(n, math.floor(x) + 1)


def test_threshold_is_on_energy_eta_squared():
    # energies 0.985 / 0.015: the top one is above eta^2 = 0.9801 but below eta = 0.99
    s = torch.tensor([0.985, 0.015], dtype=torch.float64).sqrt()
    assert numerical_rank(s, 0.99) == 1
    # and the same spectrum with a larger eta needs both
    assert numerical_rank(s, 0.995) == 2


@pytest.mark.parametrize("q, n, eta", [(0.7, 120, 0.99), (0.9, 200, 0.99), (0.8, 60, 0.95), (0.95, 300, 0.9)])
def test_geometric_spectrum_matches_closed_form(q, n, eta):
    s = q ** torch.arange(n, dtype=torch.float64)
    expected = geometric_rank(q, n, eta)
    assert numerical_rank(s, eta) == expected
    # the wrong threshold (eta instead of eta^2) gives a different rank on these spectra
    assert expected != min(n, math.floor(math.log(1 - eta * (1 - q ** (2 * n))) / math.log(q * q)) + 1)


def test_order_sign_batch_and_edge_cases():
    g = torch.Generator().manual_seed(0)
    s = 0.8 ** torch.arange(40, dtype=torch.float64)
    perm = s[torch.randperm(40, generator=g)] * torch.where(torch.rand(40, generator=g) > 0.5, 1.0, -1.0)
    assert numerical_rank(perm) == numerical_rank(s) == geometric_rank(0.8, 40, 0.99)
    batch = torch.stack([s, torch.ones(40, dtype=torch.float64), torch.zeros(40, dtype=torch.float64)])
    r = numerical_rank(batch)
    assert r.tolist() == [geometric_rank(0.8, 40, 0.99), 40, 0]
    assert numerical_rank(torch.ones(7), eta=1.0) == 7                  # flat spectrum, eta = 1: full rank
    assert numerical_rank(torch.tensor([3.0, 2.0, 1.0, 0.0, 0.0])) == 3   # exact rank 3
    with pytest.raises(UserError):
        numerical_rank(s, eta=0.0)
