"""GL score (Wang et al. 2024, eq. 21), the batched MLP denoiser, EDM sampling and the rank-vs-SNR
experiment (Fig. 3b), through the features ``gl-score`` and ``molrg-rank``."""
import csv
import io

import pytest
import torch

from lowdim_app.features.gl_score import FEATURE as GL, GLSettings
from lowdim_app.features.molrg_rank import FEATURE as RANK, RankSettings
from lowdim_app.synthetic.gl_score import BatchedMLP, edm_sample, gl_distance, gl_score, train_denoisers
from lowdim_app.synthetic.molrg import MoLRG, edm_sigmas


pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny tensor ops


def test_gl_distance_and_score():
    x = torch.tensor([[0.0, 0.0], [3.0, 0.0], [3.0, 4.0]])
    assert float(gl_distance(x)) == pytest.approx(3 + 3 + 4)
    m = MoLRG.random(20, [3, 3], seed=0)
    g = torch.Generator().manual_seed(1)
    train, _ = m.sample(30, generator=g)
    fresh, _ = m.sample(300, generator=g)
    fresh2, _ = m.sample(300, generator=g)
    # fresh samples of the distribution: GL ~ 1; copies of 30 training points (+ tiny jitter): GL ~ 0
    assert gl_score(fresh2, fresh) == pytest.approx(1.0, abs=0.1)
    copies = train[torch.randint(0, 30, (300,), generator=g)] + 1e-3 * torch.randn(300, 20, generator=g, dtype=torch.float64)
    assert float(gl_score(copies, fresh)) < 0.05


def test_edm_sampler_with_exact_denoiser_samples_the_mixture():
    m = MoLRG.random(10, [2, 2], seed=3)
    g = torch.Generator().manual_seed(4)
    x = edm_sample(lambda z, s: m.posterior_mean(z, 1.0, s), (400, 10), edm_sigmas(18), generator=g,
                   dtype=torch.float64)
    P = [U @ U.T for U in m.bases]
    resid = torch.stack([(x - x @ Pk).norm(dim=-1) for Pk in P], -1).amin(-1)
    assert float(resid.median()) < 0.05                 # samples land on the union of subspaces
    ref, _ = m.sample(400, generator=g)
    assert float(gl_score(x, ref)) == pytest.approx(1.0, abs=0.15)


def test_batched_mlp_members_are_independent_and_training_reduces_loss():
    m = MoLRG.random(6, [2], seed=0)
    X = m.sample(60, generator=torch.Generator().manual_seed(0))[0].float().reshape(3, 20, 6)
    nv = torch.tensor([5, 10, 20])
    losses = []
    before = train_denoisers(X, nv, steps=0, batch=32, width=32, seed=0)   # same initial weights
    after = train_denoisers(X, nv, steps=300, batch=32, width=32, seed=0,
                            callback=lambda it, l: losses.append(l.clone()), callback_every=50)
    assert len(losses) == 6 and losses[-1].shape == (3,)
    noise = torch.randn(X.shape, generator=torch.Generator().manual_seed(1))
    sig = torch.full(X.shape[:2], 0.3)
    with torch.no_grad():
        mse = [((net(X + 0.3 * noise, sig) - X) ** 2).mean((1, 2)) for net in (before, after)]
    assert bool((mse[1] < 0.8 * mse[0]).all()), mse      # every member learned to denoise
    net = BatchedMLP(2, 4, width=8)
    x = torch.randn(2, 5, 4)
    s = torch.full((2, 5), 0.7)
    y = net(x, s)
    x2 = x.clone()
    x2[1] += 1.0
    assert torch.allclose(net(x2, s)[0], y[0])        # member 0 ignores member 1's input


def test_rank_vs_snr_closed_form_and_dae_within_lemma2():
    st = RankSettings(n=20, dims=[3, 3], N=200, steps=10, trajectories=3, dae_iters=150, mlp_steps=0)
    parts = list(RANK.stream(st))                      # one result per model
    assert [list(p.models) for p in parts] == [["posterior mean (Lemma 1)"],
                                               ["posterior mean (Lemma 1)", "low-rank DAE (eq. 9, SGD)"]]
    assert [p.finished for p in parts] == [False, True]
    out = parts[-1]
    lo, hi = out.bounds
    assert (lo, hi) == (3 / 20, 6 / 20)                # Lemma 2 (eq. 44) as ratios
    for name in ("posterior mean (Lemma 1)", "low-rank DAE (eq. 9, SGD)"):
        vals = out.models[name]
        assert len(vals) == 10 and all(lo - 1e-9 <= v <= hi + 1e-9 for v in vals)
    pm = out.models["posterior mean (Lemma 1)"]
    assert pm[0] == pytest.approx(hi) and pm[-1] == pytest.approx(lo)   # low SNR: union; high SNR: one subspace
    assert parts[0].models["posterior mean (Lemma 1)"] == pm              # later models leave earlier curves alone
    table = list(csv.reader(io.StringIO(out.to_csv())))
    assert table[0] == ["sigma", "snr", "posterior mean (Lemma 1)", "low-rank DAE (eq. 9, SGD)"] and len(table) == 11
    assert float(table[1][1]) == pytest.approx(1 / out.sigma[0], rel=1e-5)
    assert [float(r[3]) for r in table[1:]] == pytest.approx(out.models["low-rank DAE (eq. 9, SGD)"], abs=1e-5)


def test_rank_unequal_dims_skip_the_dae_with_a_note():
    out = RANK.run(RankSettings(n=12, dims=[2, 3], N=50, steps=4, trajectories=2, dae_iters=20, mlp_steps=0))
    assert list(out.models) == ["posterior mean (Lemma 1)"] and out.finished
    assert any("equal d_k" in n for n in out.notes)


def test_gl_score_small_n_memorizes_large_n_generalizes():
    """Fig. 5a in miniature: trained on N_k = d_k samples per component the network reproduces its
    training points (GL near 0); on N_k = 48 d_k it samples the mixture (GL near 1; measured 0.17 and
    1.18 with these settings, the overshoot is residual off-subspace noise of the short training)."""
    st = GLSettings(n=12, K=2, d=[2], ratios=[1, 48], steps=6000, width=128, depth=3, n_eval=200)
    res = GL.run(st)
    gl = {r["ratio"]: r["gl"] for r in res.rows}
    assert res.finished and gl[1] < 0.3 and 0.8 < gl[48] < 1.4, gl


def test_gl_stream_fills_in_per_d_and_cancel_keeps_finished_curves_only():
    from lowdim_app.features.base import Cancelled

    st = GLSettings(n=12, K=2, d=[2, 3], ratios=[1, 2.5], steps=20, width=16, depth=2, n_eval=30)
    parts = list(GL.stream(st))
    assert [[(r["d"], r["N_k"]) for r in p.rows] for p in parts] == [[(2, 2), (2, 5)], [(2, 2), (2, 5), (3, 3), (3, 8)]]
    assert [p.finished for p in parts] == [False, True] and parts[0].rows == parts[1].rows[:2]
    assert parts[1].to_csv().splitlines()[1:] == [
        f"{r['d']},{r['N_k']},{r['ratio']:g},{r['gl']:.5f},{r['train_loss']:.5f}" for r in parts[1].rows]
    got, polls = [], []

    def stop_during_second_training():      # true from the 3rd poll after the first curve: mid-training
        if got:
            polls.append(1)
        return len(polls) >= 3

    with pytest.raises(Cancelled):
        for res in GL.stream(st.replace(steps=300), should_stop=stop_during_second_training):
            got.append(res)
    assert len(got) == 1 and [r["d"] for r in got[0].rows] == [2, 2]


def test_costs_follow_the_work_that_runs():
    gl = GLSettings(d=[3], ratios=[1, 2])
    assert GL.cost(gl.replace(d=(3, 4, 5, 6))).cpu_seconds == pytest.approx(4 * GL.cost(gl).cpu_seconds)
    assert GL.cost(gl.replace(steps=24000)).cpu_seconds == pytest.approx(2 * GL.cost(gl).cpu_seconds)
    rk = RankSettings()
    assert RANK.cost(rk.replace(mlp_steps=0)).cpu_seconds < RANK.cost(rk).cpu_seconds
    # unequal d_k skip the DAE: it costs nothing then
    assert RANK.cost(rk.replace(dims=(5, 6))).cpu_seconds == pytest.approx(
        RANK.cost(rk.replace(dims=(5, 6), dae_iters=0)).cpu_seconds)
    assert RANK.cost(rk.replace(dae_iters=0)).cpu_seconds < RANK.cost(rk).cpu_seconds
