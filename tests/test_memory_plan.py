"""The memory plan of batched JVP/VJP calls: a request that would exceed the memory budget is split into
calls of at most floor((budget - fixed) / per-direction) directions with the same result; a budget that
cannot hold one direction is refused before any work; the central-difference JVP matches forward-mode AD."""
from __future__ import annotations

import pytest
import torch

from lowdim_app.errors import UserError
from lowdim_app.methods import jacobian as jac

GIB = jac.GIB


def _map(n: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=g, dtype=torch.float64)
    return (lambda x: torch.tanh(x @ A.T)), torch.randn(n, generator=g, dtype=torch.float64) * 0.3


@pytest.mark.parametrize("kind", ["jvp", "vjp"])
def test_a_batch_over_the_budget_is_split_into_calls_that_fit(kind):
    f, x = _map()
    V = torch.randn(7, 12, dtype=torch.float64)
    plan = jac.MemoryPlan(budget_bytes=2.5 * GIB, per_direction={"jvp": 1.0 * GIB, "vjp": 1.0 * GIB},
                          fixed_bytes=0.2 * GIB)
    assert plan.directions(kind) == 2                     # floor((2.5 - 0.2) / 1.0)
    free = jac.JacobianOperator(f, x, chunk_size=None, jvp_mode="forward")
    split = jac.JacobianOperator(f, x, chunk_size=None, memory=plan, jvp_mode="forward")
    out_free, out_split = getattr(free, kind)(V), getattr(split, kind)(V)
    assert getattr(free.counter, f"{kind}_calls") == 1
    assert getattr(split.counter, f"{kind}_calls") == 4   # 2 + 2 + 2 + 1 directions
    assert getattr(split.counter, f"{kind}_directions") == 7
    assert torch.allclose(out_free, out_split, rtol=0, atol=1e-12)


def test_a_budget_below_one_direction_is_refused_before_any_work():
    f, x = _map()
    plan = jac.MemoryPlan(budget_bytes=1.0 * GIB, per_direction={"jvp": 2.0 * GIB, "vjp": 0.5 * GIB})
    op = jac.JacobianOperator(f, x, memory=plan, jvp_mode="forward")
    with pytest.raises(UserError, match="raise the memory budget"):
        op.jvp(torch.randn(3, 12, dtype=torch.float64))
    assert op.counter.jvp_calls == 0
    assert op.vjp(torch.randn(3, 12, dtype=torch.float64)).shape == (3, 12)   # the other kind fits


def test_memory_plan_of_a_model_sizes_calls_from_its_activation_profile(digits_gen):
    prof = digits_gen.activation_profile()
    assert prof["activations"] > 0 and prof["largest"] <= prof["activations"]
    plan = jac.plan_for_model(digits_gen, 5, jvp_mode="central", memory_gb=1.0).memory
    per = jac.per_direction_bytes(prof, "jvp_central")
    assert plan.per_direction["jvp"] == pytest.approx(per)
    assert plan.directions("jvp") == int((plan.budget_bytes - plan.fixed_bytes) // per)
    with pytest.raises(UserError, match="memory budget"):
        jac.plan_for_model(digits_gen, 5, memory_gb=float("nan"))
    # a budget too small for one VJP direction is refused by the plan, before any work
    with pytest.raises(UserError, match="raise the memory budget"):
        jac.plan_for_model(digits_gen, 5, memory_gb=0.2501)


def test_the_workspace_the_memory_plan_reserves_is_the_basis_the_search_keeps():
    """The Krylov bases never outgrow ``max_basis`` (thick restart), the size the memory plan reserves for."""
    from lowdim_app.methods.jacobian.memory import WORKSPACE_BYTES, max_basis

    g = torch.Generator().manual_seed(0)
    n, k, b = 200, 3, 2
    A = torch.randn(n, n, generator=g, dtype=torch.float64) / n ** 0.5
    op = jac.JacobianOperator(lambda X: X.reshape(X.shape[0], -1) @ A.T, torch.zeros(n, dtype=torch.float64))
    room = max_basis(n, k, b)
    assert room == min(max(4 * b, 2 * k + 2 * b, min(300, int(WORKSPACE_BYTES / (32 * n)))), n)
    seen = []
    jac.top_k_svd(op, k=k, block=b, tol=0.0, max_passes=3 * room, max_basis=12,
                  callback=lambda d: seen.append(d["basis"]))
    assert max(seen) <= 12 and len(seen) > 12 // b           # restarted, never above the cap
    assert jac.solver_workspace_bytes(n, k, b) == 8.0 * n * (4 * room + 2 * b)


def test_central_difference_matches_forward_mode_ad_with_second_order_error():
    """(f(x + hv) - f(x - hv)) / 2h: small error at the default step, shrinking 4x when h halves."""
    f, x = _map(seed=3)
    # seeded: over random V the error at the default step exceeds 5e-4 for 1 % of draws
    V = torch.randn(5, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    exact = jac.JacobianOperator(f, x, jvp_mode="forward").jvp(V)

    def err(step):
        approx = jac.JacobianOperator(f, x, jvp_mode="central", fd_step=step).jvp(V)
        return float((approx - exact).norm() / exact.norm())

    assert err(jac.CENTRAL_STEP) < 5e-4
    assert 3.5 < err(4e-2) / err(2e-2) < 4.5
