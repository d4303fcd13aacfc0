"""Seed 002 checks: MoE-latent MoG score = analytic MoLR-MoG score; beats the latent Gaussian (MoLRG)."""
import pytest
import torch

from lowdim_app.synthetic import molr_mog as mm


pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny tensor ops


def test_moe_mog_score_equals_autograd_of_log_density():
    tr = mm.make_molr_mog(K=3, D=10, d=3, n_modes=3, spread=0.3, seed=1, dtype=torch.float64)
    tr.U = tr.U + 0.1 * torch.randn(tr.U.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    tr.logpi = torch.randn(3, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    g = torch.Generator().manual_seed(4)
    x0 = tr.sample(30, g)[0]
    for s, gam in ((0.95, 0.3), (0.6, 0.8), (0.999, 0.04)):
        x = (s * x0 + gam * torch.randn(x0.shape, generator=g, dtype=torch.float64)).requires_grad_(True)
        (auto,) = torch.autograd.grad(tr.log_density(x, s, gam).sum(), x)
        ana = mm.moe_mog_score(x.detach(), tr.A, tr.mu, tr.U, tr.logpi, s, gam)
        assert float((ana - auto).norm() / auto.norm()) < 1e-8


def test_moe_mog_beats_latent_gaussian_on_multimodal_data():
    res = mm.run_molr_mog(mm.MolrMogConfig(steps=200, n_samples=200, sample_steps=20, seed=0))
    ev = res.numbers["eval_loss"]
    assert ev["moe_mog"] < ev["moe_gaussian"] - 0.3
    assert res.numbers["oracle_loss"] <= ev["moe_mog"] + 0.05
    assert ev["moe_mog"] < res.numbers["oracle_loss"] + 0.1   # close to the true score
    q = res.numbers["sample_quality"]
    assert q["moe_mog"]["mean_dist_to_nearest_mode"] < q["moe_gaussian"]["mean_dist_to_nearest_mode"]
    pc = res.numbers["param_counts"]
    assert pc["moe_gaussian"] < pc["moe_mog"] < pc["latent_mlp"]
