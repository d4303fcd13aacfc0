"""CLI: `edit` (Jacobian singular-vector editing) and `rank` (rank of J_t vs SNR)."""
from __future__ import annotations

import csv
import json
from pathlib import Path


from ..errors import check_range
from .core import add_model_arg, float_range


def _load_image_for(model, path: str, invert: bool = False):
    from ..data.images import load_image

    return load_image(path, model.image_shape[1:], channels=model.image_shape[0], invert=invert)


def _load_mask(model, path: str):
    """White pixels of a mask image mark the region to edit."""
    from ..data.images import load_image

    return (load_image(path, model.image_shape[1:], channels=1)[0, 0] > 0).float()


def cmd_edit(args) -> int:
    import torch

    from ..data.images import make_grid, to_pil
    from ..diffusion import load_model
    from ..methods import editing
    from ..plots.common import to_pil as fig_to_pil
    from ..plots.editing import direction_images, spectrum_figure

    model = load_model(args.model, args.device)
    check_range("--t", args.t, 0.01, 1.0)
    t = model.timestep_from_fraction(args.t)
    alphas = editing.check_alphas(args.alpha)
    image = _load_image_for(model, args.image, invert=args.invert)
    cond = model.encode_prompt(args.prompt or "", guidance_scale=1.0) if model.is_text else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.load_direction:
        d = editing.Direction.load(args.load_direction)
        d.check_compatible(model)
        t = d.t
        inv = editing.invert(model, image, t, args.steps, cond, progress=True)
        chosen, search = d, None
    else:
        check_range("--k", args.k, 1, 64)
        check_range("--direction", args.direction, 1, args.k)
        mask = _load_mask(model, args.mask) if args.mask else None
        search = editing.find_directions(model, image, t, k=args.k, total_steps=args.steps, cond=cond, mask=mask,
                                         progress=True)
        inv = search.inversion
        chosen = search.directions[args.direction - 1]
        fig_to_pil(spectrum_figure(search.spectrum if search.spectrum is not None else search.singular_values,
                                   search.numerical_rank)).save(out / "spectrum.png")
        up = max(1, 128 // model.sample_shape[-1])
        make_grid(direction_images(search.V), upscale=up).save(out / "v_directions.png")
        make_grid(direction_images(search.U), upscale=up).save(out / "u_images.png")
    strip = editing.edit_strip(model, inv, chosen.vector, alphas, progress=True)
    control = editing.edit_strip(model, inv, editing.random_direction(model.sample_shape, args.seed), alphas)
    up = max(1, 128 // model.image_shape[-1])
    make_grid(torch.cat([strip, control]), nrow=len(alphas), upscale=up).save(out / "strip.png")
    for a, img in zip(alphas, to_pil(strip)):
        img.save(out / f"edit_alpha_{a:+.2f}.png")
    if args.save_direction:
        chosen.save(args.save_direction)
    report = {"model": model.model_id, "t": t, "alphas": alphas, "direction": chosen.index, "kind": chosen.kind,
              "sigma": chosen.sigma,
              "change_along_direction": editing.edit_effect(strip, alphas),
              "change_along_random": editing.edit_effect(control, alphas)}
    if search is not None:
        report.update({"singular_values": [float(s) for s in search.singular_values],
                       "numerical_rank": search.numerical_rank, "search": search.summary})
    (out / "edit.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out}/strip.png (top row: direction {chosen.index or 'loaded'}; bottom row: random direction), "
          f"edit.json" + (f", spectrum.png (numerical rank {search.numerical_rank})" if search else ""))
    return 0


def cmd_rank(args) -> int:
    from ..diffusion import load_model
    from ..methods.lowrank import rank_along_trajectory
    from ..plots.common import to_pil
    from ..plots.editing import rank_snr_figure

    check_range("--steps", args.steps, 2, 1000)
    model = load_model(args.model, args.device)
    pts = rank_along_trajectory(model, steps=args.steps, points=args.points, seed=args.seed, eta=args.eta, k=args.k,
                                progress=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    to_pil(rank_snr_figure(pts, title=f"{model.model_id}: rank of J_t along a DDIM trajectory (seed {args.seed})")).save(
        out.with_suffix(".png"))
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t", "sigma_t", "snr", "numerical_rank", "rank_over_n", "rank_is_lower_bound"])
        for p in pts:
            w.writerow([p.t, f"{p.sigma:.6g}", f"{p.snr:.6g}", p.rank, f"{p.rank_fraction:.6g}", int(p.rank_is_lower_bound)])
    print(f"wrote {out.with_suffix('.png')} and {out.with_suffix('.csv')}; rank/n from "
          f"{min(p.rank_fraction for p in pts):.3f} to {max(p.rank_fraction for p in pts):.3f}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("edit", help="edit an image along singular vectors of the denoiser's Jacobian")
    p.add_argument("image")
    add_model_arg(p)
    p.add_argument("--t", type=float, default=0.7, help="edit time as a fraction of T (paper: 0.7)")
    p.add_argument("--k", type=int, default=5, help="number of singular vectors")
    p.add_argument("--direction", type=int, default=1, help="which v_i to edit along (1-based)")
    p.add_argument("--alpha", type=float_range, default=float_range("-6:6:7"), help="LO:HI:COUNT or a list")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps over [0, T] (the edit uses the share up to t)")
    p.add_argument("--mask", default=None, help="image whose white pixels mark the region for a local edit")
    p.add_argument("--prompt", default="", help="condition for text models")
    p.add_argument("--invert", action="store_true", help="invert intensities (dark-on-light drawings of digits)")
    p.add_argument("--save-direction", default=None, help="save the chosen direction (.safetensors)")
    p.add_argument("--load-direction", default=None, help="apply a saved direction (transfer)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random control direction")
    p.add_argument("--out", default="edit_out")
    p.set_defaults(func=cmd_edit)

    p = sub.add_parser("rank", help="numerical rank of J_t vs SNR along a sampling trajectory (PNG + CSV)")
    add_model_arg(p)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--points", type=int, default=12)
    p.add_argument("--eta", type=float, default=0.99)
    p.add_argument("--k", type=int, default=32, help="top-k for large n (rank reported as a lower bound if exceeded)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="rank", help="output path without suffix")
    p.set_defaults(func=cmd_rank)
