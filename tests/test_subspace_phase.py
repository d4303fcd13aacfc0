"""PCA (Thm. 1/2), subspace clustering (Thm. 3/4), the low-rank DAE loss (eq. 6, 9, 16), the App. E.1
success metric and the phase-transition grid (Fig. 4)."""
import json

import pytest
import torch

from lowdim_app.synthetic.dae import _reduced_grad, dae_loss, default_dae_config, expected_dae_loss, train_dae
from lowdim_app.synthetic.phase import PhaseSettings, PhaseResult, cell_data, iter_phase, run_phase
from lowdim_app.synthetic.subspace import k_subspaces, pca_subspaces, stiefel_retract, subspace_error, success
from lowdim_app.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny tensor ops



def _data(K, n, d, N, T=6, seed=0):
    st = PhaseSettings(n=n, K=K, trials=T, seed=seed)
    return cell_data(st, d, N)


def test_pca_exact_when_N_ge_d_and_fails_when_N_lt_d():
    for N, d in [(4, 4), (9, 4), (6, 5)]:
        U, X, _ = _data(1, 20, d, N)
        Uh = pca_subspaces(X, d, generator=torch.Generator().manual_seed(0))
        err, _ = subspace_error(Uh, U[:, 0], torch.full((6,), d))
        assert float(err.max()) < 1e-6   # sqrt(1 - cos^2): ~sqrt(eps) resolution
    for N, d in [(2, 4), (4, 6)]:      # Thm. 2 (ii): only N directions are determined
        U, X, _ = _data(1, 20, d, N)
        Uh = pca_subspaces(X, d, generator=torch.Generator().manual_seed(0))
        err, _ = subspace_error(Uh, U[:, 0], torch.full((6,), d))
        assert float(err.min()) > 0.9
        assert not bool(success(Uh, U[:, 0], torch.full((6,), d)).any())
        # the data directions are still found: they lie in the estimate
        P = Uh @ Uh.transpose(-1, -2)
        assert torch.allclose(X @ P, X, atol=1e-9)


def test_success_metric_is_permutation_invariant_and_norms():
    U, X, _ = _data(3, 30, 3, 5, T=4)
    d = torch.full((4,), 3)
    noisy = stiefel_retract(U + 0.05 * torch.randn(U.shape, generator=torch.Generator().manual_seed(1),
                                                   dtype=torch.float64))
    e0, p0 = subspace_error(noisy, U, d)
    assert torch.equal(p0, torch.arange(3).expand(4, 3))
    perm = torch.tensor([2, 0, 1])
    e1, p1 = subspace_error(noisy[:, perm], U, d)
    assert torch.allclose(e0, e1, atol=1e-12)
    assert torch.equal(perm[p1], torch.arange(3).expand(4, 3))
    # spectral distance = sine of the largest principal angle <= Frobenius distance
    ef, _ = subspace_error(noisy, U, d, norm="fro")
    assert bool((ef >= e0 - 1e-12).all()) and float(e0.max()) < 0.5
    # swapped (wrong) matching of true bases with themselves costs 1 per pair in spectral norm
    D = subspace_error(U[:, [1, 0, 2]], U, d)[0]
    assert float(D.max()) < 1e-6


def test_k_subspaces_recovers_orthogonal_subspaces():
    U, X, lab = _data(2, 40, 4, 8, T=5)
    Uh, labels, obj = k_subspaces(X, 2, 4, generator=torch.Generator().manual_seed(0))
    err, perm = subspace_error(Uh, U, torch.full((5,), 4))
    assert float(err.max()) < 1e-6   # sqrt(1 - cos^2): ~sqrt(eps) resolution
    # objective (eq. 18) at the truth is the maximum; clustering reaches it
    from lowdim_app.synthetic.subspace import clustering_objective
    assert torch.allclose(obj, clustering_objective(X, U), rtol=1e-9)


def test_dae_loss_is_minimised_at_true_subspaces():
    U, X, _ = _data(2, 16, 3, 12, T=3)
    d = 3
    for variant in ("softmax", "hardmax"):
        base = expected_dae_loss(U, X, d, time_steps=16, mc=8, variant=variant,
                                 generator=torch.Generator().manual_seed(4))
        for scale in (0.05, 0.3):
            Up = stiefel_retract(U + scale * torch.randn(U.shape, generator=torch.Generator().manual_seed(2),
                                                         dtype=torch.float64))
            pert = expected_dae_loss(Up, X, d, time_steps=16, mc=8, variant=variant,
                                     generator=torch.Generator().manual_seed(4))
            assert bool((pert > base).all()), (variant, scale, base, pert)


@pytest.mark.parametrize("K,variant", [(1, "softmax"), (2, "softmax"), (2, "hardmax")])
def test_reduced_gradient_equals_autograd(K, variant):
    """The O(M K d) gradient of dae.py equals autograd of the literal DAE loss for the same noise."""
    B, n, d, M = 2, 10, 2, 7
    U, X, _ = _data(K, n, d, 4, T=B)
    g = torch.Generator().manual_seed(3)
    U = stiefel_retract(U + 0.3 * torch.randn(U.shape, generator=g, dtype=torch.float64))
    i = torch.randint(0, X.shape[1], (B, M), generator=g)
    s = torch.rand(B, M, generator=g, dtype=torch.float64) * 0.8 + 0.1
    gam = torch.sqrt(1 - s ** 2)
    eps = torch.randn(B, M, n, generator=g, dtype=torch.float64)
    W = U.permute(0, 2, 1, 3).reshape(B, n, K * d)
    P0 = W.transpose(1, 2) @ X.transpose(1, 2)
    gW, loss = _reduced_grad(W, X, P0, i, s, gam, K, d, variant, None, None, eps=eps)
    Uv = U.clone().requires_grad_(True)
    x0 = X[torch.arange(B).unsqueeze(-1), i]
    ref = dae_loss(Uv, x0, s, gam, eps, variant)
    (gref,) = torch.autograd.grad(ref.sum(), Uv)
    assert torch.allclose(loss, ref.detach(), atol=1e-10)
    assert torch.allclose(gW.view(B, n, K, d).permute(0, 2, 1, 3), gref, atol=1e-10)


def test_train_dae_k1_recovers_subspace():
    U, X, _ = _data(1, 24, 3, 8, T=4)
    cfg = default_dae_config(1, "softmax")
    cfg.iters, cfg.batch = 300, 256
    Uh = train_dae(X, 1, 3, cfg, generator=torch.Generator().manual_seed(0))
    err, _ = subspace_error(Uh, U, torch.full((4,), 3))
    assert float(err.max()) < 0.1


def _settings(**kw):
    base = dict(n=24, d_values=[2, 3, 4], N_values=[1, 2, 3, 4, 5, 6], trials=5, seed=0)
    base.update(kw)
    return PhaseSettings(**base)


@pytest.mark.parametrize("K,method", [(1, "svd"), (1, "cluster"), (2, "cluster")])
def test_phase_grid_transition_at_N_equals_d(K, method):
    res = run_phase(_settings(K=K, method=method))
    assert res.finished and res.cells_done == 18
    for i, d in enumerate(res.d_values):
        for j, N in enumerate(res.N_values):
            rate = res.success[i][j]
            if N >= d + 1:
                assert rate == 1.0, (d, N, rate)
            if N < d:
                assert rate == 0.0, (d, N, rate)


def test_phase_generator_partial_and_json_roundtrip(tmp_path):
    st = _settings(K=1, method="svd")
    done = []
    for res in iter_phase(st):                       # one batch per N column
        done.append(res.cells_done)
        assert res.finished == (res.cells_done == 18)
    assert done == [3 * (j + 1) for j in range(6)]
    path = tmp_path / "p.json"
    res.to_json(path)
    obj = json.loads(path.read_text())
    assert obj["settings"]["method"] == "svd" and len(obj["success_rate"]) == 3
    assert len(obj["success_rate"][0]) == 6
    assert PhaseResult.from_dict(obj).success == res.success
    # same seed -> same grid, also with other batching (data depend on the cell only)
    again = run_phase(_settings(K=1, method="svd", chunk="cell"))
    assert again.success == res.success
    assert "d,N,success_rate" in res.to_csv()


def test_phase_stop_and_validation():
    n_calls = []
    out = list(iter_phase(_settings(K=1, method="svd"), should_stop=lambda: n_calls.append(1) or len(n_calls) >= 2))
    assert not out[-1].finished and out[-1].cells_done == 6
    with pytest.raises(UserError):
        _settings(K=2, method="svd").validate()
    with pytest.raises(UserError):
        _settings(K=3, n=8, d_values=[3]).validate()
    with pytest.raises(UserError):
        _settings(trials=0).validate()


def test_phase_dae_small_grid():
    res = run_phase(_settings(K=1, method="dae", d_values=[2], N_values=[1, 4], trials=3, dae_iters=300))
    assert res.success[0] == [0.0, 1.0]
