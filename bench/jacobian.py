"""Benchmark at EQUAL ACCURACY: top-k right singular subspace of J_t = d x0_hat / d x_t
(Wang et al. 2024, §4.2; Chen et al. 2024, LOCO Edit).

For each (model, image, t) point and each k, every method is measured at the moment it first
reaches a smallest principal cosine >= 0.99 and >= 0.999 between its top-k right singular subspace
and the reference (exact Jacobian from n VJPs, jacrev semantics, + float64 SVD where
n <= --exact-max-n; else a long Krylov run, stated in the CSV). Reported per threshold: passes (JVP +
VJP directions), batched calls (sequential operator calls; a block of b directions in one call counts
1) and wall time. A method that does not reach a threshold within its cap is reported as
"not reached (cap N)" -- a cap is never reported as a count.

Methods (one shared operator, forward-mode JVPs, float32 network, float64 linear algebra):
  * auto     -- ``jacobian_svd(method="auto")`` as the library runs it (its own stop rule at the tol
                that guarantees the threshold: Wedin sin <= sqrt(1 - c^2)); the exact path counts n VJPs.
  * krylov   -- ``top_k_svd`` (block Krylov, block k + 1), iterates instrumented by its callback.
  * krylov-s -- ``top_k_svd`` with the small-block rule of ``method="auto"`` (``krylov_block``).
  * krylov-1 -- ``top_k_svd`` with block 1 (plain Golub-Kahan-Lanczos: fewest passes, most calls).
  * power    -- LOCO-Edit-style power / subspace iteration (k JVPs + k VJPs per iteration, the
                generalised power method of Chen et al. 2024), iterates instrumented.
  * halko    -- randomized SVD (Halko, Martinsson & Tropp 2011, Alg. 4.4 with q power steps, block
                k + 5); the estimate after q steps costs (2q + 2)(k + 5) passes, q = 0, 1, 2, ...
  * arpack   -- ``scipy.sparse.linalg.svds`` (ARPACK, default ncv) on a LinearOperator, one vector per
                call; counted as the cheapest run reaching the threshold over a sweep of its ``tol``.
  * lobpcg   -- ``scipy.sparse.linalg.lobpcg`` on J^T J (block k + 1); the smallest ``maxiter``
                reaching the threshold, found by doubling then bisection.
  * exact    -- n VJPs + SVD (the reference's own cost; n passes, ceil(n / chunk) calls).

Models: ``digits-gen`` (trained, 1x16x16, n = 256; test images noised to t), ``tiny-sd`` (the tiny
text-conditioned latent U-Net 4x16x16, n = 1024, RANDOM WEIGHTS, prompt "a cat"), ``cifar-real``
(the exact google/ddpm-cifar10-32 architecture from its config, RANDOM WEIGHTS, n = 3072;
1 point, reference: Krylov to tol 1e-3).

Usage: python bench/jacobian.py [--models digits-gen,tiny-sd] [--ks 1,3,5,10] [--points 3]
Writes bench/results/jacobian.csv and bench/results/jacobian.png (passes vs k per method).
The committed results came from one run per model, then ``--merge``:
  python bench/jacobian.py --models digits-gen --points 3 --out bench/results/jacobian_digits.csv   (~6 min)
  python bench/jacobian.py --models tiny-sd --points 1 --cap 400 --out bench/results/jacobian_tiny_sd.csv  (~24 min)
  python bench/jacobian.py --models cifar-real --points 1 --cap 300 --ks 1,3,5 \
      --out bench/results/jacobian_cifar_real.csv   (~50 min on 2 cores)
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lowdim_app.methods import jacobian as jac  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
LEVELS = (0.99, 0.999)
METHODS = ("auto", "krylov", "krylov-s", "krylov-1", "power", "halko", "arpack", "lobpcg", "exact")


# ----------------------------------------------------------------------------- models and points
def load(name: str, seed: int):
    from lowdim_app.diffusion import load_model

    if name == "digits-gen":
        return load_model("digits-gen", "cpu"), None
    if name == "tiny-sd":
        from lowdim_app.diffusion.tiny import build_tiny_sd_pipeline

        d = build_tiny_sd_pipeline(Path(tempfile.mkdtemp()) / "pipe", seed=seed)
        m = load_model(str(d), "cpu")
        return m, m.encode_prompt("a cat")
    if name == "cifar-real":
        from lowdim_app.diffusion import architectures

        folder = Path(tempfile.mkdtemp()) / "cifar10"
        architectures.build("cifar10", folder, layout="subfolder", seed=seed)
        return load_model(str(folder), "cpu"), None
    raise SystemExit(f"unknown model {name}")


def points_of(m, name: str, count: int, seed: int):
    """(label, x_t, t): digits test images noised to t in {0.3, 0.5, 0.7}T; random-weight models: a
    Gaussian sample noised the same way."""
    fracs = [0.7, 0.5, 0.3, 0.9][:count]
    out = []
    for i, fr in enumerate(fracs):
        t = m.timestep_from_fraction(fr)
        if name.startswith("digits"):
            from lowdim_app.data.digits import load_digits_split

            x0 = load_digits_split().test_images[i * 37]
        else:
            x0 = m.randn(1, seed=seed + 100 + i)[0]
        x_t = m.add_noise(x0[None], t, m.randn(1, seed=seed + i))[0]
        out.append((f"img{i}", x_t, t))
    return out


# ----------------------------------------------------------------------------- recording
class Trace:
    """Iterates of one method: (passes, calls, seconds, cosine) in the order they were produced."""

    def __init__(self, op, ref, k):
        self.op, self.ref, self.k = op, ref, k
        self.start = op.counter.snapshot()
        self.t0 = time.perf_counter()
        self.excluded = 0.0        # time spent on measuring (cosines), not charged to the method
        self.points = []

    def record(self, Vk):
        t1 = time.perf_counter()
        used = self.op.counter.since(self.start)
        V = torch.as_tensor(Vk).double()          # n x c
        if V.shape[1] < self.k:                   # a basis still smaller than k: no estimate yet
            self.excluded += time.perf_counter() - t1
            return
        c = jac.subspace_cosine(V.T[:self.k], self.ref)
        self.points.append((used.passes, used.calls, t1 - self.t0 - self.excluded, c))
        self.excluded += time.perf_counter() - t1

    def done(self) -> bool:
        return bool(self.points) and self.points[-1][3] >= LEVELS[-1]

    def first(self, level):
        return next(((p, c, s) for p, c, s, cos in self.points if cos >= level), None)


class _Reached(Exception):
    """Raised from a callback once the highest level is reached (no need to run to the cap)."""


def _recorder(tr):
    def cb(d):
        tr.record(d["V"])
        if tr.done():
            raise _Reached

    return cb


def run_krylov(op, ref, k, cap, seed, block=None):
    tr = Trace(op, ref, k)
    try:
        jac.top_k_svd(op, k=k, seed=seed, tol=1e-12, max_passes=cap, block=block, callback=_recorder(tr))
    except _Reached:
        pass
    return tr, f"cap {cap}"


def run_power(op, ref, k, cap, seed):
    tr = Trace(op, ref, k)
    try:
        jac.subspace_iteration(op, k=k, seed=seed, tol=0.0, max_iters=max(1, cap // (2 * k)), callback=_recorder(tr))
    except _Reached:
        pass
    return tr, f"cap {2 * k * max(1, cap // (2 * k))}"


def run_halko(op, ref, k, cap, seed, p=5):
    """Halko et al. 2011: Y = J Omega, then per power step Q = orth(Y), Z = J^T Q (its left singular
    vectors are the estimate), Y = J orth(Z). The q-th estimate costs (2q + 2) b passes."""
    tr = Trace(op, ref, k)
    n = op.n
    b = min(k + p, n)
    g = torch.Generator().manual_seed(seed)
    Y = jac._flat(op.jvp(torch.randn(b, n, generator=g).reshape(b, *op.shape)), n).double()
    while True:
        Q, _ = torch.linalg.qr(Y)
        Z = jac._flat(op.vjp(jac._unflat(Q, op.shape, op.dtype)), n).double()   # (Q^T J)^T
        P, _s, _ = torch.linalg.svd(Z, full_matrices=False)
        tr.record(P[:, :k])
        if op.counter.since(tr.start).passes + 2 * b > cap or tr.points[-1][3] >= LEVELS[-1]:
            break
        Zq, _ = torch.linalg.qr(Z)
        Y = jac._flat(op.jvp(jac._unflat(Zq, op.shape, op.dtype)), n).double()
    return tr, f"cap {cap}"


class _CapReached(Exception):
    """Raised from an operator call once a run has spent its pass cap (the run is then not counted)."""


def _guard(op, cap):
    start = op.counter.snapshot()

    def check():
        if op.counter.since(start).passes >= cap:
            raise _CapReached
    return check


def _linear_operator(op, check=lambda: None):
    from scipy.sparse.linalg import LinearOperator

    n = op.n

    def mv(v):
        check()
        return jac._flat(op.jvp(torch.as_tensor(np.asarray(v).reshape(-1), dtype=torch.float64).reshape(1, *op.shape)),
                         n).double().numpy().reshape(-1)

    def rmv(u):
        check()
        return jac._flat(op.vjp(torch.as_tensor(np.asarray(u).reshape(-1), dtype=torch.float64).reshape(1, *op.shape)),
                         n).double().numpy().reshape(-1)

    return LinearOperator((n, n), matvec=mv, rmatvec=rmv, dtype=np.float64)


ARPACK_TOLS = (3e-1, 1e-1, 1e-2, 1e-3, 1e-5, 0.0)


def run_arpack(op, ref, k, cap, seed):
    """One svds run per tol (default ncv), cheapest first; each run is one point of the trace."""
    from scipy.sparse.linalg import svds

    tr = Trace(op, ref, k)
    v0 = np.random.default_rng(seed).standard_normal(op.n)
    runs = []
    for tol in ARPACK_TOLS:
        s0, t0 = op.counter.snapshot(), time.perf_counter()
        A = _linear_operator(op, _guard(op, cap))
        try:
            _, _, vh = svds(A, k=k, tol=tol, v0=v0, return_singular_vectors="vh", maxiter=max(1, cap // 2),
                            solver="arpack")
        except _CapReached:
            print(f"    arpack tol {tol}: not reached (cap {cap})")
            continue
        except Exception as e:   # ArpackNoConvergence
            print(f"    arpack tol {tol}: {type(e).__name__}")
            continue
        used = op.counter.since(s0)
        c = jac.subspace_cosine(torch.as_tensor(vh.copy()), tr.ref)
        if used.passes > cap:         # over the cap: not counted
            c = -1.0
        runs.append((used.passes, used.calls, time.perf_counter() - t0, c, tol))
    runs.sort()
    tr.points = [r[:4] for r in runs]
    tr.tols = {r[:4]: r[4] for r in runs}
    return tr, f"cap {cap}, tol sweep {ARPACK_TOLS[0]}..{ARPACK_TOLS[-1]}"


def run_lobpcg(op, ref, k, cap, seed):
    """scipy LOBPCG on J^T J (block k + 1): runs with maxiter m; the smallest m reaching each level
    (doubling, then bisection), each run one point of the trace."""
    from scipy.sparse.linalg import LinearOperator, lobpcg

    n = op.n
    b = min(k + 1, n)

    guard = [lambda: None]

    def mm(X):
        guard[0]()
        X = torch.as_tensor(np.asarray(X), dtype=torch.float64).reshape(n, -1)
        W = op.jvp(jac._unflat(X, op.shape, op.dtype))
        return jac._flat(op.vjp(W), n).double().numpy()

    A = LinearOperator((n, n), matvec=lambda v: mm(v.reshape(n, 1)).reshape(-1), matmat=mm, dtype=np.float64)
    X0 = np.random.default_rng(seed).standard_normal((n, b))
    tr = Trace(op, ref, k)
    cache = {}

    def run(m):
        if m not in cache:
            s0, t0 = op.counter.snapshot(), time.perf_counter()
            import warnings

            guard[0] = _guard(op, cap + 1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    lam, X = lobpcg(A, X0.copy(), largest=True, tol=1e-14, maxiter=m)
                except _CapReached:
                    lam = None
            used = op.counter.since(s0)
            if lam is None:
                c = -1.0
            else:
                order = np.argsort(-lam)[:k]
                c = jac.subspace_cosine(torch.as_tensor(X[:, order].T.copy()), tr.ref)
            if used.passes > cap:     # over the cap: not counted (a run within the cap must reach the level)
                c = -1.0
            cache[m] = (used.passes, used.calls, time.perf_counter() - t0, c)
        return cache[m]

    max_m = max(1, cap // (2 * b))
    for level in LEVELS:
        m = 1
        while m < max_m and run(m)[3] < level:
            m = min(2 * m, max_m)
        if run(m)[3] < level:
            continue
        lo, hi = m // 2, m     # run(lo) below level (or lo = 0)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if run(mid)[3] >= level:
                hi = mid
            else:
                lo = mid
    tr.points = sorted(cache.values())
    return tr, f"cap {2 * b * max_m}"


def run_auto(op, ref, k, level, seed):
    """The library's automatic choice at the tol that guarantees ``level`` (Wedin: sin <= tol)."""
    tol = math.sqrt(1 - level ** 2)
    s0, t0 = op.counter.snapshot(), time.perf_counter()
    r = jac.jacobian_svd(op, k=k, method="auto", tol=tol, seed=seed, max_passes=100_000)
    used = op.counter.since(s0)
    c = jac.subspace_cosine(r.V, ref)
    return r, used, time.perf_counter() - t0, c


# ----------------------------------------------------------------------------- main
def fmt(hit, note):
    return f"{hit[0]:5d}p {hit[1]:4d}c {hit[2]:6.2f}s" if hit else f"not reached ({note})"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="digits-gen,tiny-sd")
    ap.add_argument("--ks", default="1,3,5,10")
    ap.add_argument("--points", default="3,2", help="points per model (comma list aligned with --models)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--exact-max-n", type=int, default=1024)
    ap.add_argument("--cap", type=int, default=0, help="pass cap per method run (0: 60 k + 60, at least 400)")
    ap.add_argument("--out", default=str(RESULTS / "jacobian.csv"))
    ap.add_argument("--append", action="store_true", help="append to --out instead of replacing it")
    ap.add_argument("--merge", default="", help="comma list of CSVs from earlier runs: write them to --out, "
                                                 "print the table and plot; no measuring")
    args = ap.parse_args()
    if args.merge:
        rows = []
        for path in args.merge.split(","):
            with open(path) as fh:
                rows += list(csv.DictReader(fh))
        _write(args.out, rows)
        summary(rows)
        plot(rows, Path(args.out).with_suffix(".png"))
        print(f"wrote {args.out} and {Path(args.out).with_suffix('.png')}")
        return 0
    ks = [int(k) for k in args.ks.split(",")]
    methods = args.methods.split(",")
    npts = [int(p) for p in args.points.split(",")]
    rows = []
    if args.append and Path(args.out).exists():
        with open(args.out) as fh:
            rows = list(csv.DictReader(fh))
    for mi, name in enumerate(args.models.split(",")):
        m, cond = load(name, args.seed)
        for label, x_t, t in points_of(m, name, npts[min(mi, len(npts) - 1)], args.seed):
            op = jac.x0_hat_operator(m, x_t, t, cond, jvp_mode="forward")
            with m.float32_unet():
                op.jvp(torch.randn(1, *m.sample_shape))    # warm-up (one-off initialisation)
                op.vjp(torch.randn(1, *m.sample_shape))
                t0 = time.perf_counter()
                if m.n <= args.exact_max_n:
                    ex = jac.exact_svd(op, k=max(ks))
                    ref_V, ref_kind = ex.V.reshape(max(ks), -1).double(), "exact (jacrev + float64 SVD)"
                    exact_cost = (ex.passes, ex.batched_calls, time.perf_counter() - t0)
                    sv = ex.spectrum
                else:
                    # one more than the largest k: s_{k+1} (the gap column) comes from the same run
                    ref = jac.top_k_svd(op, k=max(ks) + 1, tol=1e-3, max_passes=20000, seed=args.seed + 99)
                    ref_V = ref.V.reshape(max(ks) + 1, -1)[:max(ks)].double()
                    ref_kind = f"krylov tol 1e-3 ({ref.stop_reason})"
                    exact_cost, sv = None, ref.singular_values
                print(f"{name} {label} t={t}: reference {ref_kind}; s_1..11 = "
                      f"{[round(float(s), 3) for s in sv[:11]]}", flush=True)
                for k in ks:
                    refk = ref_V[:k]
                    cap = args.cap or max(400, 60 * k + 60)
                    gap = float(sv[k - 1] / sv[k])
                    res = {}
                    for meth in methods:
                        if meth == "exact":
                            continue
                        if meth == "auto":
                            for level in LEVELS:
                                r, used, secs, c = run_auto(op, refk, k, level, args.seed)
                                res[("auto", level)] = ((used.passes, used.calls, secs) if c >= level else None,
                                                        f"stopped at cos {c:.4f}", r.method)
                            continue
                        tr, note = {"krylov": lambda: run_krylov(op, refk, k, cap, args.seed),
                                    "krylov-s": lambda: run_krylov(op, refk, k, cap, args.seed,
                                                                   block=jac.krylov_block(k, "auto")),
                                    "krylov-1": lambda: run_krylov(op, refk, k, cap, args.seed, block=1),
                                    "power": lambda: run_power(op, refk, k, cap, args.seed),
                                    "halko": lambda: run_halko(op, refk, k, cap, args.seed),
                                    "arpack": lambda: run_arpack(op, refk, k, cap, args.seed),
                                    "lobpcg": lambda: run_lobpcg(op, refk, k, cap, args.seed)}[meth]()
                        for level in LEVELS:
                            res[(meth, level)] = (tr.first(level), note, "")
                    if exact_cost and "exact" in methods:
                        for level in LEVELS:
                            res[("exact", level)] = (exact_cost, "", "")
                    for level in LEVELS:
                        best_arp = res.get(("arpack", level), (None,))[0]
                        best_pow = res.get(("power", level), (None,))[0]
                        line = []
                        for meth in methods:
                            if (meth, level) not in res:
                                continue
                            hit, note, chosen = res[(meth, level)]
                            row = {"model": name, "n": m.n, "point": label, "t": t, "k": k, "level": level,
                                   "s_k_over_s_k+1": round(gap, 4), "method": meth, "chosen": chosen,
                                   "reached": hit is not None, "passes": hit[0] if hit else "",
                                   "calls": hit[1] if hit else "", "time_s": round(hit[2], 3) if hit else "",
                                   "note": "" if hit else f"not reached ({note})",
                                   "passes_over_arpack": round(hit[0] / best_arp[0], 3) if hit and best_arp else "",
                                   "calls_over_arpack": round(hit[1] / best_arp[1], 3) if hit and best_arp else "",
                                   "passes_over_power": round(hit[0] / best_pow[0], 3) if hit and best_pow else "",
                                   "reference": ref_kind}
                            rows.append(row)
                            line.append(f"{meth}{'[' + chosen + ']' if chosen else ''} {fmt(hit, note)}")
                        print(f"  k={k:2d} cos>={level}: " + " | ".join(line), flush=True)
                    _write(args.out, rows)
    _write(args.out, rows)
    summary(rows)
    plot(rows, Path(args.out).with_suffix(".png"))
    print(f"wrote {args.out} and {Path(args.out).with_suffix('.png')}")
    return 0


def _write(path, rows):
    if not rows:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _median_table(rows):
    """{(model, k, level, method): (median passes, median calls, median seconds, reached/total)}."""
    groups = {}
    for r in rows:
        groups.setdefault((r["model"], int(r["k"]), float(r["level"]), r["method"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        hit = [r for r in rs if str(r["reached"]) == "True"]
        if hit:
            out[key] = (float(np.median([float(r["passes"]) for r in hit])),
                        float(np.median([float(r["calls"]) for r in hit])),
                        float(np.median([float(r["time_s"]) for r in hit])), len(hit), len(rs))
        else:
            out[key] = (None, None, None, 0, len(rs))
    return out


def summary(rows):
    print("\nper point, the auto block (krylov-s) against ARPACK and power at equal accuracy:")
    for r in rows:
        if r["method"] == "krylov-s":
            print(f"  {r['model']:10s} {r['point']} t={r['t']} k={int(r['k']):2d} cos>={r['level']}: "
                  + (f"{r['passes']}p {r['calls']}c  passes/arpack {r['passes_over_arpack'] or '-'} "
                     f"calls/arpack {r['calls_over_arpack'] or '-'} passes/power {r['passes_over_power'] or '-'}"
                     if str(r["reached"]) == "True" else r["note"]))
    for model, (c0, c1) in call_cost_fit(rows).items():
        print(f"\n{model}: seconds ~ {c0:.4f} x calls + {c1:.4f} x passes (least squares over the timed runs): "
              f"a call's fixed part = {c0 / c1:.1f} passes")
    tab = _median_table(rows)
    print("\nmedian over points (passes / calls / seconds; reached/points); ratios vs arpack and power:")
    for (model, k, level, meth), (p, c, s, hit, tot) in sorted(tab.items()):
        if p is None:
            print(f"  {model:10s} k={k:2d} cos>={level}: {meth:8s} not reached (0/{tot})")
            continue
        a = tab.get((model, k, level, "arpack"), (None,) * 5)
        w = tab.get((model, k, level, "power"), (None,) * 5)
        rat = ""
        if a[0]:
            rat += f"  passes/arpack {p / a[0]:.2f} calls/arpack {c / a[1]:.2f}"
        if w[0]:
            rat += f"  passes/power {p / w[0]:.2f}"
        print(f"  {model:10s} k={k:2d} cos>={level}: {meth:8s} {p:7.0f} / {c:5.0f} / {s:7.2f} s ({hit}/{tot}){rat}")


def call_cost_fit(rows):
    """{model: (c0, c1)}: least squares of wall seconds ~ c0 calls + c1 passes over every reached run of the
    instrumented solvers (Krylov, power, Halko, exact); c0 / c1 is a call's fixed part in passes
    (``jacobian.CPU_PASSES_PER_CALL``)."""
    out = {}
    for model in sorted({r["model"] for r in rows}):
        rs = [r for r in rows if r["model"] == model and str(r["reached"]) == "True"
              and (r["method"].startswith("krylov") or r["method"] in ("power", "halko", "exact"))]
        if len(rs) < 3:
            continue
        X = np.array([[float(r["calls"]), float(r["passes"])] for r in rs])
        y = np.array([float(r["time_s"]) for r in rs])
        (c0, c1), *_ = np.linalg.lstsq(X, y, rcond=None)
        out[model] = (float(c0), float(c1))
    return out


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tab = _median_table(rows)
    models = sorted({k[0] for k in tab})
    fig, axes = plt.subplots(len(LEVELS), len(models), figsize=(5 * len(models), 4 * len(LEVELS)), squeeze=False)
    for j, model in enumerate(models):
        for i, level in enumerate(LEVELS):
            ax = axes[i][j]
            for meth in METHODS:
                pts = sorted((k, v[0]) for (mo, k, lv, me), v in tab.items()
                             if mo == model and lv == level and me == meth and v[0] is not None)
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=meth, color=f"C{METHODS.index(meth)}")
            ax.set_title(f"{model}: cosine >= {level}")
            ax.set_xlabel("k")
            ax.set_ylabel("passes (median over points)")
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
