"""Seed 004 §3 checks on the two-layer ReLU DAE (small MoG so the file runs in seconds)."""
import pytest
import torch

from lowdim_app.synthetic import relu_dae as rd


pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny tensor ops

D = 32


def _mem():
    data = rd.make_data("mog", "memorize", n=2, d=D, mu=5.0, decay=0.7, seed=0)  # one per mode: separable (beta < 0)
    dae = rd.train_dae(data.train, p=16, sigma=0.2, lam=1e-3, tied=True, steps=3000, batch=64, seed=1)
    return data, dae


def _gen():
    data = rd.make_data("mog", "generalize", n=600, d=D, mu=5.0, decay=0.7, seed=0)
    dae = rd.train_dae(data.train, p=8, sigma=0.2, lam=1e-3, tied=True, steps=800, batch=256, seed=2)
    return data, dae


def test_memorizing_columns_match_eq9_and_generalizing_block_spans_pcs():
    data, dae = _mem()
    m = rd.column_match(dae, data)
    # every training sample is stored in a column: cosine ~ 1, and the norm of all columns firing on
    # x_i equals r_i ||x_i|| from eq. 9 (splitting-invariant, see module docstring)
    assert min(m["best_cos"]) > 0.95, m["best_cos"]
    for eff, th in zip(m["effective_norm"], m["eq9_norm"]):
        assert abs(eff - th) / th < 0.02, (eff, th)
    # eq. 9 closed form itself: r_i < 1/||x_i|| and decreasing in lam
    r = rd.memorization_r(data.unique, 0.2, 1e-3)
    assert torch.all(r * data.unique.double().norm(dim=1) < 1)
    assert torch.all(rd.memorization_r(data.unique, 0.2, 1e-2) < r)

    gdata, gdae = _gen()
    blocks = rd.block_analysis(gdae, gdata)
    for b in blocks:
        assert b["p_k"] >= 1
        # the block's columns span the cluster's top p_k principal directions (Thm 3.1, eq. 8)
        assert min(b["principal_cos"]) > 0.99, b
        # and W_k W_k^T equals the eq. 8 matrix U diag(s^2) U^T
        assert b["rel_err_WWt_eq8"] < 0.1, b



def test_representation_std_and_one_step_denoising_digits():
    """§3.3 / App. A.2 on the built-in digits: the memorizing DAE's train representations are spiky (larger
    std) than the generalizing DAE's; the memorizer denoises its train samples far better than test ones,
    the generalizer does equally well on both."""
    dm = rd.make_data("digits", "memorize", n=5, seed=0)
    m = rd.train_dae(dm.train, p=16, sigma=0.2, lam=1e-3, steps=1500, batch=128, seed=1)
    assert min(rd.column_match(m, dm)["best_cos"]) > 0.95
    dg = rd.make_data("digits", "generalize", n=500, seed=0)
    g = rd.train_dae(dg.train, p=16, sigma=0.2, lam=1e-3, steps=1000, batch=128, seed=2)
    Hm = rd.representations(m, dm.unique, draws=40, seed=3)
    Hg = rd.representations(g, dg.unique[:200], seed=4)
    au = rd.auroc(rd.spikiness(Hm)["std"], rd.spikiness(Hg)["std"])
    assert au > 0.75, au
    tr = rd.denoise(m, dm.unique, seed=5)["mse"].mean()
    te = rd.denoise(m, dm.test[:100], seed=6)["mse"].mean()
    assert tr < 0.1 * te
    gtr = rd.denoise(g, dg.unique[:100], seed=5)["mse"].mean()
    gte = rd.denoise(g, dg.test[:100], seed=6)["mse"].mean()
    assert abs(float(gtr - gte)) / float(gte) < 0.2


def test_seeded_and_bounds():
    X = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    a = rd.train_dae(X, p=4, sigma=0.2, lam=1e-3, steps=20, batch=32, seed=5)
    b = rd.train_dae(X, p=4, sigma=0.2, lam=1e-3, steps=20, batch=32, seed=5)
    c = rd.train_dae(X, p=4, sigma=0.2, lam=1e-3, steps=20, batch=32, seed=6)
    assert a.W1.shape == (8, 4)
    assert torch.equal(a.W1, b.W1) and torch.equal(a.W2, b.W2) and not torch.equal(a.W1, c.W1)
    import pytest
    from lowdim_app.errors import UserError
    with pytest.raises(UserError):
        rd.ReluLabConfig(p=0).validate()
    with pytest.raises(UserError):
        rd.make_data("cifar", "memorize")
