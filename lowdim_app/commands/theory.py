"""Theory-lab commands: ``relu-dae`` (seed 004), ``mog-ddpm`` (seed 001), ``molr-mog`` (seed 002).

Every setting of a lab's config dataclass is a flag (``--n-mem 5``, ``--tied/--no-tied``); with no
flags a command runs the lab's default. ``--json PATH`` writes all numbers, ``--png PATH`` the figure.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
import typing
from pathlib import Path


LABS = {
    "relu-dae": ("lowdim_app.synthetic.relu_dae", "ReluLabConfig", "iter_relu_lab",
                 "two-layer ReLU DAE: memorization vs generalization (seed 004)"),
    "mog-ddpm": ("lowdim_app.synthetic.mog_ddpm", "MogDDPMConfig", "iter_mog_ddpm",
                 "DDPM objective on a Gaussian mixture: power iteration / EM (seed 001)"),
    "molr-mog": ("lowdim_app.synthetic.molr_mog", "MolrMogConfig", "iter_molr_mog",
                 "MoLR-MoG data and mixture-of-experts latent scores (seed 002)"),
}


def _config_class(command: str):
    import importlib

    mod, cls, _, _ = LABS[command]
    return getattr(importlib.import_module(mod), cls)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _field_type(cls, f: dataclasses.Field):
    hints = typing.get_type_hints(cls)
    t = hints[f.name]
    args = [a for a in typing.get_args(t) if a is not type(None)]
    return args[0] if args else t


def add_config_args(p: argparse.ArgumentParser, cls) -> None:
    for f in dataclasses.fields(cls):
        if f.name == "seed":
            continue
        t = _field_type(cls, f)
        if t is bool:
            p.add_argument(_flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            p.add_argument(_flag(f.name), dest=f.name, type=t, default=f.default,
                           help=f"default: {f.default if f.default is not None else 'per data set'}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write all numbers to this JSON file")
    p.add_argument("--png", default=None, help="write the figure to this PNG file")


def config_from_args(cls, args):
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def reproduce_line(command: str, cfg) -> str:
    """The CLI command with the same settings and seed (only non-default settings are spelled out)."""
    cls = type(cfg)
    parts = ["python -m lowdim_app", command]
    for f in dataclasses.fields(cls):
        v = getattr(cfg, f.name)
        if f.name != "seed" and v == f.default:
            continue
        if isinstance(v, bool):
            parts.append(_flag(f.name) if v else "--no-" + f.name.replace("_", "-"))
        else:
            parts += [_flag(f.name), str(v)]
    return " ".join(parts)


def jsonable(x):
    import torch

    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, torch.Tensor):
        return x.tolist()
    if isinstance(x, float) and x != x:
        return None
    return x


def figure_for(command: str, res):
    from ..plots import theory as pt

    return {"relu-dae": pt.relu_dae_figure, "mog-ddpm": pt.mog_ddpm_figure, "molr-mog": pt.molr_mog_figure}[command](res)


def run_lab(command: str, cfg, progress=None):
    """Iterate a lab to the end with a tqdm bar over its stages; returns the final result."""
    import importlib

    from tqdm import tqdm

    mod, _, it, _ = LABS[command]
    fn = getattr(importlib.import_module(mod), it)
    res = None
    with tqdm(desc=command, unit="stage") as bar:
        for res in fn(cfg):
            bar.set_postfix_str(res.stage)
            bar.update(1)
    return res


def _summary(command: str, n: dict) -> list[str]:
    out = []
    try:
        if command == "relu-dae":
            e = n["memorize"]["eq9"]
            out.append(f"memorize: cos(best column, x_i) min {min(e['best_cos']):.3f}; effective norm vs eq. 9: "
                       + ", ".join(f"{a:.3f}/{b:.3f}" for a, b in zip(e["effective_norm"], e["eq9_norm"])))
            out.append(f"AUROC(rep. std, memorizer train vs generalizer train) = {n['auroc_std_mem_train_vs_gen_train']:.3f}")
            for r in ("memorize", "generalize", "hybrid"):
                if r in n:
                    out.append(f"{r}: one-step denoising MSE train {n[r]['denoise_mse_train']:.4f} "
                               f"test {n[r]['denoise_mse_test']:.4f}")
        elif command == "mog-ddpm":
            if "large_noise" in n:
                L = n["large_noise"]
                out.append(f"large noise: angle {L['angle_start_deg']:.1f} -> {L['angle_end_deg']['gd_population']:.2f} deg "
                           f"(empirical GD {L['angle_end_deg']['gd_empirical']:.2f}); |grad-F|/|F| first step "
                           f"{L['grad_vs_power_rel_err_first']:.3f} (cubic 2: {L['grad_vs_power_cubic2_rel_err_first']:.3f}); "
                           f"Lemma 8 bound holds: {L['lemma8_bound_holds_all_steps']}")
                S = n["small_noise"]
                out.append("small noise: final distance " + ", ".join(f"{k} {v:.2e}" for k, v in S["dist_end"].items()))
            if "K_components" in n:
                out.append(json.dumps(n["K_components"]))
        else:
            out.append("eval DSM loss: " + ", ".join(f"{k} {v:.3f}" for k, v in n["eval_loss"].items())
                       + (f" (true score {n['oracle_loss']:.3f})" if "oracle_loss" in n else ""))
            out.append("parameters: " + ", ".join(f"{k} {v}" for k, v in n["param_counts"].items()))
    except (KeyError, ValueError, TypeError):
        pass
    return out


def make_handler(command: str):
    def handler(args) -> int:
        cls = _config_class(command)
        cfg = config_from_args(cls, args)
        t0 = time.perf_counter()
        res = run_lab(command, cfg)
        wall = time.perf_counter() - t0
        numbers = jsonable(res.numbers)
        print(reproduce_line(command, cfg))
        for line in _summary(command, res.numbers):
            print(line)
        print(f"wall time {wall:.1f} s")
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps({"command": command, "config": jsonable(res.config),
                                                   "wall_s": round(wall, 2), "numbers": numbers}, indent=1))
        if args.png:
            from ..plots.theory import save

            Path(args.png).parent.mkdir(parents=True, exist_ok=True)
            save(figure_for(command, res), args.png)
        return 0
    return handler


def register(sub) -> None:
    for command, (_, _, _, help_) in LABS.items():
        p = sub.add_parser(command, help=help_)
        add_config_args(p, _config_class(command))
        p.set_defaults(func=make_handler(command))


__all__ = ["register", "reproduce_line", "run_lab", "figure_for", "jsonable"]
