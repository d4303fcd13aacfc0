"""Zhang et al. 2025 (arXiv:2512.20963) §3 checks on the two-layer ReLU DAE (small MoG so the file runs
in seconds), and the ``relu-dae`` feature: stages, cancellation, cross-field settings."""
import math

import pytest
import torch

from lowdim_app.errors import UserError
from lowdim_app.features.base import Cancelled
from lowdim_app.features.relu_dae import FEATURE, ReluDaeSettings
from lowdim_app.metrics import auroc
from lowdim_app.synthetic.relu_dae import analysis, lab, model, sampling, train
from lowdim_app.synthetic.relu_dae import data as rd_data

pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny tensor ops

D = 32


def _mem():
    data = rd_data.make_data("mog", "memorize", n=2, d=D, mu=5.0, decay=0.7, seed=0)  # one per mode: separable (beta < 0)
    dae = train.train_dae(data.train, p=16, sigma=0.2, lam=1e-3, tied=True, steps=3000, batch=64, seed=1)
    return data, dae


def _gen():
    data = rd_data.make_data("mog", "generalize", n=600, d=D, mu=5.0, decay=0.7, seed=0)
    dae = train.train_dae(data.train, p=8, sigma=0.2, lam=1e-3, tied=True, steps=800, batch=256, seed=2)
    return data, dae


def test_memorizing_columns_match_eq9_and_generalizing_block_spans_pcs():
    data, dae = _mem()
    m = analysis.column_match(dae, data)
    # every training sample is stored in a column: cosine ~ 1, and the norm of all columns firing on
    # x_i equals r_i ||x_i|| from eq. 9 (splitting-invariant, see synthetic.relu_dae.analysis)
    assert min(m["best_cos"]) > 0.95, m["best_cos"]
    for eff, th in zip(m["effective_norm"], m["eq9_norm"]):
        assert abs(eff - th) / th < 0.02, (eff, th)
    # eq. 9 closed form itself: r_i < 1/||x_i|| and decreasing in lam
    r = analysis.memorization_r(data.unique, 0.2, 1e-3)
    assert torch.all(r * data.unique.double().norm(dim=1) < 1)
    assert torch.all(analysis.memorization_r(data.unique, 0.2, 1e-2) < r)

    gdata, gdae = _gen()
    blocks = analysis.block_analysis(gdae, gdata)
    for b in blocks:
        assert b["p_k"] >= 1
        # the block's columns span the cluster's top p_k principal directions (Thm 3.1, eq. 8)
        assert min(b["principal_cos"]) > 0.99, b
        # and W_k W_k^T equals the eq. 8 matrix U diag(s^2) U^T
        assert b["rel_err_WWt_eq8"] < 0.1, b


def test_representation_std_and_one_step_denoising_digits():
    """§3.3 / App. A.2 on the built-in digits: the memorizing DAE's train representations are spikier
    (larger std) than the generalizing DAE's; the memorizer denoises its train samples far better than
    test ones, the generalizer does equally well on both."""
    dm = rd_data.make_data("digits", "memorize", n=5, seed=0)
    m = train.train_dae(dm.train, p=16, sigma=0.2, lam=1e-3, steps=1500, batch=128, seed=1)
    assert min(analysis.column_match(m, dm)["best_cos"]) > 0.95
    dg = rd_data.make_data("digits", "generalize", n=500, seed=0)
    g = train.train_dae(dg.train, p=16, sigma=0.2, lam=1e-3, steps=1000, batch=128, seed=2)
    Hm = model.representations(m, dm.unique, draws=40, seed=3)
    Hg = model.representations(g, dg.unique[:200], seed=4)
    au = auroc(analysis.representation_stats(Hm)["std"], analysis.representation_stats(Hg)["std"])
    assert au > 0.75, au
    tr = model.denoise(m, dm.unique, seed=5)["mse"].mean()
    te = model.denoise(m, dm.test[:100], seed=6)["mse"].mean()
    assert tr < 0.1 * te
    gtr = model.denoise(g, dg.unique[:100], seed=5)["mse"].mean()
    gte = model.denoise(g, dg.test[:100], seed=6)["mse"].mean()
    assert abs(float(gtr - gte)) / float(gte) < 0.2


def test_duplicated_samples_are_memorized_with_n_lam_over_c():
    """Cor. 3.4: inside a generalizing DAE a sample repeated c times is a rank-1 cluster stored as a column
    with eq. 9's norm for n lam / c (not n lam), and its representation is spikier than the rest's."""
    d = rd_data.make_data("mog", "hybrid", n=300, n_dup=2, copies=50, d=16, seed=0)
    dae = train.train_dae(d.train, 16, 0.2, 2e-2, steps=1500, batch=128, seed=1)
    nums, arrays = lab.hybrid_numbers(dae, d, 0)
    m = nums["duplicated_eq9"]
    X = d.train[d.duplicated]
    once = analysis.memorization_r(X, 0.2, 2e-2, n_total=len(d.train)) * X.double().norm(dim=1)
    assert min(m["best_cos"]) > 0.9
    for eff, th, w in zip(m["effective_norm"], m["eq9_norm"], once.tolist()):
        assert abs(eff - th) / th < 0.01 and eff > 1.05 * w, (eff, th, w)
    assert nums["auroc_std_duplicated_vs_rest"] > 0.7 and len(arrays["std_dup"]) == 2 * 20


def test_comparison_scores_memorized_as_the_spikier():
    """AUROC orientation: a higher representation std means memorized (§3.3)."""
    mem = {"std_train": torch.tensor([3.0, 1.5]), "std_test": torch.tensor([1.0, 0.5])}
    gen = {"std_train": torch.tensor([1.0, 2.0])}
    out = lab.comparison_numbers(mem, gen)
    assert out == {"auroc_std_mem_train_vs_gen_train": 0.75, "auroc_std_mem_train_vs_mem_test": 1.0}


def test_representation_stats_closed_forms():
    """One-hot rows (the spikiest): std = sqrt(1/p - 1/p^2) (population std, the shared spikiness score),
    max/l2 = 1, one active unit; a flat row: std 0, max/l2 = 1/sqrt(p), p active units."""
    p = 8
    H = torch.stack([torch.eye(p)[3] * 2.5, torch.full((p,), 0.7)])
    st = analysis.representation_stats(H)
    assert torch.allclose(st["std"], torch.tensor([2.5 * math.sqrt(1 / p - 1 / p ** 2), 0.0], dtype=torch.float64))
    assert torch.allclose(st["max_over_l2"], torch.tensor([1.0, 1 / math.sqrt(p)]))
    assert st["active"].tolist() == [1.0, float(p)]


def test_nearest_train_is_the_most_similar_row():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 12, generator=g)
    S = torch.cat([3.0 * X[[7, 21]], torch.randn(10, 12, generator=g)])   # two scaled copies, ten others
    nn = sampling.nearest_train(S, X)
    brute = rd_data.cosine_matrix(S, X)
    assert torch.equal(nn["index"], brute.argmax(1))
    assert torch.allclose(nn["cos"], brute.max(1).values, atol=1e-6)
    assert nn["index"][:2].tolist() == [7, 21] and torch.allclose(nn["cos"][:2], torch.ones(2))
    assert torch.allclose(nn["rel_dist"][:2], torch.full((2,), 2.0), atol=1e-5)   # ||3x - x|| / ||x||


def test_seeded_and_bounds():
    X = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    a = train.train_dae(X, p=4, sigma=0.2, lam=1e-3, steps=20, batch=32, seed=5)
    b = train.train_dae(X, p=4, sigma=0.2, lam=1e-3, steps=20, batch=32, seed=5)
    c = train.train_dae(X, p=4, sigma=0.2, lam=1e-3, steps=20, batch=32, seed=6)
    assert a.W1.shape == (8, 4)
    assert torch.equal(a.W1, b.W1) and torch.equal(a.W2, b.W2) and not torch.equal(a.W1, c.W1)
    with pytest.raises(UserError):
        ReluDaeSettings(p=0)
    with pytest.raises(UserError):
        rd_data.make_data("cifar", "memorize")


def test_data_dependent_settings_rules():
    from lowdim_app.data.digits import load_digits_split

    assert len(load_digits_split().train_images) == rd_data.DIGITS_TRAIN_SIZE
    ReluDaeSettings(data="mog", n_gen=5000)
    with pytest.raises(UserError, match="at most 1438 for digits"):
        ReluDaeSettings(data="digits", n_gen=1439)
    with pytest.raises(UserError, match="at least 2 for MoG"):
        ReluDaeSettings(data="mog", n_mem=1)
    ReluDaeSettings(data="digits", n_mem=1)
    with pytest.raises(UserError, match="sigma_min"):
        ReluDaeSettings(sigma_min=3.0)
    assert ReluDaeSettings(data="mog").sizes() == {"n_mem": 4, "n_gen": 2000, "n_dup": 1}
    assert ReluDaeSettings(n_gen=300).sizes() == {"n_mem": 5, "n_gen": 300, "n_dup": 2}


SMALL = dict(data="mog", d=8, n_mem=2, n_gen=60, steps=60, copies=5, levels=2, level_steps=10, n_samples=4, batch=32)


def test_stream_reports_every_stage_and_is_seeded():
    s = ReluDaeSettings(**SMALL)
    messages = []
    results = [(r.completed, r.finished) for r in FEATURE.stream(s, progress=lambda f, m: messages.append((f, m)))]
    assert results == [(1, False), (2, False), (3, False), (4, False), (5, False), (6, True)]
    stages = [m for _, m in messages if m.startswith("stage")]
    assert stages[0] == "stage 1/6: training the memorize DAE" and stages[-1] == "stage 6/6: DDIM sampling with the hybrid DAEs"
    assert messages[-1][0] == 1.0 and messages[-1][1].startswith("done in ")
    fractions = [f for f, _ in messages]
    assert fractions == sorted(fractions) and 0.0 <= fractions[0]
    without_sampling = [(r.completed, r.finished) for r in FEATURE.stream(s.replace(sample=False))]
    assert without_sampling == [(1, False), (2, False), (3, True)]
    final = FEATURE.run(s)
    again = FEATURE.run(s)
    assert final.values["memorize"]["eq9"] == again.values["memorize"]["eq9"]
    assert final.values["sampling"] == again.values["sampling"]
    assert "done in" in final.summary() and "AUROC" in final.summary()


def test_should_stop_cancels_inside_training():
    s = ReluDaeSettings(**{**SMALL, "steps": 5000})
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 3          # stop after a few progress reports, mid-way through the first DAE

    gen = FEATURE.stream(s, should_stop=stop)
    with pytest.raises(Cancelled):
        next(gen)
    assert calls["n"] == 4


def test_cost_grows_with_the_work():
    base = ReluDaeSettings(**SMALL)
    c = {n: FEATURE.cost(base.replace(steps=n)).cpu_seconds for n in (1, 301, 601)}
    assert 0 < c[1] < c[301] and math.isclose(c[601] - c[301], c[301] - c[1])     # linear in the steps
    wide = FEATURE.cost(base.replace(p=64)).cpu_seconds
    assert FEATURE.cost(base.replace(hybrid=False, sample=False)).cpu_seconds < FEATURE.cost(base).cpu_seconds < wide
