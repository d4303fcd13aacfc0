"""The "Models" tab: pick a model, sample a grid with a seed and DDIM steps, read its card."""
from __future__ import annotations

import json
import shlex

import gradio as gr

from ..config import settings
from ..data.images import make_grid
from ..diffusion.registry import DEFAULT_MODEL, list_models, resolve
from .common import as_float, as_int, gpu, handle_errors, load_model_checked, model_choices

MAX_STEPS = 1000


def models_table() -> list[list[str]]:
    return [[e.model_id, e.kind, "ready" if e.available else "unavailable", e.description, e.detail]
            for e in list_models()]


@handle_errors
def model_card(model_id: str) -> str:
    """Markdown model card: the built-in card (data, steps, loss, wall time, evidence) or a summary."""
    kind, folder = resolve(model_id)
    readme = folder / "README.md"
    if readme.is_file():
        text = readme.read_text()
        if text.startswith("---"):
            text = text.split("---", 2)[2]
        # the sample grid is shown by the app itself, not as a relative link
        return text.replace("![samples](samples.png)", "")
    card = json.loads((folder / "card.json").read_text()) if (folder / "card.json").is_file() else {}
    return f"### {model_id}\n\n{kind} model from `{folder}`.\n\n" + (f"```json\n{json.dumps(card, indent=1)[:3000]}\n```" if card else "")


def _initial_card() -> str:
    try:
        return model_card(DEFAULT_MODEL)
    except gr.Error as err:
        return f"Model card unavailable: {err.message}"


def reproduce_line(model_id: str, n: int, seed: int, steps: int, prompt: str, guidance: float, is_text: bool) -> str:
    cmd = f"python -m lowdim_app sample --model {shlex.quote(model_id)} --n {n} --seed {seed} --steps {steps}"
    if is_text:
        cmd += f" --prompt {shlex.quote(prompt or '')} --guidance {guidance:g}"
    return f"Reproduce: `{cmd} --out grid.png`"


@gpu
def _generate(model, n, seed, steps, cond):
    return model.generate(n, seed=seed, steps=steps, cond=cond, progress=True)


@handle_errors
def sample(model_id: str, n, seed, steps, prompt: str = "", guidance=7.5, progress=gr.Progress(track_tqdm=True)):
    """Sample ``n`` images with DDIM; returns the grid image and the CLI line that reproduces it."""
    n = as_int("number of images", n, 1, settings().max_samples)
    seed = as_int("seed", seed, 0, 2**31 - 1)
    steps = as_int("DDIM steps", steps, 1, MAX_STEPS)
    guidance = as_float("guidance scale", guidance, 0.0, 30.0)
    model = load_model_checked(model_id)
    cond = model.encode_prompt(prompt or "", guidance_scale=guidance) if model.is_text else None
    images = _generate(model, n, seed, steps, cond)
    up = max(1, 128 // model.image_shape[-1])
    grid = make_grid(images, upscale=up)
    return grid, reproduce_line(model_id.strip(), n, seed, steps, prompt, guidance, model.is_text)


def build() -> None:
    gr.Markdown("Pick a model, sample a grid (DDIM, seeded), and read the model's card. "
                "Built-in models run offline on a CPU; hub models need their weights in the local cache.")
    with gr.Row():
        with gr.Column(scale=1):
            model = gr.Dropdown(model_choices(), value=DEFAULT_MODEL, label="Model", allow_custom_value=True,
                                elem_id="models-model", info="built-in id, allow-listed hub id, or a local diffusers folder")
            n = gr.Slider(1, settings().max_samples, value=16, step=1, label="Number of images", elem_id="models-n")
            seed = gr.Number(value=0, precision=0, label="Seed", elem_id="models-seed")
            steps = gr.Slider(1, MAX_STEPS, value=50, step=1, label="DDIM steps", elem_id="models-steps")
            with gr.Accordion("Text models (Stable Diffusion)", open=False):
                prompt = gr.Textbox(label="Prompt", elem_id="models-prompt")
                guidance = gr.Slider(0, 30, value=7.5, step=0.5, label="Classifier-free guidance", elem_id="models-guidance")
            go = gr.Button("Sample", variant="primary", elem_id="models-sample-btn")
        with gr.Column(scale=2):
            grid = gr.Image(label="Samples", type="pil", elem_id="models-grid", format="png", height=520)
            repro = gr.Markdown(elem_id="models-reproduce")
    with gr.Accordion("Model card", open=True):
        card = gr.Markdown(value=_initial_card, elem_id="models-card")
    with gr.Accordion("All models", open=False):
        gr.Dataframe(value=models_table, headers=["model", "kind", "status", "description", "detail"],
                             interactive=False, elem_id="models-table")

    go.click(sample, [model, n, seed, steps, prompt, guidance], [grid, repro], api_name="sample",
             concurrency_limit=1, concurrency_id="model")
    model.change(model_card, model, card, api_name="model_card")
