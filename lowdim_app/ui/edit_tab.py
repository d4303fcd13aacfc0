"""The "Edit" tab: singular vectors of d x0_hat / d x_t and training-free edits (seed 000 §4.2, App. E.4)."""
from __future__ import annotations

import shlex
import tempfile
from pathlib import Path

import gradio as gr
import numpy as np
import torch

from ..config import REPO_ROOT
from ..data.images import load_image, make_grid
from ..diffusion.registry import DEFAULT_MODEL
from ..errors import UserError
from ..methods import editing
from ..plots.common import new_figure
from ..plots.common import to_pil as fig_to_pil
from ..plots.editing import direction_images, spectrum_figure
from .common import as_float, as_int, gpu, handle_errors, load_model_checked, model_choices

EXAMPLES = sorted(str(p) for p in (REPO_ROOT / "assets" / "examples").glob("digit_*.png"))
MAX_K = 16


def _editor_image_and_mask(editor) -> tuple[np.ndarray, np.ndarray | None]:
    """Split an ImageEditor value into the background image and a painted mask (any drawn pixel)."""
    if editor is None:
        raise UserError("upload an image (or pick an example) first")
    if isinstance(editor, dict):
        bg = editor.get("background")
        if bg is None:
            bg = editor.get("composite")
        if bg is None:
            raise UserError("upload an image (or pick an example) first")
        mask = None
        for layer in editor.get("layers") or []:
            arr = np.asarray(layer)
            if arr.ndim == 3 and arr.shape[-1] == 4 and (arr[..., 3] > 0).any():
                m = arr[..., 3] > 0
                mask = m if mask is None else (mask | m)
        return np.asarray(bg), mask
    return np.asarray(editor), None


def _image_tensor(model, bg: np.ndarray) -> torch.Tensor:
    return load_image(bg, model.image_shape[1:], channels=model.image_shape[0])


def _mask_tensor(model, mask: np.ndarray) -> torch.Tensor:
    from PIL import Image, ImageOps

    img = ImageOps.fit(Image.fromarray(mask.astype(np.uint8) * 255), model.image_shape[1:][::-1])
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)


@gpu
def _find(model, image, t, k, steps, cond, mask):
    return editing.find_directions(model, image, t, k=k, total_steps=steps, cond=cond, mask=mask, progress=True)


@handle_errors
def find_directions(editor, model_id, t_frac, k, steps, prompt, local, progress=gr.Progress(track_tqdm=True)):
    """Invert the image to t and find the top-k directions; returns spectrum, v_i, u_i, info, state."""
    t_frac = as_float("edit time t/T", t_frac, 0.05, 0.95)
    k = as_int("k", k, 1, MAX_K)
    steps = as_int("DDIM steps", steps, 4, 1000)
    bg, mask = _editor_image_and_mask(editor)
    model = load_model_checked(model_id)
    t = model.timestep_from_fraction(t_frac)
    cond = model.encode_prompt(prompt or "", guidance_scale=1.0) if model.is_text else None
    mask_t = None
    if local:
        if mask is None:
            raise UserError("local edit: paint the region to edit on the image first (brush tool)")
        mask_t = _mask_tensor(model, mask)
    search = _find(model, _image_tensor(model, bg), t, k, steps, cond, mask_t)
    spec = search.spectrum if search.spectrum is not None else search.singular_values
    fig = spectrum_figure(spec.numpy(), search.numerical_rank,
                          title=f"{model.model_id}: spectrum of J_t at t = {t} ({t_frac:.2f}T)")
    up = max(1, 96 // model.sample_shape[-1])
    v_imgs = [(im, f"v{i + 1}  sigma={float(s):.3g}") for i, (im, s) in
              enumerate(zip(_pil_list(direction_images(search.V), up), search.singular_values))]
    u_imgs = [(im, f"u{i + 1}") for i, im in enumerate(_pil_list(direction_images(search.U), up))]
    rank = f"numerical rank r = {search.numerical_rank} of n = {model.n}" if search.numerical_rank is not None else \
        "numerical rank: needs the full spectrum (exact path, n <= 1024)"
    info = (f"**{'Local (masked)' if local else 'Global'} directions** at t = {t}: {rank}. "
            f"Search: `{search.summary.get('method')}`, {search.summary.get('passes', '?')} network passes."
            + (" Latent model: v_i/u_i show the first 3 latent channels." if model.is_latent else ""))
    state = {"model_id": model.model_id, "t": t, "steps": steps, "prompt": prompt or "", "search": search,
             "local": bool(local)}
    return fig_to_pil(fig), v_imgs, u_imgs, info, state, gr.update(maximum=len(search.directions), value=1)


def _pil_list(T: torch.Tensor, up: int):
    from ..data.images import to_pil

    return to_pil(T, upscale=up)


def _effect_figure(alphas, along, rand, label):
    fig, ax = new_figure(5.5, 3.0)
    ax.plot(alphas, along, "o-", label=label)
    ax.plot(alphas, rand, "s--", label="random unit direction (control)")
    ax.set_xlabel("alpha")
    ax.set_ylabel("RMS pixel change vs alpha = 0")
    ax.legend(fontsize=8)
    return fig_to_pil(fig)


@gpu
def _strips(model, inv, vector, alphas, seed):
    along = editing.edit_strip(model, inv, vector, alphas, progress=True)
    control = editing.edit_strip(model, inv, editing.random_direction(model.sample_shape, seed), alphas)
    return along, control


def _alphas(amax, count) -> list[float]:
    amax = as_float("alpha range A", amax, 0.1, editing.ALPHA_LIMIT)
    count = as_int("number of alphas", count, 2, editing.MAX_ALPHAS)
    return [float(a) for a in np.linspace(-amax, amax, count)]


def _render_edit(model, inv, direction, alphas, seed, label):
    along, control = _strips(model, inv, direction.vector, alphas, seed)
    up = max(1, 96 // model.image_shape[-1])
    strip = make_grid(torch.cat([along, control]), nrow=len(alphas), upscale=up)
    ea, er = editing.edit_effect(along, alphas), editing.edit_effect(control, alphas)
    ratio = np.mean(ea) / max(np.mean(er), 1e-12)
    text = (f"Top row: {label}; bottom row: a random unit direction (the paper's control), alphas "
            f"{alphas[0]:+.1f} .. {alphas[-1]:+.1f}. Mean change along the direction / along random: **{ratio:.1f}x**.")
    return strip, _effect_figure(alphas, ea, er, label), text


@handle_errors
def edit(editor, state, index, amax, count, seed, progress=gr.Progress(track_tqdm=True)):
    """Edit strip for direction ``index`` (1-based) beside the random-direction control."""
    if not state or "search" not in state:
        raise UserError("press 'Find directions' first")
    search = state["search"]
    index = as_int("direction", index, 1, len(search.directions))
    seed = as_int("seed", seed, 0, 2**31 - 1)
    alphas = _alphas(amax, count)
    model = load_model_checked(state["model_id"])
    d = search.directions[index - 1]
    strip, fig, text = _render_edit(model, search.inversion, d, alphas, seed, f"v{index} ({d.kind})")
    cmd = (f"python -m lowdim_app edit IMAGE --model {shlex.quote(state['model_id'])} --t {state['t'] / (model.num_train_timesteps - 1):.2f} "
           f"--k {len(search.directions)} --direction {index} --alpha={alphas[0]:g}:{alphas[-1]:g}:{len(alphas)} "
           f"--steps {state['steps']} --seed {seed}" + (" --mask MASK.png" if state.get("local") else ""))
    return strip, fig, text + f"\n\nReproduce: `{cmd}`"


@handle_errors
def save_direction(state, index):
    if not state or "search" not in state:
        raise UserError("press 'Find directions' first")
    index = as_int("direction", index, 1, len(state["search"].directions))
    d = state["search"].directions[index - 1]
    path = Path(tempfile.mkdtemp(prefix="lowdim-dir-")) / f"{d.model_id.replace('/', '_')}_t{d.t}_v{index}.safetensors"
    return str(d.save(path))


@handle_errors
def apply_direction(editor, file, model_id, steps, prompt, amax, count, seed, progress=gr.Progress(track_tqdm=True)):
    """Transfer: apply a saved direction to the current image (same model, same t)."""
    if file is None:
        raise UserError("upload a direction file (.safetensors from 'Save direction')")
    d = editing.Direction.load(file if isinstance(file, str) else file.name)
    model = load_model_checked(model_id)
    d.check_compatible(model)
    steps = as_int("DDIM steps", steps, 4, 1000)
    seed = as_int("seed", seed, 0, 2**31 - 1)
    alphas = _alphas(amax, count)
    bg, _ = _editor_image_and_mask(editor)
    cond = model.encode_prompt(prompt or d.prompt or "", guidance_scale=1.0) if model.is_text else None
    inv = editing.invert(model, _image_tensor(model, bg), d.t, steps, cond, progress=True)
    return _render_edit(model, inv, d, alphas, seed, f"saved direction v{d.index} (t = {d.t})")


def build() -> None:
    gr.Markdown("Edit an image by moving its inverted noisy version `x_t` along the top right singular vectors `v_i` "
                "of the denoiser's Jacobian `J_t = d x0_hat / d x_t` (seed 000 §4.2), then sampling back with DDIM. "
                "Paint on the image and tick *local edit* for a LOCO-style masked edit.")
    state = gr.State()
    with gr.Row():
        with gr.Column(scale=1):
            editor = gr.ImageEditor(label="Image (paint a mask for a local edit)", type="numpy", elem_id="edit-image",
                                    height=320, value=EXAMPLES[0] if EXAMPLES else None)
            if EXAMPLES:
                gr.Examples(EXAMPLES, inputs=editor, label="Held-out digits")
            model = gr.Dropdown(model_choices(), value=DEFAULT_MODEL, label="Model", allow_custom_value=True,
                                elem_id="edit-model")
            with gr.Row():
                t_frac = gr.Slider(0.05, 0.95, value=0.7, step=0.05, label="edit time t / T", elem_id="edit-t")
                k = gr.Slider(1, MAX_K, value=5, step=1, label="k (directions)", elem_id="edit-k")
            with gr.Row():
                steps = gr.Slider(4, 1000, value=50, step=1, label="DDIM steps over [0, T]", elem_id="edit-steps")
                local = gr.Checkbox(label="local edit (painted mask)", elem_id="edit-local")
            prompt = gr.Textbox(label="Prompt (text models; the Jacobian is of the conditional x0_hat, no CFG)",
                                elem_id="edit-prompt")
            find = gr.Button("Find directions", variant="primary", elem_id="edit-find-btn")
        with gr.Column(scale=2):
            info = gr.Markdown(elem_id="edit-info")
            spectrum = gr.Image(label="Singular values and numerical rank (eta = 0.99)", elem_id="edit-spectrum",
                                height=300)
            with gr.Row():
                vgal = gr.Gallery(label="v_i (edit directions)", columns=5, height=180, elem_id="edit-v")
                ugal = gr.Gallery(label="u_i = J v_i / sigma_i", columns=5, height=180, elem_id="edit-u")
    with gr.Row():
        with gr.Column(scale=1):
            index = gr.Slider(1, MAX_K, value=1, step=1, label="direction v_i", elem_id="edit-index")
            with gr.Row():
                amax = gr.Number(value=6, label="alpha range A ([-A, A])", elem_id="edit-amax")
                count = gr.Slider(2, editing.MAX_ALPHAS, value=7, step=1, label="number of alphas", elem_id="edit-count")
            seed = gr.Number(value=0, precision=0, label="seed of the random control", elem_id="edit-seed")
            go = gr.Button("Edit", variant="primary", elem_id="edit-go-btn")
            save = gr.Button("Save direction", elem_id="edit-save-btn")
            saved = gr.File(label="Saved direction", elem_id="edit-saved")
            load = gr.File(label="Apply a saved direction (transfer)", file_types=[".safetensors"], elem_id="edit-load")
            apply = gr.Button("Apply saved direction to this image", elem_id="edit-apply-btn")
        with gr.Column(scale=2):
            strip = gr.Image(label="Edits along v_i (top) and along a random direction (bottom)", elem_id="edit-strip")
            effect = gr.Image(label="Change vs alpha", elem_id="edit-effect", height=260)
            edit_info = gr.Markdown(elem_id="edit-edit-info")

    find.click(find_directions, [editor, model, t_frac, k, steps, prompt, local], [spectrum, vgal, ugal, info, state, index],
               api_name="find_directions", concurrency_limit=1, concurrency_id="model")
    go.click(edit, [editor, state, index, amax, count, seed], [strip, effect, edit_info], api_name="edit",
             concurrency_limit=1, concurrency_id="model")
    save.click(save_direction, [state, index], saved, api_name="save_direction")
    apply.click(apply_direction, [editor, load, model, steps, prompt, amax, count, seed], [strip, effect, edit_info],
                api_name="apply_direction", concurrency_limit=1, concurrency_id="model")
