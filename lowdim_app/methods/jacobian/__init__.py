"""Singular vectors of the denoiser's Jacobian ``J_t = d x0_hat / d x_t`` without forming it.

Wang et al. 2024 (arXiv:2409.02426), §4.2 and App. E.4: the right singular vectors ``v_i`` of ``J_t`` are
semantic edit directions; App. D.1 eq. 46: the numerical rank of ``J_t`` is low. Chen et al. 2024 (LOCO Edit,
arXiv:2409.02374): local directions from a masked Jacobian with a null-space projection.

Modules, one job each:

* :mod:`.operator` -- ``J V`` and ``J^T U`` for blocks of directions, counted in network evaluations;
* :mod:`.memory` -- how many directions one batched call may take within a memory budget;
* :mod:`.krylov` -- block Golub-Kahan-Lanczos and its stop rule; :mod:`.exact` -- the full Jacobian + SVD;
  :mod:`.baselines` -- LOCO Edit's power iteration and ARPACK;
* :mod:`.masked` -- LOCO Edit's local directions;
* :mod:`.plan` -- the search plan: solver, block, JVP kind, pass and memory budget, and why;
* :mod:`.solve` -- running a plan; :mod:`.diffusion` -- the operator of a diffusion model's ``x0_hat``.

Measurements behind the plan's rules: ``bench/jacobian.py`` and ``docs/editing.md``.
"""
from ...metrics import numerical_rank, principal_cosines, subspace_cosine
from .baselines import arpack_svd, linear_operator, subspace_iteration
from .diffusion import jacobian_of_x0_hat, masked_directions_of_x0_hat, top_singular, x0_hat_fn, x0_hat_operator
from .exact import exact_jacobian, exact_svd
from .krylov import top_k_svd
from .masked import MaskedDirections, mask_energy_fraction, masked_directions
from .memory import (CPU_BUDGET_FRACTION, CUDA_BUDGET_FRACTION, GIB, MEMORY_COEFFICIENTS, MemoryPlan, default_budget,
                     memory_plan, per_direction_bytes, solver_workspace_bytes)
from .operator import (CENTRAL_STEP, JVP_EVALUATIONS, JVP_MODES, JacobianOperator, PassCounter, apply, as_operator,
                       flat, unflat)
from .plan import (DEFAULT_JVP_MODE, DEFAULT_MAX_PASSES, DEFAULT_TOL, EXACT_MAX_N, MAX_K, NULL_RANK, SOLVERS,
                   SearchPlan, krylov_block, min_passes, plan_for_model, plan_search)
from .result import JacobianSVD
from .solve import jacobian_svd, run_plan

__all__ = [
    "JacobianOperator", "PassCounter", "JacobianSVD", "MaskedDirections", "MemoryPlan", "SearchPlan",
    "top_k_svd", "subspace_iteration", "arpack_svd", "exact_jacobian", "exact_svd", "jacobian_svd", "run_plan",
    "masked_directions", "mask_energy_fraction", "x0_hat_fn", "x0_hat_operator", "jacobian_of_x0_hat",
    "top_singular", "masked_directions_of_x0_hat", "plan_search", "plan_for_model", "min_passes", "krylov_block",
    "memory_plan", "default_budget", "per_direction_bytes", "solver_workspace_bytes", "linear_operator",
    "apply", "as_operator", "flat", "unflat", "principal_cosines", "subspace_cosine", "numerical_rank",
    "JVP_MODES", "JVP_EVALUATIONS", "DEFAULT_JVP_MODE", "CENTRAL_STEP", "EXACT_MAX_N", "MAX_K", "NULL_RANK",
    "SOLVERS", "DEFAULT_TOL", "DEFAULT_MAX_PASSES", "GIB", "MEMORY_COEFFICIENTS", "CPU_BUDGET_FRACTION",
    "CUDA_BUDGET_FRACTION",
]
