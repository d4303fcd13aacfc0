"""PCA (Thm. 1/2), subspace clustering (Thm. 3/4), the low-rank DAE loss (eq. 6, 9, 16), the App. E.1
success metric and the phase-transition grid (Fig. 4)."""
import json

import pytest
import torch

from lowdim_app.errors import UserError
from lowdim_app.features.phase import FEATURE as PHASE, PhaseSettings
from lowdim_app.metrics import principal_cosines
from lowdim_app.synthetic.dae import _reduced_grad, dae_loss, default_dae_config, expected_dae_loss, train_dae
from lowdim_app.synthetic.phase import cell_data, iter_phase
from lowdim_app.synthetic.subspace import k_subspaces, pca_subspaces, stiefel_retract, subspace_error, success

pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny tensor ops


def _data(K, n, d, N, T=6, seed=0):
    st = PhaseSettings(n=n, K=K, d=(d,), N=(N,), trials=T, seed=seed)
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
    base = dict(n=24, d=[2, 3, 4], N=[1, 2, 3, 4, 5, 6], trials=5, seed=0)
    base.update(kw)
    return PhaseSettings(**base)


def run_phase(st):
    return PHASE.run(st).grid


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


def test_phase_stream_partial_and_json_roundtrip(tmp_path):
    st = _settings(K=1, method="svd")
    parts = list(PHASE.stream(st))                  # one result per N column
    assert [r.grid.cells_done for r in parts] == [3 * (j + 1) for j in range(6)]
    assert [r.finished for r in parts] == [False] * 5 + [True]
    res = parts[-1]
    for j, part in enumerate(parts):               # column j is filled at step j and never changes
        for i in range(3):
            assert part.grid.success[i][:j + 1] == res.grid.success[i][:j + 1]
            assert part.grid.success[i][j + 1:] == [None] * (5 - j)
    path = res.write_json(tmp_path / "p.json")
    obj = json.loads(path.read_text())
    assert obj["command"] == "phase" and obj["settings"]["method"] == "svd"
    assert obj["d_values"] == [2, 3, 4] and obj["N_values"] == [1, 2, 3, 4, 5, 6]
    assert obj["success_rate"] == res.grid.success and obj["cells_total"] == 18 and obj["finished"]
    # same seed -> same grid, also with other batching (data depend on the cell only)
    again = run_phase(_settings(K=1, method="svd", chunk="cell"))
    assert again.success == res.grid.success
    csv = res.to_csv().splitlines()
    assert csv[0] == "d,N,success_rate,mean_error,trials" and len(csv) == 19
    assert csv[1].split(",")[:3] == ["2", "1", f"{res.grid.success[0][0]:.4f}"]


def test_phase_stop_and_validation():
    n_calls = []
    out = list(iter_phase(_settings(K=1, method="svd"), should_stop=lambda: n_calls.append(1) or len(n_calls) >= 2))
    # the second poll (after the second column's solve) stops the run: that column is not recorded
    assert not out[-1].finished and out[-1].cells_done == 3 and len(out) == 1
    assert [row[1] for row in out[-1].success] == [None] * 3
    with pytest.raises(UserError, match="svd"):
        _settings(K=2, method="svd")
    with pytest.raises(UserError, match="exceeds n"):
        _settings(K=3, n=8, d=[3])
    with pytest.raises(UserError, match="cells"):
        _settings(K=1, d=list(range(1, 21)), N=list(range(1, 102)))  # 2020 cells > 2000
    assert _settings(d=[4, 2, 2, 3]).d == (2, 3, 4)                  # sorted, duplicates dropped


@pytest.mark.parametrize("K,method", [(1, "svd"), (2, "cluster")])
def test_noisy_cell_success_follows_the_selected_norm(K, method):
    """With noise the spectral and Frobenius App. E.1 errors differ; each success rate must equal the
    rate of an exact reference (principal angles between the estimate and the truth, eq. 12 by SVD)."""
    d, N, T = 3, 6, 10
    rates = {}
    for norm in ("spectral", "fro"):
        st = PhaseSettings(K=K, n=24, d=(d,), N=(N,), trials=T, method=method, noise=0.1, norm=norm, seed=0)
        res = run_phase(st)
        U, X, labels = cell_data(st, d, N)
        errs = []
        for t in range(T):
            per = []
            for k in range(K):                      # the true labels: K = 2 clustering is exact here
                Xk = X[t][labels[t] == k]
                Uh = torch.linalg.svd(Xk.T, full_matrices=False)[0][:, :d]
                sin2 = 1 - principal_cosines(Uh.T, U[t, k].T) ** 2
                per.append(float(sin2.max().sqrt()) if norm == "spectral" else float((2 * sin2.sum()).sqrt()))
            errs.append(sum(per) / K)
        expected = sum(e <= st.threshold for e in errs) / T
        assert res.success[0][0] == expected, (norm, errs)
        assert res.mean_error[0][0] == pytest.approx(sum(errs) / T, abs=1e-9)
        rates[norm] = expected
    assert rates["spectral"] > rates["fro"] + 0.5, rates       # the cell tells the norms apart


def test_phase_dae_small_grid():
    res = run_phase(_settings(K=1, method="dae", d=[2], N=[1, 4], trials=3, dae_iters=300))
    assert res.success[0] == [0.0, 1.0]


def test_phase_cost_scales_with_the_grid_and_the_web_budget_is_declared_once():
    from lowdim_app.features.phase import WEB_MAX_PROBLEMS

    base = _settings(K=1, method="svd", trials=10)
    assert PHASE.cost(base.replace(trials=20)).cpu_seconds == pytest.approx(2 * PHASE.cost(base).cpu_seconds)
    costs = [PHASE.cost(base.replace(method=m)).cpu_seconds for m in ("svd", "cluster", "dae")]
    assert costs[0] < costs[1] < costs[2]
    dae = base.replace(method="dae")
    assert PHASE.cost(dae.replace(dae_iters=600)).cpu_seconds == pytest.approx(
        2 * PHASE.cost(dae.replace(dae_iters=300)).cpu_seconds)
    full = PhaseSettings(K=1, n=24, d=list(range(1, 11)), N=list(range(1, 21)), trials=WEB_MAX_PROBLEMS // 200)
    PHASE.check_web_budget(full)                                   # exactly at the cap
    with pytest.raises(UserError, match="web app"):
        PHASE.check_web_budget(full.replace(trials=full.trials + 1))


def test_phase_cancel_raises_and_drops_the_interrupted_column():
    from lowdim_app.features.base import Cancelled

    st = _settings(K=1, method="dae", d=[2], N=[2, 3, 4], trials=2, dae_iters=400)
    got = []
    with pytest.raises(Cancelled):
        for res in PHASE.stream(_settings(K=1, method="svd"), should_stop=lambda: len(got) >= 1):
            got.append(res)
    assert len(got) == 1 and got[0].grid.cells_done == 3
    got = []
    with pytest.raises(Cancelled):                                  # during the DAE training of column 2
        for res in PHASE.stream(st, should_stop=lambda: len(got) >= 1):
            got.append(res)
    assert [r.grid.cells_done for r in got] == [1] and got[0].grid.success[0][1:] == [None, None]
