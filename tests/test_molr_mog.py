"""Yang et al. 2026 (arXiv:2601.01475) checks: the MoE-latent MoG score equals the analytic MoLR-MoG
score and beats the latent Gaussian (MoLRG); the ``molr-mog`` feature."""
import math

import pytest
import torch

from lowdim_app.errors import UserError
from lowdim_app.features.molr_mog import FEATURE, MolrMogSettings
from lowdim_app.synthetic import molr_mog as mm

pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny tensor ops


def dense_log_density(tr: mm.MoLRMoG, x, s: float, gamma: float):
    """Reference ``log p_t(x)`` of eq. 2 pushed through the forward process, with dense D x D covariances."""
    K, nk, d = tr.mu.shape
    D = tr.A.shape[1]
    terms = []
    for k in range(K):
        for l in range(nk):
            m = s * tr.A[k] @ tr.mu[k, l]
            AU = tr.A[k] @ tr.U[k, l]
            cov = s ** 2 * AU @ AU.T + gamma ** 2 * torch.eye(D, dtype=x.dtype)
            dist = torch.distributions.MultivariateNormal(m, covariance_matrix=cov)
            terms.append(dist.log_prob(x) + torch.log_softmax(tr.logpi[k], 0)[l] - math.log(K))
    return torch.logsumexp(torch.stack(terms, 1), 1)


def test_moe_mog_score_equals_autograd_of_log_density():
    tr = mm.make_molr_mog(K=3, D=10, d=3, n_modes=3, spread=0.3, seed=1, dtype=torch.float64)
    tr.U = tr.U + 0.1 * torch.randn(tr.U.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    tr.logpi = torch.randn(3, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    g = torch.Generator().manual_seed(4)
    x0 = tr.sample(30, g)[0]
    for s, gam in ((0.95, 0.3), (0.6, 0.8), (0.999, 0.04)):
        x = (s * x0 + gam * torch.randn(x0.shape, generator=g, dtype=torch.float64)).requires_grad_(True)
        (auto,) = torch.autograd.grad(dense_log_density(tr, x, s, gam).sum(), x)
        ana = mm.moe_mog_score(x.detach(), tr.A, tr.mu, tr.U, tr.logpi, s, gam)
        assert float((ana - auto).norm() / auto.norm()) < 1e-8


def test_moe_mog_beats_latent_gaussian_on_multimodal_data():
    messages = []
    res = FEATURE.run(MolrMogSettings(steps=200, n_samples=200, sample_steps=20, seed=0),
                      progress=lambda f, m: messages.append(m))
    ev = res.values["eval_loss"]
    assert ev["moe_mog"] < ev["moe_gaussian"] - 0.3
    assert res.values["oracle_loss"] <= ev["moe_mog"] + 0.05
    assert ev["moe_mog"] < res.values["oracle_loss"] + 0.1   # close to the true score
    q = res.values["sample_quality"]
    assert q["moe_mog"]["mean_dist_to_nearest_mode"] < q["moe_gaussian"]["mean_dist_to_nearest_mode"]
    pc = res.values["param_counts"]
    assert pc["moe_gaussian"] < pc["moe_mog"] < pc["latent_mlp"]
    assert list(dict.fromkeys(messages)) == [f"stage {k}/3: training and sampling the {m} score"
                                             for k, m in enumerate(mm.MODELS, 1)] + [messages[-1]]
    assert messages[-1].startswith("done in")


def test_latent_mlp_init_is_seeded_without_the_global_generator():
    """Concurrent requests share torch's global generator: building a model must neither read nor move it."""
    A = mm.random_subspaces(2, 6, 2, torch.Generator().manual_seed(0))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = mm.LatentMLPScore(A, 8, seed=5)
    assert torch.equal(torch.rand(3), expected)
    torch.manual_seed(999)
    b, c = mm.LatentMLPScore(A, 8, seed=5), mm.LatentMLPScore(A, 8, seed=6)
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    bound = 1 / math.sqrt(A.shape[2] + 1)       # PyTorch's default Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    w = a.nets[0][0].weight
    assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.8 * bound


def test_digits_encoders_keep_part_of_the_energy():
    """Per-class PCA with d_k = 4 keeps most but not all of a digit class's energy (uncentred)."""
    data = mm.digits_lab_data(d=4, n_modes=2, seed=0)
    assert data.A.shape == (10, 256, 4) and data.init_mu.shape == (10, 2, 4)
    assert 0.6 < data.info["pca_energy_captured"] < 0.99
    more = mm.digits_lab_data(d=16, n_modes=2, seed=0)
    assert more.info["pca_energy_captured"] > data.info["pca_energy_captured"]
    x = data.sample(50, torch.Generator().manual_seed(1))           # rows lie on their class's subspace
    y = torch.einsum("nD,kDd->nkd", x, data.A)
    off = (x.pow(2).sum(1, keepdim=True) - y.pow(2).sum(2)).min(1).values
    assert float(off.clamp_min(0).max()) < 1e-3 * float(x.pow(2).sum(1).max())


def test_latent_dimension_must_fit_the_ambient_space():
    with pytest.raises(UserError, match="at most the ambient D"):
        MolrMogSettings(d=9, D=8)
    MolrMogSettings(data="digits", d=20, D=8)       # D is the image size for digits
    with pytest.raises(UserError, match="gamma_max"):
        MolrMogSettings(gamma_min=0.5, gamma_max=0.4)
