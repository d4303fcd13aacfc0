"""Core commands: serve, models, sample, train, card."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import UserError, check_range


def int_range(text: str) -> list[int]:
    """``"2:8"`` -> [2..8] inclusive; ``"5"`` -> [5]; ``"2,4,6"`` -> [2, 4, 6]."""
    try:
        if ":" in text:
            parts = [int(p) for p in text.split(":")]
            step = parts[2] if len(parts) == 3 else 1
            return list(range(parts[0], parts[1] + (1 if step > 0 else -1), step))
        return [int(p) for p in text.split(",")]
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"not an integer range: {text!r} (use A:B, A:B:STEP or A,B,C)") from None


def float_range(text: str) -> list[float]:
    """``"-6:6:7"`` -> 7 evenly spaced values from -6 to 6; ``"0.5"`` -> [0.5]; ``"1,2"`` -> [1, 2]."""
    import numpy as np

    try:
        if ":" in text:
            lo, hi, n = text.split(":")
            return [float(v) for v in np.linspace(float(lo), float(hi), int(n))]
        return [float(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a float range: {text!r} (use LO:HI:COUNT or A,B,C)") from None


def add_model_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="digits-gen",
                   help="built-in id (digits-gen, digits-mem, digits-dup), allow-listed hub id, or a local diffusers folder")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: LOWDIM_DEVICE or auto)")


def cmd_serve(args) -> int:
    from ..ui.app import launch

    launch(host=args.host, port=args.port)
    return 0


def cmd_models(args) -> int:
    from ..diffusion.registry import list_models

    for e in list_models():
        state = "ready" if e.available else "unavailable"
        print(f"{e.model_id:34s} {e.kind:8s} {state:12s} {e.description}" + (f" ({e.detail})" if e.detail else ""))
    return 0


def cmd_sample(args) -> int:
    from ..data.images import make_grid, to_pil
    from ..diffusion import load_model

    check_range("--n", args.n, 1, 10_000)
    check_range("--steps", args.steps, 1, 1000)
    check_range("--guidance", args.guidance, 0.0, 30.0)
    model = load_model(args.model, args.device)
    cond = None
    if model.is_text:
        cond = model.encode_prompt(args.prompt or "", guidance_scale=args.guidance)
    elif args.prompt:
        raise UserError(f"{args.model} is unconditional; drop --prompt")
    images = model.generate(args.n, seed=args.seed, steps=args.steps, cond=cond, progress=True)
    out = Path(args.out)
    if out.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"):
        out.parent.mkdir(parents=True, exist_ok=True)
        up = max(1, 128 // model.image_shape[-1])
        make_grid(images, upscale=up).save(out)
        print(f"wrote {out} ({args.n} samples, seed {args.seed}, {args.steps} DDIM steps)")
    else:
        out.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(to_pil(images)):
            img.save(out / f"sample_{i:04d}.png")
        print(f"wrote {args.n} PNGs to {out}/ (seed {args.seed}, {args.steps} DDIM steps)")
    return 0


def cmd_train(args) -> int:
    from ..diffusion.registry import load_model
    from ..model_card import regime_evidence, write_card
    from ..training import TrainConfig, command_line, train
    from ..data.images import make_grid

    check_range("--steps", args.steps, 1, 10_000_000)
    check_range("--batch-size", args.batch_size, 1, 65_536)
    if args.data != "digits" and not Path(args.data).is_dir():
        raise UserError(f"--data must be 'digits' or a folder of images, got {args.data!r}")
    cfg = TrainConfig(data=args.data, subset=args.subset, duplicate=args.duplicate, copies=args.copies,
                      steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, out=args.out,
                      image_size=args.size, channels=args.channels, command=command_line())
    result = train(cfg)
    card = json.loads((result.out / "card.json").read_text())
    card["summary"] = args.summary or ""
    model = load_model(str(result.out), "cpu")
    if args.data == "digits" and args.evidence:
        evidence, samples = regime_evidence(model, card, n_samples=args.evidence_samples)
        card["evidence"] = evidence
        make_grid(samples[:64], upscale=4).save(result.out / "samples.png")
    else:
        make_grid(model.generate(64, seed=args.seed, steps=50), upscale=4).save(result.out / "samples.png")
    write_card(result.out, Path(args.out).name, card)
    print(f"wrote {result.out} (loss {result.final_loss:.4f}, {result.wall_time_s:.0f} s)")
    return 0


def cmd_card(args) -> int:
    from ..data.images import make_grid
    from ..diffusion.registry import load_model, resolve
    from ..model_card import regime_evidence, write_card

    _, folder = resolve(args.model)
    card = json.loads((folder / "card.json").read_text())
    if args.summary:
        card["summary"] = args.summary
    model = load_model(str(folder), "cpu")
    evidence, samples = regime_evidence(model, card, n_samples=args.evidence_samples)
    card["evidence"] = evidence
    make_grid(samples[:64], upscale=4).save(folder / "samples.png")
    write_card(folder, args.name or folder.name, card)
    print(json.dumps(evidence, indent=1))
    return 0


def register(sub) -> None:
    p = sub.add_parser("serve", help="start the web app")
    p.add_argument("--host", default=None, help="default: GRADIO_SERVER_NAME or 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default: GRADIO_SERVER_PORT or 7860")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("models", help="list models and whether they can be loaded here")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("sample", help="sample images with DDIM")
    add_model_arg(p)
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=50, help="DDIM steps")
    p.add_argument("--prompt", default=None, help="text models only")
    p.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (text models)")
    p.add_argument("--out", default="grid.png", help="a .png path (one grid) or a folder (one PNG per image)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("train", help="train a small pixel DDPM (diffusers UNet2DModel)")
    p.add_argument("--data", default="digits", help="'digits' or a folder of images")
    p.add_argument("--subset", type=int, default=None, help="train on this many training digits (seeded)")
    p.add_argument("--duplicate", type=int, default=0, help="number of training images to duplicate")
    p.add_argument("--copies", type=int, default=0, help="extra copies of each duplicated image")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--size", type=int, default=16, help="image size (folders are resized)")
    p.add_argument("--channels", type=int, default=1, choices=(1, 3))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--summary", default="", help="one line for the model card")
    p.add_argument("--no-evidence", dest="evidence", action="store_false", help="skip the regime evidence")
    p.add_argument("--evidence-samples", type=int, default=512)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("card", help="(re)measure a digits model's regime evidence and rewrite its card")
    add_model_arg(p)
    p.add_argument("--name", default=None)
    p.add_argument("--summary", default=None)
    p.add_argument("--evidence-samples", type=int, default=512)
    p.set_defaults(func=cmd_card)
