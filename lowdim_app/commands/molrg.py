"""MoLRG lab commands (seed 000): ``phase`` (Fig. 4/8), ``molrg-rank`` (Fig. 3b/7a), ``gl-score`` (Fig. 5a)."""
from __future__ import annotations

import json
import sys

from ..errors import UserError, check_range
from .core import float_range, int_range

RANK_LIMITS = dict(n=(4, 256), N=(2, 20000), steps=(2, 64), trajectories=(1, 100), dae_iters=(0, 20000),
                   mlp_steps=(0, 50000), mlp_width=(8, 1024), mlp_batch=(1, 4096), mlp_lr=(1e-6, 1.0))
GL_LIMITS = dict(n=(4, 256), K=(1, 3), d=(1, 32), ratio=(0.1, 1000.0), steps=(1, 50000), lr=(1e-6, 1.0),
                 batch=(1, 4096), width=(8, 1024), depth=(1, 8), p_mean=(-6.0, 2.0), p_std=(0.1, 4.0),
                 n_eval=(10, 2000), N_k=(1, 20000))


def phase_settings_from_args(args):
    from ..synthetic.phase import PhaseSettings

    return PhaseSettings(n=args.n, K=args.K, d_values=list(args.d), N_values=list(args.N), trials=args.trials,
                         method=args.method, noise=args.noise, seed=args.seed, norm=args.norm,
                         threshold=args.threshold, cluster_init=args.cluster_init,
                         cluster_restarts=args.restarts, dae_variant=args.dae_variant,
                         dae_preset=args.dae_preset, dae_iters=args.dae_iters, dae_lr=args.dae_lr,
                         dae_batch=args.dae_batch, chunk=args.chunk)


def phase_command_line(st) -> str:
    """The ``phase`` CLI line that reproduces settings ``st`` (a PhaseSettings)."""
    def rng(v):
        v = list(v)
        return f"{v[0]}:{v[-1]}" if v == list(range(v[0], v[-1] + 1)) else ",".join(map(str, v))
    parts = ["python -m lowdim_app phase", f"--K {st.K}", f"--n {st.n}", f"--d {rng(st.d_values)}",
             f"--N {rng(st.N_values)}", f"--trials {st.trials}", f"--method {st.method}"]
    if st.noise:
        parts.append(f"--noise {st.noise:g}")
    if st.norm != "spectral":
        parts.append(f"--norm {st.norm}")
    if st.threshold != 0.5:
        parts.append(f"--threshold {st.threshold:g}")
    if st.method == "dae":
        parts.append(f"--dae-variant {st.dae_variant}")
        if st.dae_preset != "fast":
            parts.append(f"--dae-preset {st.dae_preset}")
        if st.dae_iters is not None:
            parts.append(f"--dae-iters {st.dae_iters}")
    parts.append(f"--seed {st.seed}")
    return " ".join(parts)


def cmd_phase(args) -> int:
    from tqdm import tqdm

    from ..synthetic.phase import iter_phase

    st = phase_settings_from_args(args).validate()
    res = None
    with tqdm(total=len(st.d_values) * len(st.N_values), desc=f"phase {st.method} K={st.K}", unit="cell",
              file=sys.stderr, disable=args.quiet) as bar:
        for res in iter_phase(st):
            bar.update(res.cells_done - bar.n)
    print(res.table())
    print(f"wall {res.wall_s:.2f} s")
    if args.json:
        res.to_json(args.json)
    if args.csv:
        res.to_csv(args.csv)
    if args.png:
        from ..plots.molrg import phase_heatmap, save

        save(phase_heatmap(res), args.png)
    return 0


def rank_settings_from_args(args):
    from ..synthetic.gl_score import RankSettings

    dims = list(args.dims)
    check_range("n", args.n, *RANK_LIMITS["n"])
    if not dims or min(dims) < 1 or len(dims) > 3:
        raise UserError("dims must be 1 to 3 positive integers, e.g. 6,6")
    if sum(dims) > args.n:
        raise UserError(f"sum of dims {sum(dims)} exceeds n = {args.n}")
    check_range("N", args.N, *RANK_LIMITS["N"])
    check_range("steps", args.steps, *RANK_LIMITS["steps"])
    check_range("trajectories", args.trajectories, *RANK_LIMITS["trajectories"])
    check_range("DAE iterations", args.dae_iters, *RANK_LIMITS["dae_iters"])
    check_range("MLP steps", args.mlp_steps, *RANK_LIMITS["mlp_steps"])
    check_range("MLP width", args.mlp_width, *RANK_LIMITS["mlp_width"])
    check_range("MLP batch", args.mlp_batch, *RANK_LIMITS["mlp_batch"])
    check_range("MLP learning rate", args.mlp_lr, *RANK_LIMITS["mlp_lr"])
    check_range("seed", args.seed, 0, 2**31 - 1)
    return RankSettings(n=args.n, dims=dims, N=args.N, num_steps=args.steps, trajectories=args.trajectories,
                        dae_iters=args.dae_iters, train_mlp=args.mlp_steps > 0, mlp_steps=max(1, args.mlp_steps),
                        mlp_width=args.mlp_width, mlp_batch=args.mlp_batch, mlp_lr=args.mlp_lr, seed=args.seed)


def cmd_rank(args) -> int:
    from ..synthetic.gl_score import rank_vs_snr

    st = rank_settings_from_args(args)
    out = rank_vs_snr(st, progress=None if args.quiet else (lambda msg: print(msg, file=sys.stderr)))
    print("SNR      " + " ".join(f"{v:7.3g}" for v in out["snr"]))
    for name, vals in out["models"].items():
        print(f"{name}: " + " ".join(f"{v:.3f}" for v in vals))
    print(f"Lemma 2 bounds (rank/n): {out['bounds'][0]:.3f} .. {out['bounds'][1]:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    if args.png:
        from ..plots.molrg import rank_vs_snr_figure, save

        save(rank_vs_snr_figure(out), args.png)
    return 0


def gl_settings_from_args(args):
    from ..synthetic.gl_score import GLSettings

    L = GL_LIMITS
    check_range("n", args.n, *L["n"])
    check_range("K", args.K, *L["K"])
    if not args.d:
        raise UserError("d range must not be empty")
    for d in args.d:
        check_range("d", d, *L["d"])
    if args.K * max(args.d) > args.n:
        raise UserError(f"K * max(d) = {args.K * max(args.d)} exceeds n = {args.n}")
    if not args.ratios or len(args.ratios) > 20:
        raise UserError("give 1 to 20 ratios N_k/d_k")
    for r in args.ratios:
        check_range("ratio", r, *L["ratio"])
        check_range("N_k", r * max(args.d), *L["N_k"])
    check_range("steps", args.steps, *L["steps"])
    check_range("lr", args.lr, *L["lr"])
    check_range("batch", args.batch, *L["batch"])
    check_range("width", args.width, *L["width"])
    check_range("depth", args.depth, *L["depth"])
    check_range("p_mean", args.p_mean, *L["p_mean"])
    check_range("p_std", args.p_std, *L["p_std"])
    check_range("n_eval", args.n_eval, *L["n_eval"])
    check_range("seed", args.seed, 0, 2**31 - 1)
    return GLSettings(n=args.n, K=args.K, d_values=list(args.d), ratios=[float(r) for r in args.ratios],
                      steps=args.steps, lr=args.lr, batch=args.batch, width=args.width, depth=args.depth,
                      p_mean=args.p_mean, p_std=args.p_std, n_eval=args.n_eval, seed=args.seed)


def gl_command_line(st) -> str:
    d = st.d_values
    dtxt = f"{d[0]}:{d[-1]}" if d == list(range(d[0], d[-1] + 1)) else ",".join(map(str, d))
    return (f"python -m lowdim_app gl-score --K {st.K} --n {st.n} --d {dtxt} --ratios "
            f"{','.join(f'{r:g}' for r in st.ratios)} --steps {st.steps} --lr {st.lr:g} --batch {st.batch} "
            f"--width {st.width} --depth {st.depth} --p-mean {st.p_mean:g} --p-std {st.p_std:g} "
            f"--n-eval {st.n_eval} --seed {st.seed}")


def cmd_gl(args) -> int:
    from tqdm import tqdm

    from ..synthetic.gl_score import iter_gl_experiment

    st = gl_settings_from_args(args)
    res = None
    for res in tqdm(iter_gl_experiment(st), total=len(st.d_values), desc="gl-score", unit="d_k",
                    file=sys.stderr, disable=args.quiet):
        pass
    print(res.to_csv(), end="")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res.to_dict(), f, indent=1)
    if args.csv:
        with open(args.csv, "w") as f:
            f.write(res.to_csv())
    if args.png:
        from ..plots.molrg import gl_figure, save

        save(gl_figure(res), args.png)
    return 0


def register(sub) -> None:
    from ..synthetic.gl_score import GLSettings

    p = sub.add_parser("phase", help="phase transition of learning MoLRG subspaces (seed 000 Fig. 4)")
    p.add_argument("--K", type=int, default=2, help="number of components (1-3)")
    p.add_argument("--n", type=int, default=48, help="ambient dimension")
    p.add_argument("--d", type=int_range, default=list(range(2, 9)), help="subspace dimensions, A:B inclusive")
    p.add_argument("--N", type=int_range, default=list(range(2, 16)), help="samples per component, A:B inclusive")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--method", default="cluster", choices=("svd", "cluster", "dae"))
    p.add_argument("--noise", type=float, default=0.0, help="std of the isotropic noise e (eq. 15)")
    p.add_argument("--norm", default="spectral", choices=("spectral", "fro"), help="success-metric norm")
    p.add_argument("--threshold", type=float, default=0.5, help="success if error <= threshold (App. E.1)")
    p.add_argument("--cluster-init", default="spectral", choices=("spectral", "random"))
    p.add_argument("--restarts", type=int, default=1, help="K-subspaces restarts")
    p.add_argument("--dae-variant", default="hardmax", choices=("softmax", "hardmax"),
                   help="eq. 9 (softmax) or eq. 16 (hardmax) for K>1")
    p.add_argument("--dae-preset", default="fast", choices=("fast", "paper"), help="DAE-SGD settings")
    p.add_argument("--dae-iters", type=int, default=None)
    p.add_argument("--dae-lr", type=float, default=None)
    p.add_argument("--dae-batch", type=int, default=None)
    p.add_argument("--chunk", default="column", choices=("column", "grid", "cell", "problem"),
                   help="batching: a whole N column, the grid, one cell, or one problem at a time")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write settings and the d-by-N success grid")
    p.add_argument("--csv", default=None)
    p.add_argument("--png", default=None, help="heat map with the N_k = d boundary")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_phase)

    p = sub.add_parser("molrg-rank", help="Jacobian rank / n vs SNR with Lemma 2 bounds (seed 000 Fig. 3b)")
    p.add_argument("--n", type=int, default=48)
    p.add_argument("--dims", type=int_range, default=[6, 6], help="component dimensions, e.g. 6,6")
    p.add_argument("--N", type=int, default=1000, help="training samples (DAE, MLP)")
    p.add_argument("--steps", type=int, default=18, help="EDM Heun steps")
    p.add_argument("--trajectories", type=int, default=15)
    p.add_argument("--dae-iters", type=int, default=300, help="SGD steps for the low-rank DAE (0: skip)")
    p.add_argument("--mlp-steps", type=int, default=6000, help="Adam steps for the MLP denoiser (0: skip)")
    p.add_argument("--mlp-width", type=int, default=256)
    p.add_argument("--mlp-batch", type=int, default=128)
    p.add_argument("--mlp-lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    p.add_argument("--png", default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_rank)

    p = sub.add_parser("gl-score", help="GL score (eq. 21) of MLP denoisers vs N_k/d_k (seed 000 Fig. 5a)")
    p.add_argument("--K", type=int, default=2)
    p.add_argument("--n", type=int, default=48)
    p.add_argument("--d", type=int_range, default=[3, 4, 5, 6])
    p.add_argument("--ratios", type=float_range, default=GLSettings().ratios,
                   help="N_k/d_k values, e.g. 1,2,4,8")
    p.add_argument("--steps", type=int, default=GLSettings.steps, help="Adam steps per network")
    p.add_argument("--lr", type=float, default=GLSettings.lr)
    p.add_argument("--batch", type=int, default=GLSettings.batch)
    p.add_argument("--width", type=int, default=GLSettings.width)
    p.add_argument("--depth", type=int, default=GLSettings.depth, help="hidden layers of the MLP")
    p.add_argument("--p-mean", type=float, default=GLSettings.p_mean, help="training noise: mean of log sigma")
    p.add_argument("--p-std", type=float, default=GLSettings.p_std, help="training noise: std of log sigma")
    p.add_argument("--n-eval", type=int, default=300, help="generated and reference samples for eq. 21")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    p.add_argument("--csv", default=None)
    p.add_argument("--png", default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_gl)
