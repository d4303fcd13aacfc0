"""CLI: `score` (memorization check), `calibrate` (fit a threshold), `calibrate-builtin` (ship calibrations)."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from ..errors import UserError
from .core import add_model_arg


def _load_images(model, paths):
    import torch

    from ..data.images import ImageError, list_image_files, load_image

    files = []
    for p in paths:
        pp = Path(p)
        files.extend(list_image_files(pp) if pp.is_dir() else [pp])
    tensors, names, problems = [], [], []
    for f in files:
        try:
            tensors.append(load_image(f, model.image_shape[1:], channels=model.image_shape[0]))
            names.append(str(f))
        except ImageError as err:
            problems.append(str(err))
    if not tensors:
        raise UserError(problems[0] if problems else "no images given")
    return torch.cat(tensors), names, problems


def cmd_score(args) -> int:
    from ..diffusion import load_model
    from ..methods.memorization import Calibration, score_images

    model = load_model(args.model, args.device)
    images, names, problems = _load_images(model, args.images)
    for p in problems:
        print(f"skipped: {p}", file=sys.stderr)
    cal = Calibration.load(args.calibration) if args.calibration else None
    rows, cal = score_images(model, images, names, args.layer, args.t, args.metric, cal, args.noise_draws, args.seed)
    header = ["path", "score", "verdict", "implied_fpr"]
    table = [[r.name, f"{r.score:.6g}", "n/a" if r.memorized is None else ("memorized" if r.memorized else "generalized"),
              "" if r.implied_fpr is None else f"{r.implied_fpr:.4f}"] for r in rows]
    w = csv.writer(sys.stdout)
    w.writerow(header)
    w.writerows(table)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            csv.writer(f).writerows([header] + table)
    if cal is None:
        print("note: no calibration matches these settings, so no verdict (run `calibrate`)", file=sys.stderr)
    else:
        print(f"calibration: layer {cal.layer}, t {cal.t}, {cal.metric}; memorized if score "
              f"{'>' if cal.direction > 0 else '<'} {cal.threshold:.4g} (FPR {cal.fpr:.3f})", file=sys.stderr)
    return 0


def cmd_calibrate(args) -> int:
    from ..diffusion import load_model
    from ..methods.memorization import calibrate, default_layer, scores

    model = load_model(args.model, args.device)
    mem, _, _ = _load_images(model, [args.memorized])
    gen, _, _ = _load_images(model, [args.generalized])
    layer = args.layer or default_layer(model)
    sm = scores(model, mem, layer, args.t, args.metric, args.noise_draws, args.seed)
    sg = scores(model, gen, layer, args.t, args.metric, args.noise_draws, args.seed)
    cal = calibrate(sm, sg, model.model_id, layer, args.t, args.metric, args.target_fpr, args.noise_draws,
                    notes=f"memorized: {args.memorized}; generalized: {args.generalized}")
    cal.save(args.out)
    print(json.dumps({k: getattr(cal, k) for k in ("layer", "t", "metric", "direction", "threshold", "fpr", "tpr",
                                                   "auroc", "tpr_at_1pct_fpr")}, indent=1))
    return 0


def cmd_calibrate_builtin(args) -> int:
    from ..config import settings
    from ..diffusion import load_model
    from ..methods.memorization import calibration_path
    from ..methods.memorization_builtin import calibrate_builtin

    assets = settings().assets
    all_rows, ref_rows = [], None
    for mid in ("digits-dup", "digits-mem", "digits-gen"):
        model = load_model(mid, args.device)
        cal, rows = calibrate_builtin(model, reference_layer_rows=ref_rows)
        if mid == "digits-dup":
            ref_rows = rows
        all_rows += rows
        cal.save(calibration_path(assets, mid))
        print(f"{mid}: layer {cal.layer}, AUROC {cal.auroc}, TPR@1%FPR {cal.tpr_at_1pct_fpr}, threshold {cal.threshold:.4g}")
    with open(assets / "calibrations" / "layer_auroc.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(all_rows[0]))
        w.writeheader()
        w.writerows(all_rows)
    return 0


def register(sub) -> None:
    p = sub.add_parser("score", help="memorization check: representation spikiness of images (CSV to stdout)")
    p.add_argument("images", nargs="+", help="image files or folders")
    add_model_arg(p)
    p.add_argument("--layer", default=None, help="U-Net module (default: the model's calibrated layer)")
    p.add_argument("--t", type=int, default=None, help="timestep (default 50)")
    p.add_argument("--metric", default=None, choices=("std", "l4_l2", "entropy", "max_min"))
    p.add_argument("--noise-draws", type=int, default=None)
    p.add_argument("--calibration", default=None, help="calibration JSON (default: the shipped one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--csv", default=None)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("calibrate", help="fit the memorization threshold from known images")
    add_model_arg(p)
    p.add_argument("--memorized", required=True, help="folder of known-memorized images")
    p.add_argument("--generalized", required=True, help="folder of known-generalized images")
    p.add_argument("--layer", default=None)
    p.add_argument("--t", type=int, default=50)
    p.add_argument("--metric", default="std", choices=("std", "l4_l2", "entropy", "max_min"))
    p.add_argument("--noise-draws", type=int, default=1)
    p.add_argument("--target-fpr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("calibrate-builtin", help="regenerate the shipped calibrations of the built-in models (seeded)")
    p.add_argument("--device", default=None)
    p.set_defaults(func=cmd_calibrate_builtin)
