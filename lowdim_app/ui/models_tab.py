"""The "Models" tab: pick a model, sample a grid with a seed and DDIM steps, read its card."""
from __future__ import annotations

import json

import gradio as gr

from ..diffusion.registry import DEFAULT_MODEL, list_models, resolve
from ..errors import UserError
from ..features.sample import FEATURE as SAMPLE
from ..features.sample import SampleSettings
from .common import (handle_errors, intro, model_dropdown_choices, run_in_worker, runtime, unavailable_note, unchanged,
                     wire_cancellable)
from .lanes import MODEL_EVENTS

MAX_STEPS = 1000


def models_table() -> list[list[str]]:
    return [[e.model_id, e.kind, "ready" if e.available else "unavailable", e.description, e.detail]
            for e in list_models(runtime())]


@handle_errors
def model_card(model_id: str) -> str:
    """Markdown model card: the built-in card (data, steps, loss, wall time, evidence) or a summary; for a
    listed model that cannot be loaded here, a note that says so and how to get it (not an error)."""
    note = unavailable_note(model_id)
    if note:
        return f"### {model_id.strip()}\n\n{note}"
    kind, folder = resolve(model_id, runtime())
    readme = folder / "README.md"
    if readme.is_file() and not readme.is_symlink():   # never follow a link out of the model folder
        text = readme.read_text()
        if text.startswith("---"):
            text = text.split("---", 2)[2]
        # the sample grid is shown by the app itself, not as a relative link
        return text.replace("![samples](samples.png)", "")
    card = json.loads((folder / "card.json").read_text()) if (folder / "card.json").is_file() else {}
    where = "a local folder" if kind == "folder" else "the Hugging Face hub" if kind == "hub" else "the built-in models"
    return f"### {model_id}\n\n{kind} model from {where}.\n\n" + (f"```json\n{json.dumps(card, indent=1)[:3000]}\n```" if card else "")


def _initial_card() -> str:
    try:
        return model_card(DEFAULT_MODEL)
    except gr.Error as err:
        return f"Model card unavailable: {err.message}"


@handle_errors
def sample(model_id: str, n, seed, steps, prompt: str = "", guidance=7.5, progress=gr.Progress(track_tqdm=True),
           request: gr.Request = None):
    """Sample ``n`` images with DDIM; yields the grid image and the CLI line that reproduces it."""
    settings = SampleSettings.from_raw(model=model_id, n=n, seed=seed, steps=steps, prompt=prompt, guidance=guidance)
    limit = runtime().max_samples
    if settings.n > limit:
        raise UserError(f"number of images must be at most {limit} here (the CLI has no such limit)")
    for result in run_in_worker(SAMPLE, settings, request=request, lab="sample", progress=progress):
        if result is None:
            yield unchanged(2)
        else:
            yield result.images()["grid"], f"Reproduce: `{result.reproduce(extra='--out grid.png')}`"


HUB_EXAMPLES = {"CompVis/stable-diffusion-v1-4": [4, 0, 25, "a photo of a red house", 7.5],
                "google/ddpm-cifar10-32": [16, 0, 50, "", 7.5], "google/ddpm-ema-celebahq-256": [4, 0, 50, "", 7.5]}


def _hub_examples() -> list[list]:
    """Example rows for the allow-listed hub models whose weights this server has (none offline without them)."""
    have = {e.model_id for e in list_models(runtime()) if e.kind == "hub" and e.available}
    return [[m, *row] for m, row in HUB_EXAMPLES.items() if m in have]


def build() -> None:
    intro("Pick a model and press **Sample**: a grid of images drawn with deterministic DDIM from the seed. Look at "
          "how the three built-in digit models differ (an example each, above): digits-mem reproduces its few "
          "training digits, digits-gen draws new ones; the card below says how each was trained and what was "
          "measured.",
          "Built-in models run offline on a CPU; allow-listed hub models (Stable Diffusion v1.4, DDPM CIFAR-10 and "
          "CelebA-HQ) need their weights in the local Hugging Face cache. A local diffusers folder works too. The "
          "same seed and settings give the same grid from the reproduce line.", elem_id="models-intro")
    examples_slot = gr.Column()   # the examples sit above the inputs
    with gr.Row():
        with gr.Column(scale=1, min_width=300, elem_id="models-controls"):
            model = gr.Dropdown(model_dropdown_choices(), value=DEFAULT_MODEL, label="Model", allow_custom_value=True,
                                elem_id="models-model", info="built-in id, allow-listed hub id, or a local diffusers folder")
            n = gr.Slider(1, runtime().max_samples, value=16, step=1, label="Number of images", elem_id="models-n")
            seed = gr.Number(value=0, precision=0, label="Seed", elem_id="models-seed")
            steps = gr.Slider(1, MAX_STEPS, value=50, step=1, label="DDIM steps", elem_id="models-steps")
            with gr.Accordion("Text models (Stable Diffusion)", open=False):
                prompt = gr.Textbox(label="Prompt", elem_id="models-prompt")
                guidance = gr.Slider(0, 30, value=7.5, step=0.5, label="Classifier-free guidance", elem_id="models-guidance")
            with gr.Row():
                go = gr.Button("Sample", variant="primary", elem_id="models-sample-btn", scale=3)
                stop = gr.Button("Cancel", elem_id="models-cancel", scale=1)
        with gr.Column(scale=2):
            grid = gr.Image(label="sample grid", type="pil", elem_id="models-grid", format="png", height=520,
                            interactive=False)
            repro = gr.Markdown(elem_id="models-reproduce", label="reproduce line")
    hub = _hub_examples()
    with examples_slot:
        gr.Examples([[m, 16, 0, 50, "", 7.5] for m in ("digits-gen", "digits-mem", "digits-dup")] + hub,
                    [model, n, seed, steps, prompt, guidance], [grid, repro], fn=sample, cache_examples=True,
                    cache_mode="lazy", label="Examples (the first click runs one, later clicks show the stored result)",
                    example_labels=["digits-gen (generalizes)", "digits-mem (memorizes)", "digits-dup (hybrid)"]
                    + [f"{r[0]}: {r[4] or 'unconditional'}" for r in hub],
                    elem_id="models-examples")
    with gr.Accordion("Model card", open=True):
        card = gr.Markdown(value=_initial_card(), elem_id="models-card", label="model card")
    with gr.Accordion("All models", open=False):
        gr.Dataframe(value=models_table(), headers=["model", "kind", "status", "description", "detail"],
                             interactive=False, elem_id="models-table")

    wire_cancellable((go, stop), sample, [model, n, seed, steps, prompt, guidance], [grid, repro], api_name="sample",
                     lab="sample", status=repro, show_progress_on=[grid],   # one progress bar, on the grid
                     **MODEL_EVENTS)
    model.change(model_card, model, card, api_name="model_card", show_progress="hidden")
    # the user's own pick only (.input): an example sets the model and its grid together
    model.input(_samples_stale, [model, grid], [grid, repro], api_name=False, queue=False, show_progress="hidden")


def _samples_stale(model_id, grid):
    """The grid shown was sampled from another model: cleared, with a note saying what to do."""
    note = unavailable_note(model_id)
    if grid is None:
        return gr.skip(), note
    return None, note or f"*Model changed to `{str(model_id or '').strip()}`: press **Sample** for its grid.*"
