"""CLI: `steer` — representation steering with a strength sweep (seed 004 eq. 11)."""
from __future__ import annotations

import json
from pathlib import Path


from ..errors import UserError
from .core import add_model_arg, float_range


def _concept(model, spec: str, n: int, seed: int):
    """'digit:K' | 'prompt:TEXT' | FOLDER -> (images, baseline or None, cond or None, target class or None)."""
    from ..data.images import load_folder
    from ..methods import steering as st

    if spec.startswith("digit:"):
        if model.is_text or model.image_shape != (1, 16, 16):
            raise UserError("digit:K concepts are for the built-in digit models")
        k = int(spec.split(":", 1)[1])
        imgs, base = st.digit_concept(k, n)
        return imgs, base, None, k
    if spec.startswith("prompt:"):
        if not model.is_text:
            raise UserError("prompt: concepts need a text model (e.g. CompVis/stable-diffusion-v1-4)")
        text = spec.split(":", 1)[1]
        cond = model.encode_prompt(text, guidance_scale=st.SD_RECIPE["guidance_scale"])
        imgs = model.generate(n, seed=seed, steps=st.SD_RECIPE["steps"], cond=cond, progress=True)
        return imgs, None, model.encode_prompt(text), None
    if Path(spec).is_dir():
        imgs, _, _ = load_folder(spec, model.image_shape[1], model.image_shape[0])
        return imgs, None, None, None
    raise UserError("--concept must be digit:K, prompt:TEXT or a folder of images")


def _source(model, spec: str, t_start: int, steps: int, cond):
    from ..data.images import load_image

    if spec.startswith("seed:"):
        return model.randn(1, int(spec.split(":", 1)[1]))
    img = load_image(spec, model.image_shape[1:], channels=model.image_shape[0])
    return model.ddim_invert(model.encode(img), t_start, steps, cond)


def cmd_steer(args) -> int:
    import torch

    from ..data.images import make_grid
    from ..diffusion import load_model
    from ..methods import steering as st

    model = load_model(args.model, args.device)
    layers, recipe = st.default_recipe(model)
    layers = args.layers.split(",") if args.layers else layers
    kind = args.kind or recipe["kind"]
    concept, baseline, cbar, target = _concept(model, args.concept, args.concept_n, args.seed)
    sv = st.steering_vector(model, concept, layers, args.t_tilde, kind, cbar, baseline, args.seed)
    cond = None
    if model.is_text:
        cond = model.encode_prompt(args.prompt or "", guidance_scale=args.guidance or recipe["guidance_scale"])
    t_start = model.num_train_timesteps - 1
    steps = args.steps or recipe["steps"]
    window = recipe["window"] if args.window is None else args.window
    x0 = _source(model, args.source, t_start, steps, cond)
    imgs = st.steered_samples(model, x0, sv, args.strengths, t_start, steps, window, cond, progress=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    up = max(1, 96 // model.image_shape[-1])
    make_grid(imgs, nrow=len(args.strengths), upscale=up).save(out / "strip.png")
    report = {"model": model.model_id, "layers": layers, "kind": kind, "t_tilde": sv.t_tilde, "steps": steps,
              "window": window, "strengths": args.strengths, "vector_norms": sv.norms(), "concept": args.concept,
              "source": args.source}
    if args.concept.startswith("prompt:"):
        from ..methods.clip_score import load_clip

        text, scorer = args.concept.split(":", 1)[1], load_clip()
        if scorer is not None:
            report["concept_strength"] = {"measure": f"CLIP cosine similarity to {text!r} ({scorer.source})",
                                          "values": scorer.similarity(imgs, text).round(4).tolist()}
    if target is not None:
        report["concept_strength"] = {"measure": f"classifier probability of digit {target}",
                                      "values": st.concept_strength_digits(imgs, target).round(4).tolist()}
        if args.contrast:
            src = st.contrast_sources(model, avoid_class=target)
            rows = []
            for label, (i, noise) in src.items():
                im = st.steered_samples(model, noise, sv, args.strengths, t_start, steps, window)
                report.setdefault("contrast", {})[label] = {
                    "sample_index": i, "values": st.concept_strength_digits(im, target).round(4).tolist()}
                rows.append(im)
            if rows:
                make_grid(torch.cat(rows), nrow=len(args.strengths), upscale=up).save(out / "contrast.png")
    (out / "steer.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out}/strip.png and steer.json" + (f"; concept strength {report['concept_strength']['values']}"
                                                       if "concept_strength" in report else ""))
    return 0


def register(sub) -> None:
    p = sub.add_parser("steer", help="steer generation by adding a representation vector (seed 004 eq. 11)")
    add_model_arg(p)
    p.add_argument("--concept", required=True, help="digit:K (built-in), prompt:TEXT (text models) or a folder")
    p.add_argument("--concept-n", type=int, default=100, help="images in the concept set (paper: 100)")
    p.add_argument("--source", default="seed:0", help="seed:N (from noise) or an image (inverted with DDIM)")
    p.add_argument("--strengths", type=float_range, default=float_range("0:8:5"), help="LO:HI:COUNT or a list")
    p.add_argument("--kind", choices=("channel", "spatial"), default=None, help="default: the model's recipe")
    p.add_argument("--layers", default=None, help="comma-separated module names (default: the recipe's)")
    p.add_argument("--t-tilde", type=int, default=None, help="feature timestep (default 10)")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default 40)")
    p.add_argument("--window", type=int, default=None, help="steer during the last W steps (default 20)")
    p.add_argument("--prompt", default="", help="text models: the source prompt")
    p.add_argument("--guidance", type=float, default=None, help="text models: CFG scale (default 3.5)")
    p.add_argument("--contrast", action="store_true", help="built-in models: also steer a memorized and a generalized sample")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="steer_out")
    p.set_defaults(func=cmd_steer)
