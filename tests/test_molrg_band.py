"""Fig. 3b of Wang et al. 2024 (arXiv:2409.02426, App. D.2, Lemma 2): a network trained on MoLRG data keeps the
numerical rank of its Jacobian inside Lemma 2's band [min d_k, sum d_k] at every SNR -- with the lab's default
parameterization (the MLP predicts x0). EDM preconditioning, the other choice, leaves the band (its skip keeps
the Jacobian near the identity), which is what this test would catch if the default changed
(bench/molrg_parameterization.py measures both at the lab's real size)."""
from __future__ import annotations

import pytest

from lowdim_app.features.molrg_rank import FEATURE as RANK, RankSettings

pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny tensor ops

SLACK = 0.03     # the bench's tolerance: +-0.03 of n


def _mlp_curve(param: str):
    st = RankSettings(n=24, dims=(3, 3), N=500, steps=12, trajectories=5, dae_iters=0, mlp_steps=1500,
                      mlp_width=128, mlp_param=param, seed=0)
    res = RANK.run(st)
    (name,) = [k for k in res.models if k.startswith("MLP")]
    return res.snr, res.models[name], res.bounds


def test_default_parameterization_is_the_sample_predictor():
    assert RankSettings().mlp_param == "sample"


def test_trained_mlp_stays_inside_lemma2_band_at_every_snr():
    snr, vals, (lo, hi) = _mlp_curve("sample")
    assert len(vals) == 12 and snr == sorted(snr)
    assert all(lo - SLACK <= v <= hi + SLACK for v in vals), vals
    # the shape of Fig. 3b: the union of the subspaces at high noise, near one component at low noise
    assert vals[0] == pytest.approx(hi, abs=SLACK) and vals[-1] <= lo + SLACK, vals


def test_edm_preconditioned_mlp_leaves_the_band():
    _, vals, (lo, hi) = _mlp_curve("edm")
    assert sum(v > hi + SLACK for v in vals) >= len(vals) // 2, vals
