"""The "Edit" tab: singular vectors of d x0_hat / d x_t and training-free edits (Wang et al. 2024, §4.2,
App. E.4; local edits and transfer: Chen et al. 2024, LOCO Edit). A thin adapter over
:mod:`lowdim_app.features.edit`.

Each request saves the image (and the painted mask, or the uploaded direction) it used as files in
its own temporary folder, runs the feature on those files, and offers them for download: the
reproduce line names exactly these files and, run in a folder holding them, gives the same strip.
"""
from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from ..config import REPO_ROOT
from ..diffusion.registry import BUILTIN_MODELS, DEFAULT_MODEL
from ..errors import UserError
from ..features.edit import DEFAULT_JVP_MODE, DEFAULT_MAX_PASSES, DEFAULT_TOL, JVP_MODES, KEEP_OUTSIDE
from ..features.edit import FEATURE as EDIT
from ..features.edit import (
    EXAMPLE_AMAX,
    EXAMPLE_COUNT,
    EXAMPLE_IMAGE,
    EXAMPLE_T,
    MAX_ALPHAS,
    MAX_K,
    MAX_PASSES,
    AlphaRange,
    EditSettings,
)
from ..features.settings import fmt
from ..plots.common import to_pil as fig_to_pil
from ..plots.editing import label_strip
from .common import (
    ImageEditor,
    cancel_button,
    handle_errors,
    intro,
    model_dropdown_choices,
    own_name,
    request_folder,
    run_in_worker,
    unchanged,
    unavailable_note,
)
from .lanes import MODEL_EVENTS

# the default example first (its path along v1 is semantic and continuous at the defaults below)
EXAMPLES = sorted((str(p) for p in (REPO_ROOT / "assets" / "examples").glob("digit_*.png")),
                  key=lambda p: (Path(p).name != EXAMPLE_IMAGE, p))
IMAGE_FILE, MASK_FILE, DIRECTION_FILE = "image.png", "mask.png", "direction.safetensors"
OUT_FOLDER = "edit_out"


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
        return _checked(np.asarray(bg)), mask
    return _checked(np.asarray(editor)), None


def _checked(arr: np.ndarray) -> np.ndarray:
    """Refuse what the image loader would refuse, before anything is written: too many pixels, NaN."""
    from ..data.images import MAX_PIXELS

    if arr.ndim < 2 or arr.shape[0] * arr.shape[1] > MAX_PIXELS:
        raise UserError(f"image too large or not an image (shape {arr.shape}; at most {MAX_PIXELS // 10**6} megapixels)")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise UserError("the image has NaN or infinite pixel values")
    return arr


def _uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    hi = float(arr.max()) if arr.size else 1.0
    return np.clip(arr.astype(np.float64) / (hi if hi > 1 else 1.0) * 255, 0, 255).astype(np.uint8)


def _save_inputs(editor, local: bool) -> tuple[Path, Path | None]:
    """The editor's image (and, for a local edit, its painted mask: white = edit here) as PNGs
    in a fresh per-request folder."""
    bg, mask = _editor_image_and_mask(editor)
    if local and mask is None:
        raise UserError("local edit: paint the region to edit on the image first (brush tool)")
    folder = request_folder("edit")
    image = folder / IMAGE_FILE
    Image.fromarray(_uint8(bg)).save(image)
    mask_path = None
    if local:
        mask_path = folder / MASK_FILE
        Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(mask_path)
    return image, mask_path


def _tidy(x):
    """Slider floats such as 0.7000000000000001 -> 0.7 (the value the run and the reproduce line use)."""
    return round(x, 6) if isinstance(x, float) and np.isfinite(x) else x


def _reproduce(result) -> tuple[str, list[str]]:
    """The CLI line for ``result`` and the files it names (to offer for download)."""
    s = result.settings
    placeholders, files = {"image": IMAGE_FILE}, [s.image]
    if s.mask:
        placeholders["mask"] = MASK_FILE
        files.append(s.mask)
    if s.load_direction:
        placeholders["load_direction"] = shlex.quote(Path(s.load_direction).name)
        files.append(s.load_direction)
    line = result.reproduce(placeholders=placeholders, extra=f"--out {OUT_FOLDER}")
    names = " and ".join(f"`{Path(f).name}`" for f in files)
    return (f"\n\nReproduce (in a folder with {names} from *Files for the reproduce line*; writes "
            f"`{OUT_FOLDER}/strip.png`): `{line}`"), files


def _edit_outputs(result):
    text, files = _reproduce(result)
    return _labelled(result), fig_to_pil(result.figure()), result.summary() + text, files


def _labelled(result):
    """The strip as the app shows it and the API returns it: α under each column, α = 0 framed, the rows
    named, the painted mask outlined on every tile of a local edit (the CLI's strip.png stays bare)."""
    s = result.settings
    mask = np.asarray(Image.open(s.mask)) > 0 if s.mask else None
    rows = ("saved direction" if s.load_direction else f"along v{s.direction}", "random")
    try:
        return label_strip(result.images()["strip"], result.alphas, rows=rows, mask=mask)
    except Exception:   # display only: never fail the run for a label
        return result.images()["strip"]


@handle_errors
def find_directions(editor, model_id, t_frac, k, steps, prompt, local, max_passes=DEFAULT_MAX_PASSES,
                    tol=DEFAULT_TOL, jvp=DEFAULT_JVP_MODE, progress=gr.Progress(track_tqdm=True),
                    request: gr.Request = None):
    """Invert the image to t and find the top-k directions within the pass budget (Advanced: max passes,
    tolerance, JVP mode); yields spectrum, v_i, u_i, info, state, the direction slider."""
    image, mask = _save_inputs(editor, bool(local))
    settings = EditSettings.from_raw(image=str(image), model=model_id, t=_tidy(t_frac), k=k, steps=steps,
                                     prompt=prompt or "", mask=str(mask) if mask else "",
                                     max_passes=DEFAULT_MAX_PASSES if max_passes is None else max_passes,
                                     tol=DEFAULT_TOL if tol is None else _tidy(tol), jvp=jvp or DEFAULT_JVP_MODE)
    for search in run_in_worker(EDIT, settings, request=request, lab="edit", progress=progress, stage="find"):
        if search is None:
            yield unchanged(6)
            continue
        # a slider needs minimum < maximum: with k = 1 it stays at 1, not interactive
        index = gr.update(minimum=1, maximum=max(settings.k, 2), value=1, interactive=settings.k > 1)
        state = {"settings": settings, "search": search}
        yield (fig_to_pil(search.figure()), _captions(search.gallery("v")), search.gallery("u"), _search_text(search),
               state, index)


def _captions(items: list) -> list:
    """Short gallery captions: ``v1  sigma=12.3`` -> ``v1 · σ 12.3``."""
    return [(im, " ".join(str(c).replace("sigma=", "σ ").split()).replace(" σ", " · σ")) for im, c in items]


def _search_text(search) -> str:
    """The search in a few words: where (t as the slider shows it, and the timestep), the numerical rank
    and what the search did (each fact once)."""
    s, found = search.settings, search.search
    where = f"at t = {fmt(s.t)} T (timestep {search.t})"
    if search.local:
        rank = "numerical rank: not defined for a local edit (the plot is the spectrum of the masked part of J_t)"
    elif found.numerical_rank is not None:
        rank = f"numerical rank r = {found.numerical_rank} of n = {search.n}"
    elif found.spectrum is None:
        rank = (f"numerical rank: not computed (the plot shows the top {len(found.singular_values)} singular "
                "values; the rank needs the full spectrum, found by the exact path for n <= 1024)")
    else:
        rank = "numerical rank: not computed"
    summary = found.summary
    method, status = str(summary.get("method") or ""), str(summary.get("status") or search.status)
    how = status if status.startswith(method) else f"{method}, {status}"
    calls = summary.get("batched_calls")
    text = (f"**{'Local (masked)' if search.local else 'Global'} directions** {where}: {rank}. "
            f"Search: {how}" + (f" in {calls} batched calls" if calls else "") + ".")
    if search.stopped_at_budget:
        text += (" **Stopped at the pass budget**: the directions are the best found so far; raise *max passes* "
                 "(Advanced) for converged ones.")
    if search.is_latent:
        text += " Latent model: v_i/u_i show the first 3 latent channels."
    return text + "\n\nNext: pick a direction below and press **Edit**."


def _state(state) -> dict:
    if not state or "search" not in state:
        raise UserError("press 'Find directions' first")
    return state


def _same_inputs(editor, settings) -> None:
    """The editor still holds the image (and painted mask) the directions were found for."""
    bg, mask = _editor_image_and_mask(editor)
    searched = np.asarray(Image.open(settings.image))
    if _uint8(bg).shape != searched.shape or not np.array_equal(_uint8(bg), searched):
        raise UserError("the image changed since 'Find directions'; find directions again")
    if settings.mask:
        painted = np.asarray(Image.open(settings.mask)) > 0
        if mask is None or mask.shape != painted.shape or not np.array_equal(mask, painted):
            raise UserError("the painted mask changed since 'Find directions'; find directions again")


def _stream_edit(settings, request, progress, **inputs):
    for result in run_in_worker(EDIT, settings, request=request, lab="edit", progress=progress, **inputs):
        yield unchanged(4) if result is None else _edit_outputs(result)


@handle_errors
def edit(editor, state, index, amax, count, seed, keep=KEEP_OUTSIDE, progress=gr.Progress(track_tqdm=True),
         request: gr.Request = None):
    """Edit strip for direction ``index`` (1-based) beside the random-direction control, the change
    vs alpha, the text with the reproduce line, and the files that line names; ``keep``: the share of
    a local edit's steps that keep the outside of the mask (blended sampling)."""
    state = _state(state)
    _same_inputs(editor, state["settings"])
    settings = state["settings"].replace(direction=index, seed=seed,
                                         keep_outside=KEEP_OUTSIDE if keep is None else _tidy(keep))
    settings = settings.replace(alpha=AlphaRange.from_raw(amax=_tidy(amax), count=count).alphas)
    yield from _stream_edit(settings, request, progress, search=state["search"])


@handle_errors
def save_direction(state, index):
    state = _state(state)
    settings = state["settings"].replace(direction=index)
    return str(state["search"].save_direction(settings.direction, request_folder("direction")))


STALE_IMAGE = ("*The image changed, so the earlier directions and edits were cleared: press **Find directions** "
               "for this image.*")
STALE_MASK = "*The painted mask changed, so the earlier local directions and edits were cleared: press **Find directions**.*"
STALE_STRIP = "*The image or mask changed since this strip was made: press **Edit** for a new one.*"


def fingerprint(editor) -> str | None:
    """A hash of the editor's image and painted mask (what a strip was made from)."""
    import hashlib

    try:
        bg, mask = _editor_image_and_mask(editor)
    except (UserError, ValueError):
        return None
    h = hashlib.sha1(str(bg.shape).encode() + _uint8(bg).tobytes())
    if mask is not None:
        h.update(np.packbits(mask).tobytes())
    return h.hexdigest()


def _matches_search(editor, settings) -> bool:
    """The editor holds the searched image, and a painted mask only if the search was local (with that mask)."""
    try:
        _same_inputs(editor, settings)
        return bool(settings.mask) or _editor_image_and_mask(editor)[1] is None
    except (UserError, OSError, ValueError):
        return False


def inputs_changed(editor, state, strip=None, made_from=None):
    """A new image (or mask) in the editor: results that no longer match it are cleared, with a note.

    Outputs: spectrum, v gallery, u gallery, info, state, strip, effect, edit info, files. The
    editor also reports events that change nothing (loading its image): ``made_from``, the fingerprint of
    the editor when the strip was made, keeps the strip then."""
    keep = gr.skip()
    if strip is None:
        stale = False
    elif made_from is not None:
        stale = made_from != fingerprint(editor)
    else:   # the strip's fingerprint is not recorded yet: compare with the search it was made from
        stale = bool(state and "settings" in state) and not _matches_search(editor, state["settings"])
    clear_strip = (None, None, STALE_STRIP, None) if stale else (keep,) * 4
    if not state or "search" not in state:
        return (keep,) * 5 + clear_strip
    try:
        _same_inputs(editor, state["settings"])
    except (UserError, OSError, ValueError) as err:
        note = STALE_MASK if "mask" in str(err) else STALE_IMAGE
        return (None, None, None, note, None) + clear_strip
    return (keep,) * 5 + clear_strip


def _model_changed(model_id):
    """The note for a model not available here; the prompt only for models that are not built-in (the
    built-in digit models are unconditional)."""

    return unavailable_note(model_id), gr.update(visible=str(model_id or "").strip() not in BUILTIN_MODELS)


@handle_errors
def apply_direction(editor, file, model_id, steps, prompt, amax, count, seed, progress=gr.Progress(track_tqdm=True),
                    request: gr.Request = None):
    """Transfer: apply a saved direction to the current image (same model, same t)."""
    if file is None:
        raise UserError("upload a direction file (.safetensors from 'Save direction')")
    image, _ = _save_inputs(editor, local=False)
    upload = Path(file if isinstance(file, str) else file.name)
    direction = image.parent / own_name(upload, DIRECTION_FILE, reserved=(IMAGE_FILE, MASK_FILE))
    shutil.copyfile(upload, direction)
    settings = EditSettings.from_raw(image=str(image), model=model_id, steps=steps, prompt=prompt or "",
                                     load_direction=str(direction), seed=seed,
                                     alpha=AlphaRange.from_raw(amax=_tidy(amax), count=count).alphas)
    yield from _stream_edit(settings, request, progress)


INTRO = ("**Find directions** for the image (a held-out digit is loaded), then pick a direction `v_i` and press "
         "**Edit**: the top row moves the image along `v_i`, the bottom row along a random direction of the same "
         "length. Look at the difference: a direction of the Jacobian changes the digit's shape, the random one "
         "barely changes anything. "
         "Paint on the image and tick *local edit* to edit only the painted region.")
ABOUT = ("The directions are the top right singular vectors `v_i` of the denoiser's Jacobian "
         "`J_t = d x0_hat / d x_t` at the image's DDIM inversion `x_t` (Wang et al. 2024, arXiv:2409.02426, §4.2, "
         "App. E.4); the spectrum's numerical rank is eq. 46 (η = 0.99). Local edits project onto the masked part "
         "of `J_t` (Chen et al. 2024, LOCO Edit, arXiv:2409.02374). `u_i = J v_i / σ_i` is what a direction "
         "changes in the predicted clean image. *Save direction* writes `v_i` as a file that *Apply a saved "
         "direction* (transfer) uses on another image.")


def build() -> None:
    intro(INTRO, ABOUT, elem_id="edit-intro")
    state = gr.State()
    with gr.Row(elem_classes=["lab-row"]):   # below 1000 px the strip goes under the search inputs, full width
        with gr.Column(scale=1, min_width=300, elem_id="edit-controls"):
            editor = ImageEditor(label="Image (paint a mask for a local edit)", type="numpy", elem_id="edit-image",
                                 height=260, value=EXAMPLES[0] if EXAMPLES else None,
                                 brush=gr.Brush(default_size=2, colors=["#ff3030"], color_mode="fixed"))
            model = gr.Dropdown(model_dropdown_choices(), value=DEFAULT_MODEL, label="Model", allow_custom_value=True,
                                elem_id="edit-model")
            model_note = gr.Markdown(elem_id="edit-model-note")
            with gr.Row():
                t_frac = gr.Slider(0.05, 0.95, value=EXAMPLE_T, step=0.05, label="edit time t / T", elem_id="edit-t")
                k = gr.Slider(1, MAX_K, value=5, step=1, label="k (directions)", elem_id="edit-k")
            with gr.Row():
                steps = gr.Slider(4, 1000, value=50, step=1, label="DDIM steps over [0, T]", elem_id="edit-steps")
                local = gr.Checkbox(label="local edit (painted mask)", elem_id="edit-local")
            prompt = gr.Textbox(label="Prompt (text models; the Jacobian is of the conditional x0_hat, no CFG)",
                                elem_id="edit-prompt", visible=DEFAULT_MODEL not in BUILTIN_MODELS)
            with gr.Accordion("Advanced", open=False, elem_id="edit-advanced"):
                with gr.Row():
                    max_passes = gr.Number(value=DEFAULT_MAX_PASSES, precision=0, minimum=2, maximum=MAX_PASSES,
                                           label="max passes (network evaluations of the search)",
                                           elem_id="edit-max-passes")
                    tol = gr.Number(value=DEFAULT_TOL, minimum=1e-6, maximum=1.0,
                                    label="tolerance (estimated subspace error)", elem_id="edit-tol")
                jvp = gr.Radio(list(JVP_MODES), value=DEFAULT_JVP_MODE, elem_id="edit-jvp",
                               label="JVP: central difference (low memory) or exact forward-mode AD")
            with gr.Row():
                find = gr.Button("Find directions", variant="primary", elem_id="edit-find-btn", scale=3)
                stop = gr.Button("Cancel", elem_id="edit-cancel", scale=1)
            if EXAMPLES:
                gr.Examples(EXAMPLES, inputs=editor, label="Held-out digits")
            with gr.Accordion("Save a direction, or apply a saved one (transfer)", open=False, elem_id="edit-transfer"):
                save = gr.Button("Save direction v_i", elem_id="edit-save-btn")
                saved = gr.File(label="saved direction", elem_id="edit-saved", visible=False, height=80)
                load = gr.File(label="a saved direction (.safetensors)", file_types=[".safetensors"],
                               elem_id="edit-load", height=100)
                apply = gr.Button("Apply the saved direction to this image", elem_id="edit-apply-btn")
        with gr.Column(scale=2, elem_id="edit-results"):
            info = gr.Markdown(elem_id="edit-info", label="search summary")
            with gr.Row(equal_height=False):
                spectrum = gr.Image(label="singular-value spectrum of J_t (numerical rank, eq. 46)",
                                    elem_id="edit-spectrum", height=230, show_label=False, scale=1,
                                    min_width=260)   # the figure has its title
                with gr.Column(scale=1, min_width=260):
                    vgal = gr.Gallery(label="v_i: edit directions (σ_i = singular value)", columns=8, height=104,
                                      fit_columns=False, object_fit="contain", elem_id="edit-v")
                    ugal = gr.Gallery(label="u_i = J v_i / σ_i: what each changes in x0_hat", columns=8,
                                      height=104, fit_columns=False, object_fit="contain", elem_id="edit-u")
            with gr.Row(elem_id="edit-edit-controls", equal_height=False):
                index = gr.Slider(1, MAX_K, value=1, step=1, label="direction v_i", elem_id="edit-index", min_width=140)
                amax = gr.Number(value=EXAMPLE_AMAX, label="α range A ([-A, A])", elem_id="edit-amax", min_width=100)
                count = gr.Slider(2, MAX_ALPHAS, value=EXAMPLE_COUNT, step=1, label="number of α", elem_id="edit-count",
                                  min_width=140)
                seed = gr.Number(value=0, precision=0, label="seed (random row)", elem_id="edit-seed", min_width=100)
                go = gr.Button("Edit", variant="primary", elem_id="edit-go-btn", min_width=90, scale=0, size="lg")
            keep = gr.Slider(0, 1, value=KEEP_OUTSIDE, step=0.05, elem_id="edit-keep", visible=False,
                             label="keep outside the mask (share of the steps on the unedited trajectory)")
            strip = gr.Image(label="edit strip: along v_i (top) and a random direction (bottom), α = 0 framed",
                             elem_id="edit-strip", format="png", interactive=False, show_label=False)
            edit_info = gr.Markdown(elem_id="edit-edit-info", label="edit summary and reproduce line")
            with gr.Row(equal_height=False):
                effect = gr.Image(label="change vs α", elem_id="edit-effect", height=220, show_label=False,
                                  min_width=260, scale=2)   # digit models: a second panel (the classifier)
                files = gr.File(label="files for the reproduce line", file_count="multiple", elem_id="edit-files",
                                min_width=260, elem_classes=["compact-file"])

    heavy = MODEL_EVENTS
    events = [find.click(find_directions, [editor, model, t_frac, k, steps, prompt, local, max_passes, tol, jvp],
                         [spectrum, vgal, ugal, info, state, index], api_name="find_directions",
                         show_progress_on=[spectrum], **heavy),
              go.click(edit, [editor, state, index, amax, count, seed, keep], [strip, effect, edit_info, files],
                       api_name="edit", show_progress_on=[strip], **heavy),
              apply.click(apply_direction, [editor, load, model, steps, prompt, amax, count, seed],
                          [strip, effect, edit_info, files], api_name="apply_direction", show_progress_on=[strip],
                          **heavy)]
    made_from = gr.State()   # the editor's fingerprint when the strip was made
    for ev in events[1:]:
        ev.then(fingerprint, editor, made_from, api_name=False, queue=False, show_progress="hidden")
    cancel_button(stop, events, "edit", status=info,
                  outputs=[spectrum, vgal, ugal, state, index, strip, effect, edit_info, files])
    # a stroke, an upload or an example (gradio 6's ImageEditor reports these as input/upload, not change)
    for event in (editor.input, editor.upload, editor.clear):
        event(inputs_changed, [editor, state, strip, made_from],
              [spectrum, vgal, ugal, info, state, strip, effect, edit_info, files],
              api_name=False, queue=False, trigger_mode="always_last", show_progress="hidden")
    local.change(lambda on: gr.update(visible=bool(on)), local, keep, api_name=False, queue=False,
                 show_progress="hidden")
    model.change(_model_changed, model, [model_note, prompt], api_name=False, queue=False, show_progress="hidden")
    save.click(save_direction, [state, index], saved, api_name="save_direction").success(
        lambda: gr.update(visible=True), None, saved, api_name=False, queue=False)   # no empty box before a save
