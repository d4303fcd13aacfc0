"""Solver choice for the top-k Jacobian subspace and the equal-accuracy counting of bench/jacobian.py.

Every check runs on a linear operator ``A = U diag(s) V^T`` with a known spectrum, so the true top-k
right singular subspace is known exactly (Wang et al. 2024, §4.2: the subspace the edit directions
come from; Chen et al. 2024, LOCO Edit: the power-iteration baseline).
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from lowdim_app.errors import UserError
from lowdim_app.methods import jacobian as jac
from lowdim_app.metrics import subspace_cosine

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location("bench_jacobian", ROOT / "bench" / "jacobian.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _known(n: int = 160, seed: int = 0):
    """Spectrum 10, 9, ..., then a geometric tail: s_k / s_{k+1} >= 1.1 for the k tested; ``A`` not symmetric."""
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    s = torch.cat([torch.linspace(10, 5.5, 10, dtype=torch.float64),
                   5.0 * 0.9 ** torch.arange(n - 10, dtype=torch.float64)])
    A = (U * s) @ V.T
    op = jac.JacobianOperator(lambda X: X.reshape(X.shape[0], -1) @ A.T.to(X.dtype),
                              torch.zeros(n, dtype=torch.float64))
    return A, s, V.T, op      # rows of V.T: the right singular vectors, in order


def _sin(res_V, Vt, k):
    c = subspace_cosine(res_V.reshape(k, -1).double(), Vt[:k])
    return math.sqrt(max(0.0, 1 - c * c)), c


# ----------------------------------------------------------------------------- choice rule
def test_choice_rule_exact_krylov_and_blocks():
    # small n: the exact path's 8 batched calls of 32 VJPs are no more than Krylov's predicted calls
    c = jac.choose_solver(256, 5)
    assert c.method == "exact" and c.block is None
    # k = 1: exact while its calls are no more than Krylov's predicted ones (block 1)
    kc = jac.predicted_krylov_calls(1)
    assert jac.choose_solver(32 * kc, 1).method == "exact"
    c = jac.choose_solver(32 * kc + 1, 1)
    assert c.method == "krylov" and c.block == 1
    # n too large for the rule's call count, or above EXACT_MAX_N, or n VJPs over the budget: Krylov
    for n, budget in ((1024, None), (4096, None), (256, 200)):
        c = jac.choose_solver(n, 5, budget)
        assert c.method == "krylov" and c.block == jac.krylov_block(5, "auto") == 4, (n, budget, c)
    assert [jac.krylov_block(k, "auto") for k in (1, 2, 3, 5, 10)] == [1, 1, 1, 4, 6]
    assert [jac.krylov_block(k) for k in (1, 3, 5, 10)] == [1, 4, 6, 11]
    # a budget that fits one iteration of block k + 1 but not the auto block's first k vectors: block k + 1
    c = jac.choose_solver(4096, 5, max_passes=12)
    assert c.method == "krylov" and c.block == 6
    # more directions per call make the exact path cheaper in calls
    assert jac.choose_solver(1024, 5, directions_per_call=1024).method == "exact"


def test_choice_rule_on_a_cpu_weighs_passes():
    """On a CPU every direction costs time (cost = passes + CPU_PASSES_PER_CALL x calls): the exact path's
    n VJPs lose to Krylov where the call-count rule keeps them, and win only for small n."""
    L = jac.CPU_PASSES_PER_CALL
    n = 32 * jac.predicted_krylov_calls(3)                    # calls: n / 32 <= Krylov's -> exact on an accelerator
    assert jac.choose_solver(n, 3).method == "exact"
    c = jac.choose_solver(n, 3, device_type="cpu")
    assert c.method == "krylov" and c.block == 1 and "CPU" in c.reason
    assert c.reason.startswith(f"krylov block 1: exact would take {n + n // 32 * L:g}")
    assert jac.choose_solver(64, 5, device_type="cpu").method == "exact"          # 64 + 2 L passes
    for k in (1, 3, 5, 10):
        exact = 64 + 2 * L
        kry = jac.predicted_krylov_passes(k) + L * jac.predicted_krylov_calls(k)
        assert (jac.choose_solver(64, k, device_type="cpu").method == "exact") == (exact <= kry)
    # the operator's device decides: a CPU operator with n = 1024 runs Krylov under auto
    A, s, Vt, op = _known(n=160)
    kry = jac.predicted_krylov_passes(1) + L * jac.predicted_krylov_calls(1)
    assert jac.jacobian_svd(op, k=1, method="auto").method == ("exact" if 160 + 5 * L <= kry else "krylov") == "krylov"


def test_auto_runs_the_chosen_solver_and_says_so():
    A, s, Vt, op = _known(n=160)
    res = jac.jacobian_svd(op, k=5, method="auto", max_passes=100)       # n = 160 VJPs over the budget
    assert res.method == "krylov" and "krylov block 4" in res.choice
    assert res.history[0]["block"] == 4
    summ = res.summary()
    assert summ["solver"] == "krylov" and summ["batched_calls"] == res.batched_calls > 0
    assert summ["error_estimate"] is not None and summ["passes"] <= 100
    ex = jac.jacobian_svd(op, k=5, method="auto")                  # a CPU operator: 160 VJPs cost more
    assert ex.method == "krylov" and "CPU" in ex.choice
    op64 = _known(n=64)[3]
    ex = jac.jacobian_svd(op64, k=5, method="auto")
    assert ex.method == "exact" and ex.passes == 64 and "exact" in ex.choice
    # override
    for method, name in (("exact", "exact"), ("krylov", "krylov"), ("power", "subspace_iteration")):
        r = jac.jacobian_svd(op, k=3, method=method, max_passes=300)
        assert r.method == name and r.choice == f"{method} (given)"
    # power honours the pass budget (k JVPs + k VJPs per iteration)
    assert jac.jacobian_svd(op, k=3, method="power", max_passes=60).passes <= 60
    with pytest.raises(UserError, match="unknown method"):
        jac.jacobian_svd(op, k=3, method="arnoldi")


def test_edit_solver_setting():
    from lowdim_app.features.edit import EditSettings, search_cost, search_method

    assert EditSettings(image="x.png").solver == "auto"
    assert EditSettings(image="x.png", solver="krylov").solver == "krylov"
    with pytest.raises(UserError):
        EditSettings(image="x.png", solver="arpack")
    assert search_cost(256, 5, 400, False) == (0, 256, "exact Jacobian (n = 256 VJPs)")
    assert search_cost(256, 5, 400, False, "krylov")[:2] == (200, 200)
    assert search_cost(256, 5, 400, False, "exact")[1] == 256
    assert search_cost(1024, 5, 400, False)[:2] == (200, 200)          # auto: Krylov at n = 1024
    # the edit's auto: the exact path (full spectrum, numerical rank) whenever it fits, else the library's choice
    assert search_method(256, EditSettings(image="x.png")) == "exact"
    assert search_method(256, EditSettings(image="x.png", max_passes=200)) == "auto"
    assert search_method(3072, EditSettings(image="x.png")) == "auto"
    assert search_method(256, EditSettings(image="x.png", solver="krylov")) == "krylov"


# ----------------------------------------------------------------------------- accuracy
@pytest.mark.parametrize("k", [1, 3, 5, 10])
@pytest.mark.parametrize("block", [None, "auto", 1, 2])
def test_krylov_any_block_converges_and_wedin_does_not_underestimate(k, block):
    A, s, Vt, op = _known()
    b = jac.krylov_block(k, "auto") if block == "auto" else block
    res = jac.top_k_svd(op, k=k, block=b, tol=0.01, max_passes=4000, seed=3)
    sin, cos = _sin(res.V, Vt, k)
    assert res.converged and res.error_estimate <= 0.01
    assert cos >= 0.99995 - 1e-12
    assert sin <= res.error_estimate + 1e-9, (sin, res.error_estimate)
    rel = ((res.singular_values.double() - s[:k]).abs() / s[:k]).max()
    assert rel <= 1e-3
    # every iterate's estimate in the stopping range (<= 0.15, i.e. cosine >= 0.989) bounds its true error
    # (early, the Ritz value s_{k+1} is below sigma_{k+1} and the estimated gap too wide)
    sins = []
    jac.top_k_svd(op, k=k, block=b, tol=0.01, max_passes=4000, seed=3,
                  callback=lambda d: sins.append((_sin(d["V"].T, Vt, k)[0], d["error_estimate"]))
                  if d["V"].shape[1] == k else None)
    assert sins and all(t <= e + 1e-9 for t, e in sins if e <= 0.15), sins


@pytest.mark.parametrize("k,block", [(3, 1), (5, 4), (10, 6)])
def test_one_sided_certificate_is_truthful_and_stops_before_the_ritz_test(k, block):
    """The one-sided pairs (right vectors of U^T J = Z^T) are certified by the residual the next JVP
    measures: the search stops there, half an iteration before the Ritz pairs of span(V) pass the same
    test, and the certified estimate still bounds the true error."""
    A, s, Vt, op = _known()
    res = jac.top_k_svd(op, k=k, block=block, tol=0.01, max_passes=4000, seed=3)
    sin, _ = _sin(res.V, Vt, k)
    assert res.converged and res.pairs == "one-sided"
    assert all(h["error_estimate"] > 0.01 for h in res.history)       # the Ritz test had not passed yet
    assert res.history[-1]["one_sided_error_estimate"] == res.error_estimate <= 0.01
    assert sin <= res.error_estimate
    assert res.passes == res.history[-1]["passes"] + block                # stopped after the JVP
    Jv = A @ res.V.reshape(k, -1).double().T
    assert torch.allclose((Jv - res.U.reshape(k, -1).double().T * res.singular_values.double()).norm(dim=0),
                          res.residuals.double(), atol=1e-5)
    assert torch.allclose(A.T @ res.U.reshape(k, -1).double().T,
                          res.V.reshape(k, -1).double().T * res.singular_values.double(), atol=1e-5)


def test_every_solver_reaches_cosine_099():
    A, s, Vt, op = _known()
    bench = _bench()
    for k in (1, 5):
        ref = Vt[:k]
        hits = {}
        for name, tr in (("krylov", bench.run_krylov(op, ref, k, 2000, 0)[0]),
                         ("krylov-s", bench.run_krylov(op, ref, k, 2000, 0, block=jac.krylov_block(k, "auto"))[0]),
                         ("power", bench.run_power(op, ref, k, 4000, 0)[0]),
                         ("halko", bench.run_halko(op, ref, k, 4000, 0)[0]),
                         ("arpack", bench.run_arpack(op, ref, k, 4000, 0)[0]),
                         ("lobpcg", bench.run_lobpcg(op, ref, k, 4000, 0)[0])):
            hits[name] = tr.first(0.99)
            assert hits[name] is not None, (name, k, tr.points[-3:])
        ex = jac.exact_svd(op, k=k)
        assert subspace_cosine(ex.V.reshape(k, -1).double(), ref) >= 0.99999
        r = jac.jacobian_svd(op, k=k, method="auto", tol=math.sqrt(1 - 0.99 ** 2), max_passes=100)
        assert _sin(r.V, Vt, k)[1] >= 0.99
        # the Krylov solvers beat the power baseline at equal accuracy on this spectrum
        assert hits["krylov-s"][0] < hits["power"][0]


# ----------------------------------------------------------------------------- equal-accuracy counting
def test_equal_accuracy_count_is_the_least_budget_that_reaches_the_level():
    """The count the benchmark reports (the first instrumented iterate with cosine >= level) is exactly
    the budget at which the solver, run afresh, returns a subspace at that level -- and one iteration
    less does not reach it. Passes and calls follow the block arithmetic."""
    A, s, Vt, op = _known()
    bench = _bench()
    k, b = 5, 4
    tr, _ = bench.run_krylov(op, Vt[:k], k, 2000, 7, block=b)
    for level in (0.99, 0.999):
        passes, calls, _secs = tr.first(level)
        assert passes % (2 * b) == 0 and calls == passes // b          # b JVPs + b VJPs in 2 calls per iteration
        again = jac.top_k_svd(op, k=k, block=b, tol=1e-12, max_passes=passes, seed=7)
        assert again.passes == passes and again.batched_calls == calls
        assert _sin(again.V, Vt, k)[1] >= level
        less = jac.top_k_svd(op, k=k, block=b, tol=1e-12, max_passes=passes - 1, seed=7)
        # one iteration less: the previous iterate, with the JVP that measures its residual spent
        assert less.passes == passes - b and less.pairs == "one-sided" and _sin(less.V, Vt, k)[1] < level
        assert math.isfinite(less.error_estimate) and torch.isfinite(less.residuals).all()
    # power: the same on its own iterates
    tp, _ = bench.run_power(op, Vt[:k], k, 3000, 7)
    passes, calls, _ = tp.first(0.99)
    assert calls == passes // k and passes % (2 * k) == 0
    r = jac.subspace_iteration(op, k=k, seed=7, tol=0.0, max_iters=passes // (2 * k))
    assert _sin(r.V, Vt, k)[1] >= 0.99
    r = jac.subspace_iteration(op, k=k, seed=7, tol=0.0, max_iters=passes // (2 * k) - 1)
    assert _sin(r.V, Vt, k)[1] < 0.99


def test_a_cap_is_never_reported_as_a_count():
    A, s, Vt, op = _known()
    bench = _bench()
    k = 5
    for tr in (bench.run_krylov(op, Vt[:k], k, 16, 0, block=4)[0], bench.run_power(op, Vt[:k], k, 20, 0)[0],
               bench.run_halko(op, Vt[:k], k, 20, 0)[0]):
        assert tr.first(0.999) is None          # reported as "not reached (cap N)"
    assert bench.fmt(None, "cap 16") == "not reached (cap 16)"
    # LOBPCG / ARPACK: counted as the cheapest run reaching the level, never more than the cap's runs
    for run in (bench.run_lobpcg, bench.run_arpack):
        tl, note = run(op, Vt[:k], k, 24, 0)
        assert note.startswith("cap 24") and tl.first(0.99) is None
        tl, note = run(op, Vt[:k], k, 4000, 0)
        assert tl.first(0.99)[0] <= 4000
