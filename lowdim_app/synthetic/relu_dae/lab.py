"""The numbers the memorize-vs-generalize lab reports (Zhang et al. 2025, arXiv:2512.20963, §3, App. A).

One function per stage: :func:`regime_numbers` (one trained DAE: eq. 6 objective, representation
statistics of §3.3, one-step denoising of App. A.2, eq. 8 blocks), :func:`hybrid_numbers` (Cor. 3.4:
duplicated samples are memorized inside a generalizing model), :func:`comparison_numbers` (AUROC of
the representation std) and :func:`sample_numbers` (DDIM samples of eq. 1 against the training set). Each returns JSON-able
numbers and the arrays the figure draws.
"""
from __future__ import annotations

import torch

from ...metrics import auroc
from .analysis import (
    alive_columns,
    block_analysis,
    column_match,
    representation_stats,
    stats,
    subspace_capture,
)
from .data import DAEData, cosine_matrix
from .model import ReluDAE, denoise, representations
from .sampling import ddim_sample, nearest_train, train_level_daes

Tensor = torch.Tensor
COPY_COSINE = 0.95      # a sample whose nearest training row has cosine >= this counts as a copy


def regime_numbers(dae: ReluDAE, data: DAEData, seed: int, clustered: bool) -> tuple[dict, dict]:
    """Objective, separability, representation statistics and denoising of one trained DAE."""
    nums: dict = {"n_rows": int(len(data.train)), "n_distinct": int(len(data.unique_index)), "p": dae.p,
                  "final_data_loss": dae.loss_curve[-1] if dae.loss_curve else None,
                  "objective": dae.objective(data.unique, seed=seed), "train_seconds": round(dae.wall_s, 2),
                  "alive_columns": int(alive_columns(dae).sum())}
    U = data.unique
    off = cosine_matrix(U) - 2 * torch.eye(len(U))
    nums["beta_max_pairwise_cos"] = float(off.max()) if len(U) > 1 else None
    if not dae.tied:
        nums["untied_rel_diff_W1_W2"] = float((dae.W1 - dae.W2).norm() / dae.W1.norm().clamp_min(1e-12))
    arrays: dict = {}
    rows_tr = list(range(min(len(U), 500)))
    Htr = representations(dae, U[rows_tr], draws=max(1, 100 // max(1, len(rows_tr))), seed=seed + 11)
    Hte = representations(dae, data.test[:500], seed=seed + 12)
    sp_tr, sp_te = representation_stats(Htr), representation_stats(Hte)
    arrays["std_train"], arrays["std_test"] = sp_tr["std"], sp_te["std"]
    arrays["h_example"] = representations(dae, U[:1], seed=seed + 13)[0]
    for nm, sp in (("train", sp_tr), ("test", sp_te)):
        nums[f"rep_std_{nm}"] = stats(sp["std"])
        nums[f"rep_max_over_l2_{nm}"] = stats(sp["max_over_l2"])
        nums[f"rep_active_units_{nm}"] = stats(sp["active"])
    dn_tr = denoise(dae, U[:200], seed=seed + 14)
    dn_te = denoise(dae, data.test[:200], seed=seed + 15)
    nums["denoise_mse_train"] = float(dn_tr["mse"].mean())
    nums["denoise_mse_test"] = float(dn_te["mse"].mean())
    nums["noisy_input_mse"] = float(dn_te["noisy_mse"].mean())
    arrays["denoise_train"], arrays["denoise_test"] = dn_tr, dn_te
    if clustered and data.kind == "mog":
        nums["blocks_eq8"] = block_analysis(dae, data)
    if data.kind == "digits":
        nums["subspace_capture"] = subspace_capture(dae, data.unique)
    return nums, arrays


def hybrid_numbers(dae: ReluDAE, data: DAEData, seed: int) -> tuple[dict, dict]:
    """Cor. 3.4: the duplicated samples match eq. 9 (with ``n lam / c``) and have spikier
    representations than the rest of the training set."""
    dup_std = representation_stats(representations(dae, data.train[data.duplicated], draws=20, seed=seed + 21))["std"]
    rest = [i for i in range(len(data.unique_index)) if i not in data.duplicated][:500]
    rest_std = representation_stats(representations(dae, data.train[rest], seed=seed + 22))["std"]
    nums = {"duplicated_eq9": column_match(dae, data, rows=data.duplicated),
            "rep_std_duplicated": stats(dup_std), "rep_std_not_duplicated": stats(rest_std),
            "auroc_std_duplicated_vs_rest": auroc(dup_std, rest_std)}
    return nums, {"std_dup": dup_std, "std_rest": rest_std}


def comparison_numbers(memorize: dict, generalize: dict) -> dict:
    """AUROC of the representation std: memorizer train vs generalizer train, and vs memorizer test."""
    return {"auroc_std_mem_train_vs_gen_train": auroc(memorize["std_train"], generalize["std_train"]),
            "auroc_std_mem_train_vs_mem_test": auroc(memorize["std_train"], memorize["std_test"])}


def sample_numbers(dae: ReluDAE, data: DAEData, sigmas: list[float], *, level_steps: int, batch: int,
                   n_samples: int, seed: int, sample_seed: int, callback=None) -> tuple[dict, dict]:
    """DAEs on the noise grid (warm-started from ``dae``), DDIM samples, and how close each sample is
    to its most similar training row (a copy: cosine >= 0.95)."""
    daes = train_level_daes(dae, data.train, sigmas, steps=level_steps, batch=batch, seed=seed, callback=callback)
    S = ddim_sample(daes, n_samples, seed=sample_seed)
    nn = nearest_train(S, data.unique)
    nums = {"nearest_train_cos": stats(nn["cos"]),
            f"copy_fraction_cos_ge_{COPY_COSINE}": float((nn["cos"] >= COPY_COSINE).float().mean()),
            "nearest_train_rel_dist": stats(nn["rel_dist"])}
    return nums, {"samples": S, "samples_nearest": data.unique[nn["index"]]}
