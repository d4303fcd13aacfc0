"""Top-k right singular subspace of J_t = d x0_hat / d x_t (Wang et al. 2024, arXiv:2409.02426, §4.2; Chen et al.
2024, LOCO Edit, arXiv:2409.02374): every solver at EQUAL ACCURACY, and the search's own stop rule.

Points: DDIM-inverted images (what the editor searches at) and the same images forward-noised, at t = 0.5T and
0.7T. Reference: the exact Jacobian (n VJPs, float64 SVD) where n <= --exact-max-n, else a long Krylov run.

Part ``solvers`` (bench/results/jacobian.csv, jacobian.png): one operator per point (``--jvp``: central-difference
JVPs by default, as the app runs them), float32 network, float64 linear algebra. For each solver and k, the passes
(network evaluations: a central-difference JVP direction is two, a VJP one), the sequential batched calls and the
CPU seconds of the process (``time.process_time``, one torch thread: the machine is shared, so wall seconds are
not comparable)
until its iterate first reaches a smallest principal cosine >= 0.99 and >= 0.999 to the reference. A solver that does not reach a level within its
cap is "not reached (cap N)" -- a cap is never reported as a count.

  * krylov-bB -- ``top_k_svd`` with block B, for every B of ``--blocks`` and the search plan's block;
  * power    -- LOCO Edit's power iteration (k JVPs + k VJPs per iteration);
  * arpack   -- ``scipy.sparse.linalg.svds`` (ARPACK, default ncv) on a LinearOperator, one direction per call;
                counted as the cheapest of a sweep of its ``tol`` that reaches the level (an oracle choice);
  * halko, lobpcg -- randomized SVD with power steps, LOBPCG on J^T J (``--methods`` adds them);
  * exact    -- n VJPs + SVD;
  * auto     -- ``jacobian_svd(method="auto")``: the search plan with its own stop rule at the tolerance of the
                level (tol = sqrt(1 - level^2)).

Part ``stop`` (bench/results/jacobian_stop.csv): the plan's Krylov search at tol 0.141 (cosine 0.99) with
central-difference (float32) and forward-mode JVPs: passes at the stop against passes at the first iterate with
cosine >= 0.99, and the cosine at the stop.

Each row carries the 1-minute load average of the machine when it was measured.

Usage: python bench/jacobian.py [--models digits-gen,tiny-sd] [--parts solvers,stop] [--ks 1,3,5,10] [--points 3,1]
  On 2 shared cores: digits-gen, 3 images x 2 kinds x 2 t, solvers part about 6 min, stop part about 1 min; tiny-sd,
  1 image, --blocks 1,2,4,k+1 --methods krylov,arpack,exact: about 22 min, stop part about 5 min.
  --merge a.csv,b.csv [--merge-stop c.csv,d.csv --markdown bench/results/jacobian.md] rewrites --out (and
  --stop-out) from earlier runs and prints the tables, among them the plan's (lowdim_app/methods/jacobian/plan.py
  reads them: tests/test_solver_choice.py checks that they agree).
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lowdim_app.methods import editing  # noqa: E402
from lowdim_app.methods import jacobian as jac  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
LEVELS = (0.99, 0.999)
METHODS = ("auto", "krylov", "power", "arpack", "exact")      # krylov: one run per block of --blocks
OPTIONAL = ("halko", "lobpcg")
DIGIT_IMAGES = (0, 37, 74, 120)     # held-out digits test images (scikit-learn split of the app)


# ----------------------------------------------------------------------------- models and points
def load(name: str, seed: int):
    from lowdim_app.diffusion import load_model

    if name.startswith("digits"):
        return load_model(name, "cpu"), None
    if name == "tiny-sd":
        from lowdim_app.diffusion.tiny import build_tiny_sd_pipeline

        m = load_model(str(build_tiny_sd_pipeline(Path(tempfile.mkdtemp()) / "pipe", seed=seed)), "cpu")
        return m, m.encode_prompt("a cat")
    if name == "cifar-real":
        from lowdim_app.diffusion import architectures, load_model

        folder = Path(tempfile.mkdtemp()) / "cifar10"
        architectures.build("cifar10", folder, layout="subfolder", seed=seed)
        return load_model(str(folder), "cpu"), None
    raise SystemExit(f"unknown model {name}")


def images_of(m, name: str, count: int) -> list[tuple[str, torch.Tensor]]:
    """Held-out digits for the digits models; the example digits at the model's image size for the others."""
    if name.startswith("digits"):
        from lowdim_app.data.digits import load_digits_split

        test = load_digits_split().test_images
        return [(f"test{i}", test[i:i + 1]) for i in DIGIT_IMAGES[:count]]
    from lowdim_app.data.images import load_image

    files = sorted((Path(__file__).resolve().parent.parent / "assets" / "examples").glob("digit_*.png"))[:count]
    return [(f.stem, load_image(f, m.image_shape[1:], channels=m.image_shape[0])) for f in files]


def points_of(m, name: str, count: int, seed: int, cond=None, kinds=("ddim", "noised"), fracs=(0.5, 0.7)):
    """(label, kind, fraction, x_t, t): each image DDIM-inverted (50 steps over [0, T]) and forward-noised to t."""
    out = []
    for label, img in images_of(m, name, count):
        for fr in fracs:
            t = m.timestep_from_fraction(fr)
            for kind in kinds:
                if kind == "ddim":
                    x_t = editing.invert(m, img, t, 50, cond).x_t[0]
                else:
                    x_t = m.add_noise(m.encode(img), t, m.randn(1, seed=seed))[0]
                out.append((label, kind, fr, x_t, t))
    return out


# ----------------------------------------------------------------------------- recording
class Trace:
    """Iterates of one method: (passes, calls, seconds, cosine) in the order they were produced."""

    def __init__(self, op, ref, k):
        self.op, self.ref, self.k = op, ref, k
        self.start = op.counter.snapshot()
        self.t0 = time.process_time()
        self.excluded = 0.0        # CPU time spent measuring (cosines), not charged to the method
        self.points = []

    def record(self, Vk):
        t1 = time.process_time()
        used = self.op.counter.since(self.start)
        V = torch.as_tensor(Vk).double()          # n x c
        if V.shape[1] >= self.k:
            c = jac.subspace_cosine(V.T[:self.k], self.ref)
            self.points.append((used.passes, used.calls, t1 - self.t0 - self.excluded, c))
        self.excluded += time.process_time() - t1

    def done(self) -> bool:
        return bool(self.points) and self.points[-1][3] >= LEVELS[-1]

    def first(self, level):
        return next(((p, c, s) for p, c, s, cos in self.points if cos >= level), None)

    def first_label(self, level) -> str:
        """The label of the first point at ``level`` (ARPACK: the tol of that run)."""
        labels = getattr(self, "labels", None)
        i = next((i for i, pt in enumerate(self.points) if pt[3] >= level), None)
        return labels[i] if labels and i is not None else ""


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
        jac.top_k_svd(op, k=k, seed=seed, tol=0.0, max_passes=cap, block=block, callback=_recorder(tr))
    except _Reached:
        pass
    return tr, f"cap {cap}"


def run_power(op, ref, k, cap, seed):
    tr = Trace(op, ref, k)
    iters = max(1, cap // (k * (op.jvp_evaluations + 1)))
    try:
        jac.subspace_iteration(op, k=k, seed=seed, tol=0.0, max_iters=iters, callback=_recorder(tr))
    except _Reached:
        pass
    return tr, f"cap {iters * k * (op.jvp_evaluations + 1)}"


def run_halko(op, ref, k, cap, seed, p=5):
    """Halko et al. 2011: Y = J Omega, then per power step Q = orth(Y), Z = J^T Q (its left singular vectors are
    the estimate), Y = J orth(Z)."""
    tr = Trace(op, ref, k)
    n, b = op.n, min(k + p, op.n)
    g = torch.Generator().manual_seed(seed)
    Y = jac.apply(op, "jvp", torch.randn(n, b, generator=g, dtype=torch.float64))
    while True:
        Q, _ = torch.linalg.qr(Y)
        Z = jac.apply(op, "vjp", Q)
        P, _s, _ = torch.linalg.svd(Z, full_matrices=False)
        tr.record(P[:, :k])
        if op.counter.since(tr.start).passes + b * (op.jvp_evaluations + 1) > cap or tr.points[-1][3] >= LEVELS[-1]:
            break
        Y = jac.apply(op, "jvp", torch.linalg.qr(Z)[0])
    return tr, f"cap {cap}"


class _CapReached(Exception):
    """Raised from an operator call once a run has spent its pass cap (the run is then not counted)."""


def _guard(op, cap):
    start = op.counter.snapshot()

    def check():
        if op.counter.since(start).passes >= cap:
            raise _CapReached
    return check


ARPACK_TOLS = (3e-1, 1e-1, 1e-2, 1e-3, 1e-5, 0.0)


def run_arpack(op, ref, k, cap, seed):
    """One svds run per tol (default ncv), cheapest first; each run is one point of the trace."""
    from scipy.sparse.linalg import svds

    tr = Trace(op, ref, k)
    v0 = np.random.default_rng(seed).standard_normal(op.n)
    runs = []
    for tol in ARPACK_TOLS:
        s0, t0 = op.counter.snapshot(), time.process_time()
        try:
            _, _, vh = svds(jac.linear_operator(op, _guard(op, cap)), k=k, tol=tol, v0=v0,
                            return_singular_vectors="vh", maxiter=max(1, cap // 2), solver="arpack")
        except _CapReached:
            continue
        except Exception as e:   # ArpackNoConvergence
            print(f"    arpack tol {tol}: {type(e).__name__}")
            continue
        used = op.counter.since(s0)
        c = jac.subspace_cosine(torch.as_tensor(vh.copy()), tr.ref) if used.passes <= cap else -1.0
        runs.append((used.passes, used.calls, time.process_time() - t0, c, tol))
        if c >= LEVELS[-1]:      # a tighter tol only costs more
            break
    runs.sort()
    tr.points = [r[:4] for r in runs]
    tr.labels = [f"tol {r[4]:g}" for r in runs]
    return tr, f"cap {cap}, tol sweep {ARPACK_TOLS[0]}..{ARPACK_TOLS[-1]}"


def run_lobpcg(op, ref, k, cap, seed):
    """scipy LOBPCG on J^T J (block k + 1): the smallest ``maxiter`` reaching each level (doubling, then
    bisection), each run one point of the trace."""
    import warnings

    from scipy.sparse.linalg import LinearOperator, lobpcg

    n, b = op.n, min(k + 1, op.n)
    guard = [lambda: None]

    def mm(X):
        guard[0]()
        return jac.apply(op, "vjp", jac.apply(op, "jvp", torch.as_tensor(np.asarray(X), dtype=torch.float64)
                                              .reshape(n, -1))).numpy()

    A = LinearOperator((n, n), matvec=lambda v: mm(v.reshape(n, 1)).reshape(-1), matmat=mm, dtype=np.float64)
    X0 = np.random.default_rng(seed).standard_normal((n, b))
    tr, cache = Trace(op, ref, k), {}

    def run(m):
        if m not in cache:
            s0, t0 = op.counter.snapshot(), time.process_time()
            guard[0] = _guard(op, cap + 1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    lam, X = lobpcg(A, X0.copy(), largest=True, tol=1e-14, maxiter=m)
                except _CapReached:
                    lam = None
            used = op.counter.since(s0)
            c = -1.0
            if lam is not None and used.passes <= cap:
                c = jac.subspace_cosine(torch.as_tensor(X[:, np.argsort(-lam)[:k]].T.copy()), tr.ref)
            cache[m] = (used.passes, used.calls, time.process_time() - t0, c)
        return cache[m]

    max_m = max(1, cap // (b * (op.jvp_evaluations + 1)))
    for level in LEVELS:
        m = 1
        while m < max_m and run(m)[3] < level:
            m = min(2 * m, max_m)
        if run(m)[3] < level:
            continue
        lo, hi = m // 2, m
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if run(mid)[3] >= level else (mid, hi)
    tr.points = sorted(cache.values())
    return tr, f"cap {b * (op.jvp_evaluations + 1) * max_m}"


def run_auto(op, ref, k, level, seed):
    """The library's plan with its own stop rule at the tol of ``level``."""
    s0, t0 = op.counter.snapshot(), time.process_time()
    r = jac.jacobian_svd(op, k=k, method="auto", tol=math.sqrt(1 - level ** 2), seed=seed, max_passes=100_000)
    used = op.counter.since(s0)
    return r, used, time.process_time() - t0, jac.subspace_cosine(r.V, ref)


# ----------------------------------------------------------------------------- parts
def plan_block(n: int, k: int) -> int:
    """The block the search plan gives the Krylov search at this size on this machine's CPU."""
    return jac.plan_search(n, k, solver="krylov", device="cpu").block


def fmt(hit, note):
    return f"{hit[0]:5d}p {hit[1]:4d}c {hit[2]:6.2f}s" if hit else f"not reached ({note})"


def solver_rows(op, name, n, label, kind, fr, t, ref_V, ref_kind, sv, exact_cost, ks, methods, blocks, cap0, seed):
    rows = []
    for k in ks:
        refk = ref_V[:k]
        cap = cap0 or max(400, 60 * k + 60)
        res = {}
        krylovs = {}
        for b in sorted({k + 1 if b == "k+1" else int(b) for b in blocks} | {plan_block(op.n, k)}):
            if b <= op.n:
                krylovs[f"krylov-b{b}"] = b
        for meth in methods:
            if meth == "exact":
                if exact_cost:
                    for level in LEVELS:
                        res[("exact", level)] = (exact_cost, "", "")
                continue
            if meth == "auto":
                for level in LEVELS:
                    r, used, secs, c = run_auto(op, refk, k, level, seed)
                    res[("auto", level)] = ((used.passes, used.calls, secs) if c >= level else None,
                                            f"stopped at cos {c:.4f}", r.method)
                continue
            runs = ({m_: (lambda b_=b_: run_krylov(op, refk, k, cap, seed, block=b_)) for m_, b_ in krylovs.items()}
                    if meth == "krylov" else
                    {meth: {"power": lambda: run_power(op, refk, k, cap, seed),
                            "halko": lambda: run_halko(op, refk, k, cap, seed),
                            "arpack": lambda: run_arpack(op, refk, k, cap, seed),
                            "lobpcg": lambda: run_lobpcg(op, refk, k, cap, seed)}[meth]})
            for m_, fn in runs.items():
                tr, note = fn()
                for level in LEVELS:
                    res[(m_, level)] = (tr.first(level), note, str(krylovs.get(m_, "")) or tr.first_label(level))
        load_avg = round(os.getloadavg()[0], 1)
        for level in LEVELS:
            arp = res.get(("arpack", level), (None,))[0]
            line = []
            for (m_, lv), (hit, note, extra) in res.items():
                if lv != level:
                    continue
                rows.append({"model": name, "n": n, "jvp": op.jvp_mode, "point": label, "kind": kind, "t_frac": fr,
                             "t": t, "k": k,
                             "level": level, "s_k_over_s_k+1": round(float(sv[k - 1] / sv[k]), 4), "method": m_,
                             "detail": extra, "reached": hit is not None, "passes": hit[0] if hit else "",
                             "calls": hit[1] if hit else "", "cpu_s": round(hit[2], 3) if hit else "",
                             "note": "" if hit else f"not reached ({note})",
                             "passes_over_arpack": round(hit[0] / arp[0], 3) if hit and arp else "",
                             "calls_over_arpack": round(hit[1] / arp[1], 3) if hit and arp else "",
                             "reference": ref_kind, "load_1min": load_avg})
                line.append(f"{m_}{'[' + extra + ']' if extra else ''} {fmt(hit, note)}")
            print(f"  k={k:2d} cos>={level}: " + " | ".join(line), flush=True)
    return rows


def stop_rows(m, name, x_t, t, cond, label, kind, fr, ref_V, ks, seed):
    """The plan's search at tol 0.141 with each JVP kind: passes at the stop vs at the first cosine >= 0.99."""
    rows = []
    level = 0.99
    for mode in jac.JVP_MODES:
        op = jac.x0_hat_operator(m, x_t, t, cond, jvp_mode=mode)
        for k in ks:
            seen = []
            res = jac.jacobian_svd(op, k=k, method="krylov", tol=jac.DEFAULT_TOL, max_passes=100_000, seed=seed,
                                   callback=lambda d: seen.append((d["passes"], d["calls"],
                                                                   jac.subspace_cosine(d["V"].T, ref_V[:k]))))
            cos_stop = jac.subspace_cosine(res.V, ref_V[:k])
            first = next(((p, c) for p, c, cos in seen if cos >= level), None)
            rows.append({"model": name, "point": label, "kind": kind, "t_frac": fr, "t": t, "jvp": mode, "k": k,
                         "block": res.block, "first_099_passes": first[0] if first else "",
                         "first_099_calls": first[1] if first else "", "stop_passes": res.passes,
                         "stop_calls": res.batched_calls, "stop_over_first": round(res.passes / first[0], 3) if first
                         else "", "status": res.stop_reason, "cos_at_stop": round(cos_stop, 5),
                         "error_estimate": round(res.error_estimate, 4),
                         "rule": res.history[-1]["rule"] if res.history else "", "wall_s": round(res.wall_time_s, 2),
                         "load_1min": round(os.getloadavg()[0], 1)})
            r = rows[-1]
            print(f"  stop {mode:7s} k={k:2d}: first cos>=0.99 at {r['first_099_passes']} passes, stopped at "
                  f"{res.passes} ({r['stop_over_first']}x), {res.stop_reason}, cos {cos_stop:.5f}, est "
                  f"{res.error_estimate:.3g} ({r['rule']})", flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="digits-gen,tiny-sd")
    ap.add_argument("--parts", default="solvers,stop")
    ap.add_argument("--ks", default="1,3,5,10")
    ap.add_argument("--points", default="3,1", help="images per model (comma list aligned with --models)")
    ap.add_argument("--kinds", default="ddim,noised")
    ap.add_argument("--fracs", default="0.5,0.7")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--blocks", default="1,2,3,4,6,k+1", help="Krylov blocks measured (the plan's is added)")
    ap.add_argument("--jvp", default="central", choices=jac.JVP_MODES, help="JVP kind of the solvers part")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU seconds are the work done)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--exact-max-n", type=int, default=1024)
    ap.add_argument("--cap", type=int, default=0, help="pass cap per method run (0: 60 k + 60, at least 400)")
    ap.add_argument("--out", default=str(RESULTS / "jacobian.csv"))
    ap.add_argument("--stop-out", default=str(RESULTS / "jacobian_stop.csv"))
    ap.add_argument("--merge", default="", help="CSVs from earlier runs: write them to --out, print, plot")
    ap.add_argument("--merge-stop", default="", help="stop-part CSVs from earlier runs: write them to --stop-out")
    ap.add_argument("--markdown", default="", help="with --merge: write the docs' tables to this file")
    args = ap.parse_args()
    if args.merge:
        rows = [r for path in args.merge.split(",") for r in csv.DictReader(open(path))]
        stops = [r for path in args.merge_stop.split(",") if path for r in csv.DictReader(open(path))]
        _write(args.out, rows)
        _write(args.stop_out, stops)
        summary(rows)
        if stops:
            stop_summary(stops)
        plot(rows, Path(args.out).with_suffix(".png"))
        if args.markdown:
            Path(args.markdown).write_text(markdown(rows, stops) + "\n")
        return 0
    torch.set_num_threads(args.threads)
    ks = [int(k) for k in args.ks.split(",")]
    methods, parts = args.methods.split(","), args.parts.split(",")
    blocks = [b for b in args.blocks.split(",") if b]
    npts = [int(p) for p in args.points.split(",")]
    rows, stops = [], []
    for mi, name in enumerate(args.models.split(",")):
        m, cond = load(name, args.seed)
        for label, kind, fr, x_t, t in points_of(m, name, npts[min(mi, len(npts) - 1)], args.seed, cond,
                                                 args.kinds.split(","), [float(f) for f in args.fracs.split(",")]):
            with m.float32_unet():
                op = jac.x0_hat_operator(m, x_t, t, cond, jvp_mode=args.jvp)
                op.jvp(torch.randn(1, *m.sample_shape))    # warm-up (one-off initialisation)
                op.vjp(torch.randn(1, *m.sample_shape))
                t0 = time.process_time()
                top = max(ks) + 1
                if m.n <= args.exact_max_n:
                    ex = jac.exact_svd(op, k=top)
                    ref_V, ref_kind, sv = ex.V.reshape(top, -1).double(), "exact (jacrev + float64 SVD)", ex.spectrum
                    exact_cost = (ex.passes, ex.batched_calls, time.process_time() - t0)
                else:
                    ref = jac.top_k_svd(op, k=top, tol=1e-3, max_passes=20000, seed=args.seed + 99)
                    ref_V, sv = ref.V.reshape(top, -1).double(), ref.singular_values
                    ref_kind, exact_cost = f"krylov tol 1e-3 ({ref.stop_reason})", None
                print(f"{name} {label} {kind} {fr}T (t={t}): reference {ref_kind}; s_1..11 = "
                      f"{[round(float(s), 3) for s in sv[:11]]}", flush=True)
                if "solvers" in parts:
                    rows += solver_rows(op, name, m.n, label, kind, fr, t, ref_V, ref_kind, sv, exact_cost, ks,
                                        methods, blocks, args.cap, args.seed)
                    _write(args.out, rows)
                if "stop" in parts and kind == "ddim":
                    stops += stop_rows(m, name, x_t, t, cond, label, kind, fr, ref_V, ks, args.seed)
                    _write(args.stop_out, stops)
    if rows:
        summary(rows)
        plot(rows, Path(args.out).with_suffix(".png"))
    if stops:
        stop_summary(stops)
    return 0


def _write(path, rows):
    if not rows:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _median_table(rows, kind=None):
    """{(model, k, level, method): (median passes, median calls, median seconds, reached, total)}."""
    groups = {}
    for r in rows:
        if kind is None or r["kind"] == kind:
            groups.setdefault((r["model"], int(r["k"]), float(r["level"]), r["method"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        hit = [r for r in rs if str(r["reached"]) == "True"]
        med = (lambda f: float(np.median([float(r[f]) for r in hit]))) if hit else (lambda f: None)
        out[key] = (med("passes"), med("calls"), med("cpu_s"), len(hit), len(rs))
    return out


def summary(rows):
    """Median tables per point kind, and the per-point passes / calls against ARPACK of the plan's block."""
    for kind in sorted({r["kind"] for r in rows}):
        tab = _median_table(rows, kind)
        print(f"\n{kind} points: median passes / calls / seconds (reached/points); ratios against ARPACK")
        for (model, k, level, meth), (p, c, s, hit, tot) in sorted(tab.items()):
            if p is None:
                print(f"  {model:10s} k={k:2d} cos>={level}: {meth:10s} not reached (0/{tot})")
                continue
            a = tab.get((model, k, level, "arpack"), (None,) * 5)
            rat = f"  passes/arpack {p / a[0]:.2f} calls/arpack {c / a[1]:.2f}" if a[0] else ""
            print(f"  {model:10s} k={k:2d} cos>={level}: {meth:10s} {p:7.0f} / {c:5.0f} / {s:7.2f} CPU s "
                  f"({hit}/{tot}){rat}")
    for model, (kry, arp) in plan_tables(rows).items():
        print(f"\n{model}: DDIM-inverted points, cosine 0.99, median (passes with forward-mode JVPs, calls) -- the "
              f"plan's tables\n  _KRYLOV_MEASURED = {kry}\n  _ARPACK_MEASURED = {arp}")
    for model, (c0, c1, n) in call_cost_fit(rows).items():
        print(f"\n{model} (n = {n}): CPU seconds ~ {c0:.4f} x calls + {c1:.4f} x passes: a call's fixed part = "
              f"{c0 / c1:.1f} passes")
    planned = [r for r in rows if r["method"] == f"krylov-b{plan_block(int(r['n']), int(r['k']))}"]
    worse = [r for r in planned if r["passes_over_arpack"] not in ("", None)
             and (float(r["passes_over_arpack"]) > 1 or float(r["calls_over_arpack"]) > 0.25)]
    print(f"\nthe plan's block (CPU): {len(worse)} of {len(planned)} point/k/level cells above ARPACK's passes or "
          "a quarter of its calls:")
    for r in worse:
        print(f"  {r['model']} {r['point']} {r['kind']} {r['t_frac']}T k={r['k']} cos>={r['level']}: passes/arpack "
              f"{r['passes_over_arpack']} calls/arpack {r['calls_over_arpack']} (s_k/s_k+1 {r['s_k_over_s_k+1']})")


def plan_tables(rows, kind="ddim", level=0.99):
    """{model: (krylov, arpack)} in the form of the plan's ``_KRYLOV_MEASURED`` / ``_ARPACK_MEASURED``: median
    (passes with forward-mode JVPs, calls) to ``level`` on the points of ``kind``; Krylov keyed by k, then block
    (0: k + 1). Passes of central-difference runs are converted (an iteration of b directions costs 3b, not 2b)."""
    out = {}
    for model in sorted({r["model"] for r in rows}):
        kry, arp = {}, {}
        sel = [r for r in rows if r["model"] == model and r["kind"] == kind and float(r["level"]) == level]
        for k in sorted({int(r["k"]) for r in sel}):
            for meth in sorted({r["method"] for r in sel if int(r["k"]) == k}):
                rs = [r for r in sel if int(r["k"]) == k and r["method"] == meth]
                if not (meth.startswith("krylov-b") or meth == "arpack") or not all(
                        str(r["reached"]) == "True" for r in rs):
                    continue
                je = jac.JVP_EVALUATIONS[rs[0].get("jvp") or "central"]
                p = round(float(np.median([float(r["passes"]) * 2 / (je + 1) for r in rs])))
                c = round(float(np.median([float(r["calls"]) for r in rs])))
                if meth == "arpack":
                    arp[k] = (p, c)
                else:
                    b = int(meth[8:])
                    kry.setdefault(k, {})[0 if b == k + 1 and b > 2 else b] = (p, c)
        out[model] = (kry, arp)
    return out


def call_cost_fit(rows):
    """{model: (c0, c1)}: least squares of CPU seconds ~ c0 calls + c1 passes over the reached Krylov runs; c0 / c1 is
    a batched call's fixed part in passes (the plan's ``_CPU_PASSES_PER_CALL``)."""
    out = {}
    for model in sorted({r["model"] for r in rows}):
        rs = [r for r in rows if r["model"] == model and str(r["reached"]) == "True" and r["method"].startswith("krylov")]
        if len(rs) >= 3:
            X = np.array([[float(r["calls"]), float(r["passes"])] for r in rs])
            (c0, c1), *_ = np.linalg.lstsq(X, np.array([float(r["cpu_s"]) for r in rs]), rcond=None)
            out[model] = (float(c0), float(c1), int(rs[0]["n"]))
    return out


def stop_summary(stops):
    late = [r for r in stops if r["stop_over_first"] != "" and float(r["stop_over_first"]) > 1.5]
    below = [r for r in stops if r["status"] == "converged" and float(r["cos_at_stop"]) < 0.99]
    ratios = [float(r["stop_over_first"]) for r in stops if r["stop_over_first"] != ""]
    print(f"\nstop rule: {len(stops)} runs; stop / first cos 0.99 from {min(ratios):.2f} to {max(ratios):.2f} "
          f"(median {np.median(ratios):.2f}); over 1.5x: {len(late)}; converged below cos 0.99: {len(below)}")


def markdown(rows, stops) -> str:
    """The tables of docs/editing.md: medians over points of each kind (passes / calls / CPU s), the plan's block
    against ARPACK per regime, and the stop rule per point."""
    out = []
    for model in sorted({r["model"] for r in rows}):
        n = int(next(r["n"] for r in rows if r["model"] == model))
        for kind in sorted({r["kind"] for r in rows if r["model"] == model}):
            tab = _median_table([r for r in rows if r["model"] == model], kind)
            ks = sorted({k for (_m, k, _l, _me) in tab})
            for level in LEVELS:
                out.append(f"\n**{model}** (n = {n}), {kind} points, cosine >= {level}: passes / calls / CPU s "
                           "(median over points)\n")
                out.append("| solver | " + " | ".join(f"k = {k}" for k in ks) + " |")
                out.append("|---|" + "---|" * len(ks))
                meths = sorted({me for (_m, _k, lv, me) in tab if lv == level},
                               key=lambda m: (not m.startswith("krylov"), int(m[8:]) if m.startswith("krylov-b") else 0, m))
                plan_row = []
                for k in ks:
                    v = tab.get((model, k, level, f"krylov-b{plan_block(n, k)}"))
                    plan_row.append(_cell(v, f" (b = {plan_block(n, k)})"))
                out.append("| Krylov, the plan's block | " + " | ".join(plan_row) + " |")
                for meth in meths:
                    label = {"arpack": "ARPACK", "exact": "exact", "auto": "auto (own stop rule)",
                             "power": "power (LOCO)"}.get(meth, meth.replace("krylov-b", "Krylov, block "))
                    out.append(f"| {label} | " + " | ".join(_cell(tab.get((model, k, level, meth))) for k in ks) + " |")
    out.append("\n**The plan's block against ARPACK** (medians of passes / ARPACK's and calls / ARPACK's over the "
               "points of a regime; over 1 or over 0.25 in bold)\n")
    out.append("| model | points | t | level | " + " | ".join(f"k = {k}" for k in sorted({int(r['k']) for r in rows}))
               + " |")
    out.append("|---|---|---|---|" + "---|" * len({int(r['k']) for r in rows}))
    groups = {}
    for r in rows:
        if r["method"] == f"krylov-b{plan_block(int(r['n']), int(r['k']))}" and r["passes_over_arpack"] != "":
            groups.setdefault((r["model"], r["kind"], r["t_frac"], r["level"]), {}).setdefault(int(r["k"]), []).append(
                (float(r["passes_over_arpack"]), float(r["calls_over_arpack"])))
    for (model, kind, fr, level), by_k in sorted(groups.items()):
        cells = []
        for k in sorted({int(r['k']) for r in rows}):
            v = by_k.get(k)
            if not v:
                cells.append("-")
                continue
            p, c = float(np.median([a for a, _ in v])), float(np.median([b for _, b in v]))
            cells.append(("**%.2f**" if p > 1 else "%.2f") % p + " / " + ("**%.2f**" if c > 0.25 else "%.2f") % c)
        out.append(f"| {model} | {kind} | {fr}T | {level} | " + " | ".join(cells) + " |")
    if stops:
        out.append("\n**Stop rule** (the plan's Krylov search at tol 0.141): network evaluations at the first "
                   "iterate with cosine >= 0.99 -> at the stop (ratio), cosine at the stop\n")
        ks = sorted({int(r["k"]) for r in stops})
        out.append("| model | point | t | JVP | " + " | ".join(f"k = {k}" for k in ks) + " |")
        out.append("|---|---|---|---|" + "---|" * len(ks))
        keyed = {}
        for r in stops:
            keyed.setdefault((r["model"], r["point"], r["t_frac"], r["jvp"]), {})[int(r["k"])] = r
        for (model, point, fr, jvp), by_k in sorted(keyed.items()):
            cells = [f"{r['first_099_passes']} -> {r['stop_passes']} ({float(r['stop_over_first']):.2f}), "
                     f"{float(r['cos_at_stop']):.4f}" if (r := by_k.get(k)) and r["stop_over_first"] != "" else "-"
                     for k in ks]
            out.append(f"| {model} | {point} | {fr}T | {jvp} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def _cell(v, extra=""):
    if v is None or v[0] is None:
        return "not reached" if v else "-"
    p, c, s, hit, tot = v
    return f"{p:.0f} / {c:.0f} / {s:.2f}{extra}" + ("" if hit == tot else f" ({hit} of {tot})")


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = sorted({r["kind"] for r in rows})
    models = sorted({r["model"] for r in rows})
    meths = sorted({r["method"] for r in rows})
    fig, axes = plt.subplots(len(LEVELS) * len(kinds), len(models), figsize=(5 * len(models), 3.6 * len(LEVELS) *
                                                                                len(kinds)), squeeze=False)
    for ki, kind in enumerate(kinds):
        tab = _median_table(rows, kind)
        for j, model in enumerate(models):
            for i, level in enumerate(LEVELS):
                ax = axes[ki * len(LEVELS) + i][j]
                for meth in meths:
                    pts = sorted((k, v[0]) for (mo, k, lv, me), v in tab.items()
                                 if mo == model and lv == level and me == meth and v[0] is not None)
                    if pts:
                        ax.plot(*zip(*pts), marker="o", label=meth, color=f"C{meths.index(meth) % 10}",
                                linestyle=":" if meth.startswith("krylov") else "-")
                ax.set_title(f"{model}, {kind} points: cosine >= {level}", fontsize=9)
                ax.set_xlabel("k")
                ax.set_ylabel("network evaluations (median)")
                ax.set_yscale("log")
                ax.grid(alpha=0.3)
                ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    raise SystemExit(main())
