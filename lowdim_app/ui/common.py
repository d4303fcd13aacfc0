"""Small helpers every tab uses: the feature adapter (admission, lanes, the GPU job), error translation,
model choices, cancellation."""
from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import math
import shutil
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import gradio as gr

from ..config import Runtime, from_environment
from ..data.images import ImageError, check_readable
from ..errors import UserError
from ..features.base import Cancelled, Progress
from ..features.settings import FileRef
from . import device
from .errors import to_gr_error
from .lanes import Lanes

log = logging.getLogger("lowdim_app.ui")


def _input_error(block_fn, inputs, err: Exception) -> str:
    """One line for an input gradio itself could not take (before any handler of ours runs)."""
    wanted = list(getattr(block_fn, "inputs", []))
    if not isinstance(inputs, (list, tuple)) or len(inputs) != len(wanted):
        got = len(inputs) if isinstance(inputs, (list, tuple)) else "no list"
        return f"this endpoint takes {len(wanted)} input values, got {got}"
    for block, value in zip(wanted, inputs):
        label = getattr(block, "label", None) or type(block).__name__
        if isinstance(block, (gr.Number, gr.Slider)):
            if value is None:
                return f"{label} is required (a number)"
            try:
                number = float(value)
            except (TypeError, ValueError):
                return f"{label} must be a number, got {str(value)[:60]!r}"
            if not math.isfinite(number):
                return f"{label} must be a finite number, got {value!r}"
    files = [getattr(b, "label", None) or type(b).__name__ for b in wanted
             if isinstance(b, (gr.File, gr.Image, gr.ImageEditor, gr.Gallery))]
    if files and ("validation error" in str(err).lower() or "file" in str(err).lower()):
        return (f"{' / '.join(files)}: not an uploaded file (upload it through the app, or send it with "
                "gradio_client.handle_file)")
    first = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
    return f"an input value could not be read ({type(err).__name__}: {first})"


MAX_ERROR_CHARS = 300


def _check_file_counts(block_fn, inputs) -> None:
    """Refuse more files than an input takes (its ``max_files``, else the settings' list bound) from the
    request's payload alone -- no file is moved, hashed or opened first."""
    from ..features.settings import MAX_ITEMS

    if not isinstance(inputs, (list, tuple)):
        return
    for block, value in zip(getattr(block_fn, "inputs", []), inputs):
        if isinstance(block, (gr.File, gr.Gallery)) and isinstance(value, (list, tuple)):
            limit = getattr(block, "max_files", None) or MAX_ITEMS
            if len(value) > limit:
                label = getattr(block, "label", None) or type(block).__name__
                raise gr.Error(f"{label}: at most {limit} files per request, got {len(value)}", print_exception=False)


class Blocks(gr.Blocks):
    """``gr.Blocks`` whose input handling never answers with gradio's generic "upstream" error: a
    value gradio cannot even preprocess (a string for a slider, a missing argument, a malformed
    file payload) becomes one ``gr.Error`` line."""

    async def preprocess_data(self, block_fn, inputs, state, explicit_call: bool = False):
        _check_file_counts(block_fn, inputs)      # before gradio moves or reads any of the files
        try:
            return await super().preprocess_data(block_fn, inputs, state, explicit_call)
        except gr.Error as err:   # gradio's own input errors echo the value: keep them one short line
            message = " ".join(str(getattr(err, "message", err)).split())
            if len(message) <= MAX_ERROR_CHARS:
                raise
            half = MAX_ERROR_CHARS // 2 - 2
            raise gr.Error(f"{message[:half]} ... {message[-half:]}", print_exception=False) from None
        except Exception as err:
            message = _input_error(block_fn, inputs, err)
            log.info("user error (input): %s", message)
            raise gr.Error(message, print_exception=False) from None


def handle_errors(fn):
    """Turn library errors into one-line ``gr.Error`` messages (works for generators too)."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as err:
                raise to_gr_error(err) from None
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            raise to_gr_error(err) from None
    return wrapper


FILE_TTL_S = 3600      # per-request files (downloads, reproduce-line inputs) live this long


def request_folder(prefix: str) -> Path:
    """A fresh folder for one request's files under ``<tmp>/lowdim-app``; folders older than
    ``FILE_TTL_S`` are deleted whenever a new one is made."""
    root = Path(tempfile.gettempdir()) / "lowdim-app"
    root.mkdir(exist_ok=True)
    now = time.time()
    for old in root.iterdir():
        try:
            if old.is_dir() and now - old.stat().st_mtime > FILE_TTL_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=root))


def intro(what: str, about: str, elem_id: str | None = None) -> gr.Markdown:
    """A tab's first lines: what to do and what to look at; the papers, equations and measurements behind
    it folded in an "About" line."""
    return gr.Markdown(f"{what}\n\n<details><summary>About</summary>\n\n{about}\n\n</details>",
                       elem_id=elem_id, elem_classes=["tab-intro"])


def own_name(upload, fallback: str, reserved=()) -> str:
    """The name a user knows an uploaded file by (gradio keeps it as the upload's base name): messages
    and reproduce lines then name the user's own file; ``fallback`` where it is not a usable file name or
    clashes with a ``reserved`` name of the request's other files."""
    name = Path(str(upload)).name
    return fallback if name in ("", ".", "..", *reserved) else name


def uploads(files, taken: set[str] | None = None) -> list[FileRef]:
    """Uploaded files (paths Gradio gives, one or a list) as settings values: read where the server keeps
    them, named by the user's own file names, so messages and the reproduce line name the user's copies.
    Names already in ``taken`` (the request's other files) get a ``-2``, ``-3``... suffix; ``taken``
    receives the names given."""
    items = [] if files is None else files if isinstance(files, list) else [files]
    taken = set() if taken is None else taken
    refs = []
    for f in items:
        path = f if isinstance(f, str) else getattr(f, "path", None) or f.name
        name = Path(path).name or "upload"
        stem, suffix, n = Path(name).stem, Path(name).suffix, 1
        while name in taken:
            n += 1
            name = f"{stem}-{n}{suffix}"
        taken.add(name)
        refs.append(FileRef(str(path), name))
    return refs


def runtime() -> Runtime:
    """The operator's settings (read from the environment by the adapter, passed to features)."""
    return from_environment()


def model_choices() -> list[str]:
    from ..diffusion.registry import BUILTIN_MODELS, hub_allow_list

    return list(BUILTIN_MODELS) + hub_allow_list(runtime())


def _offline() -> bool:
    import os

    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def model_dropdown_choices() -> list[tuple[str, str]]:
    """``(label, id)`` pairs for a model dropdown: a model that cannot be loaded here says so in its
    label (the value stays the plain id, so the API and the reproduce lines are unchanged)."""
    from ..diffusion.registry import list_models

    out = []
    for e in list_models(runtime()):
        label = e.model_id
        if not e.available:
            label += " (not available here)" if e.kind != "hub" or _offline() else " (not cached: downloads on first use)"
        out.append((label, e.model_id))
    return out


def unavailable_note(model_id) -> str:
    """A Markdown note for a listed model that cannot be loaded here ('' when it can, or is not listed)."""
    from ..diffusion.registry import download_command, list_models

    if not isinstance(model_id, str):   # the API may send anything; the run itself says what is wrong
        return ""
    for e in list_models(runtime()):
        if e.model_id == model_id.strip() and not e.available:
            if e.kind == "hub":
                how = (f"its weights are not in the local Hugging Face cache{' and this server is offline' if _offline() else ''}."
                       f" On a machine with internet run `{download_command(e.model_id)}` (same HF_HOME), "
                       "or pick a built-in model (they run offline on a CPU)")
            else:
                how = e.detail or "it is missing from this installation"
            return f"**{e.model_id} is not available here**: {how}."
    return ""


def load_model_checked(model_id):
    """Load a model named in a request: built-in, allow-listed hub id, or a local diffusers folder."""
    from ..diffusion.registry import load_model

    if not isinstance(model_id, str) or not model_id.strip():
        raise UserError("choose a model")
    return load_model(model_id.strip(), runtime=runtime())


def _first_message(progress, feature, settings) -> None:
    """A first progress line at once (the feature's own come after its model loads)."""
    if progress is None:
        return
    model = getattr(settings, "model", None)
    try:
        progress(0.0, desc=f"loading {model}" if isinstance(model, str) and model else f"{feature.name}: starting")
    except Exception:  # progress is best effort (e.g. outside a Gradio event)
        pass


LANES = Lanes()
_computing = {"n": 0}
_computing_lock = threading.Lock()


@contextmanager
def _computing_now() -> Iterator[int]:
    """Count this run among the computations the process does now (the threads rule divides by it)."""
    with _computing_lock:
        _computing["n"] += 1
        n = _computing["n"]
    try:
        yield n
    finally:
        with _computing_lock:
            _computing["n"] -= 1


def run_model_job(feature, settings, flag: "RunFlag", progress=None, **inputs):
    """One model action for a UI event: admitted by the feature runner (the operator's budget), in its
    lane (:mod:`.lanes`), its model loaded once in this process, then run by :func:`.device.run_job` --
    on the GPU in a ZeroGPU worker on a Space, in this thread elsewhere."""
    from ..features import runner

    rt = runtime()
    estimate = runner.admit(feature, settings, rt)

    def waiting(line: str) -> None:
        if progress is not None:
            try:
                progress(0.0, desc=line)
            except Exception:  # progress is best effort
                pass

    with LANES.admit(estimate.seconds, should_stop=flag, on_wait=waiting), _computing_now() as concurrent:
        _first_message(progress, feature, settings)
        device.preload(settings, rt)
        job = device.Job(feature.name, settings, rt, device.StopFile(flag.path), runner.gpu_seconds(estimate, rt),
                         concurrent=concurrent, inputs=inputs)
        out = device.run_job(job)
    if isinstance(out, device.Stopped):
        raise Cancelled()
    return out


HEARTBEAT_S = 0.25


def unchanged(n: int) -> tuple:
    """What a heartbeat yields: ``n`` outputs left as they are."""
    return tuple(gr.skip() for _ in range(n))


def _stream_lab(feature, settings, flag: "RunFlag", **inputs):
    """A live lab's partial results, computed in this process (labs need no GPU)."""
    from .. import threads

    with _computing_now() as concurrent:
        threads.apply(workers=concurrent)
        prog = Progress(device.show_progress, bars=True, should_stop=flag)
        yield from feature.stream(settings, runtime=runtime(), progress=prog, **inputs)


def run_in_worker(feature, settings, *, request, lab: str, progress=None, stream: bool = False, **inputs):
    """A UI event as a generator over the feature's results, computed in a worker thread.

    While the worker runs this yields ``None`` every quarter second (the client sees the run alive,
    and gradio can close the generator at any moment), and each result as it arrives (``stream``:
    every partial result of a live lab's ``feature.stream``, computed here; else the one result of a
    model action, :func:`run_model_job`). Cancel (button), ``job.cancel()`` from gradio_client (which
    closes this generator) and a closed tab (``demo.unload``) all set the run's stop flag, which the
    feature polls -- in a ZeroGPU worker process through the flag's file -- so the machine is freed
    within one polling interval."""
    import queue

    if progress is not None and stream:
        _first_message(progress, feature, settings)
    flag = STOP_FLAGS.start(request, lab)     # dropped by the worker when its computation has ended
    results: queue.Queue = queue.Queue()
    taken = threading.Event()     # the worker waits until each result is rendered (results may be mutable)
    done = object()

    def hand_over(item) -> None:
        results.put(item)
        while not taken.wait(HEARTBEAT_S):
            if flag():
                return
        taken.clear()

    def work():
        try:
            if stream:
                for res in _stream_lab(feature, settings, flag, **inputs):
                    hand_over(res)
                    if flag():
                        break
            else:
                hand_over(run_model_job(feature, settings, flag, progress=progress, **inputs))
        except Cancelled:
            pass
        except BaseException as err:   # re-raised in the request thread
            results.put(err)
        finally:
            STOP_FLAGS.finish(flag)
            results.put(done)

    # in a copy of the event's context: gr.Progress finds its event there (progress bars from the worker)
    worker = threading.Thread(target=contextvars.copy_context().run, args=(work,), name=f"lowdim-{lab}",
                              daemon=True)
    worker.start()
    # gradio sends an event's last yield as its result (what gradio_client returns): never end on a heartbeat.
    # A model action's worker ends right after its one result, so nothing is yielded until it has; a live
    # lab's next partial result may take long, so a heartbeat that came after the last one repeats it (unless
    # the run was stopped: then the cancelled state the UI shows stays).
    last, beat_since_last = None, False
    try:
        while True:
            try:
                item = results.get(timeout=None if (last is not None and not stream) else HEARTBEAT_S)
            except queue.Empty:
                yield None
                beat_since_last = last is not None
                continue
            if item is done:
                if beat_since_last and not flag():
                    yield last
                return
            if isinstance(item, BaseException):
                raise item
            yield item
            last, beat_since_last = item, False
            taken.set()
    except GeneratorExit:
        # Cancel, a closed tab or a disconnected client: the computation stops at its next poll (a step, a
        # network call); the flag stays registered until it has, without holding gradio's cancel request
        flag.set()
        raise


def run_cancel_buttons(prefix: str) -> tuple[gr.Button, gr.Button]:
    """The Run / Cancel pair of a live lab (``elem_id``: ``{prefix}-run`` / ``{prefix}-cancel``)."""
    return (gr.Button("Run", variant="primary", elem_id=f"{prefix}-run"),
            gr.Button("Cancel", elem_id=f"{prefix}-cancel"))


class RunFlag:
    """One run's stop flag: call it to ask whether to stop (a ``should_stop`` hook); ``set()`` stops.

    ``set()`` also creates the file at ``path``, so that a computation in another process (a ZeroGPU
    worker, given :class:`.device.StopFile` of that path) stops too; :meth:`close` removes it."""

    def __init__(self):
        self._event = threading.Event()
        self.path = str(_stop_folder() / uuid.uuid4().hex)
        self.key: tuple | None = None        # (session, lab, serial) while registered in StopFlags

    def __call__(self) -> bool:
        return self._event.is_set()

    is_set = __call__

    def set(self) -> None:
        self._event.set()
        try:
            Path(self.path).touch()
        except OSError:
            log.warning("cannot create the stop file %s", self.path)

    def close(self) -> None:
        Path(self.path).unlink(missing_ok=True)


def _stop_folder() -> Path:
    folder = Path(tempfile.gettempdir()) / "lowdim-app" / "stop"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class StopFlags:
    """Cooperative cancellation, one flag per run, found by (browser session, lab).

    Gradio's ``cancels=`` can only stop a generator between two yields and cannot stop a plain
    function at all, so a long computation would keep the CPU busy after Cancel. A running handler
    registers a fresh flag (:meth:`running`) and passes it to the library's ``should_stop`` hooks;
    Cancel sets the flags of the caller's own session and lab (:meth:`cancel`), a closed tab all
    flags of its session (:meth:`cancel_session`). Flags are dropped when their run ends.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._flags: dict[tuple, RunFlag] = {}
        self._next = 0

    @staticmethod
    def _session(request):
        return getattr(request, "session_hash", None)

    def start(self, request, lab: str) -> "RunFlag":
        """Register a fresh flag for a run of ``lab`` in the caller's session; :meth:`finish` drops it."""
        flag = RunFlag()
        with self._lock:
            self._next += 1
            flag.key = (self._session(request), lab, self._next)
            self._flags[flag.key] = flag
        return flag

    def finish(self, flag: "RunFlag") -> None:
        """The run's computation has ended (stopped by Cancel or not)."""
        if flag():   # Cancel, a cancelled request or a closed tab
            log.info("%s: run stopped by Cancel", flag.key[1])
        with self._lock:
            self._flags.pop(flag.key, None)
        flag.close()

    @contextmanager
    def running(self, request, lab: str):
        flag = self.start(request, lab)
        try:
            yield flag
        finally:
            self.finish(flag)

    def _set(self, match) -> int:
        with self._lock:
            flags = [f for k, f in self._flags.items() if match(k)]
        for f in flags:
            f.set()
        return len(flags)

    def cancel(self, request, lab: str) -> bool:
        """Stop this session's running ``lab`` runs; ``False`` if none is running."""
        session = self._session(request)
        return self._set(lambda k: k[0] == session and k[1] == lab) > 0

    def cancel_session(self, request) -> int:
        """Stop every run of the caller's session (the tab was closed); returns how many."""
        session = self._session(request)
        return self._set(lambda k: k[0] == session)

    def active(self) -> int:
        with self._lock:
            return len(self._flags)


STOP_FLAGS = StopFlags()


def wire_cancellable(buttons: tuple[gr.Button, gr.Button], fn, inputs, outputs, api_name: str, lab: str | None = None,
                     status=None, **click_kwargs):
    """Run ``fn`` on Run (as API ``api_name``); Cancel stops it and is not an API endpoint.

    ``fn`` should take a trailing ``request: gr.Request`` and run inside
    ``STOP_FLAGS.running(request, lab)`` (``lab`` defaults to ``api_name``) so that Cancel also
    stops its computation. With ``status`` (one of ``outputs``, a Markdown) a cancelled run says so there."""
    run, stop = buttons
    ev = run.click(fn, inputs, outputs, api_name=api_name, **click_kwargs)
    cancel_button(stop, [ev], lab or api_name, status=status, outputs=outputs)
    return ev


def lab_examples(inputs: dict, outputs, fn, variants: list[tuple[str, dict]], elem_id: str) -> gr.Examples:
    """Examples for a lab tab: each variant is the tab's defaults (``inputs``: name -> component, in
    ``fn``'s order) with some inputs changed, under its label; lazily cached -- the first click runs it
    once, later clicks show the stored result."""
    names = list(inputs)
    unknown = {n for _, changes in variants for n in changes} - set(names)
    if unknown:
        raise ValueError(f"examples name unknown inputs: {sorted(unknown)}")
    rows = [[changes.get(n, inputs[n].value) for n in names] for _, changes in variants]
    return gr.Examples(rows, list(inputs.values()), outputs, fn=fn, cache_examples=True, cache_mode="lazy",
                       example_labels=[label for label, _ in variants], elem_id=elem_id,
                       label="Examples (the first click runs one, later clicks show the stored result)")


CANCELLED = "**Cancelled**: the run was stopped and the machine is free. Press the button again to rerun."


def cancel_button(stop: gr.Button, events: list, lab: str, status=None, outputs=()) -> None:
    """``stop`` cancels ``events`` and stops the caller's runs of ``lab`` (not an API endpoint).

    With ``status`` (a Markdown), a stopped run says so there; ``outputs`` (the cancelled events' outputs)
    are then touched (left as they are) so that they show no error badge from the cancelled event."""
    def cancel(request: gr.Request):
        stopped = STOP_FLAGS.cancel(request, lab)
        return CANCELLED if stopped else gr.skip()

    ev = stop.click(cancel, None, status, cancels=events, api_name=False, queue=False, show_progress="hidden")
    if status is not None:
        touched = [status, *[o for o in outputs if o is not status]]

        def settle(note):
            time.sleep(0.3)   # after gradio has marked the cancelled event's outputs
            return (note, *[gr.update() for _ in touched[1:]])

        ev.then(settle, status, touched, api_name=False, queue=False, show_progress="hidden")


def _check_uploads(*files) -> None:
    """Our image checks on the uploaded bytes themselves: gradio decodes uploads leniently (a PNG cut
    off before its end chunk decodes) and hands the handler a re-encoded copy."""
    for f in files:
        source = getattr(f, "path", None) or (f if isinstance(f, (bytes, bytearray)) else None)
        if source is None:
            continue
        try:
            check_readable(source)
        except ImageError as err:
            name = getattr(f, "orig_name", None)
            message = str(err) if not name else f"{name}: {str(err).split(': ', 1)[-1]}"
            raise gr.Error(message, print_exception=False) from None


class Image(gr.Image):
    """``gr.Image`` that refuses an unreadable, cut-off or oversized upload with one line."""

    def preprocess(self, payload):
        if payload is not None:
            _check_uploads(payload)
        return super().preprocess(payload)


class ImageEditor(gr.ImageEditor):
    """``gr.ImageEditor`` that refuses an unreadable, cut-off or oversized background with one line."""

    def preprocess(self, payload):
        if payload is not None:
            data = self.blob_storage.get(payload.id) if payload.id is not None else payload
            if data is not None:
                _check_uploads(data.background, data.composite)
        return super().preprocess(payload)


class Plot(gr.Plot):
    """``gr.Plot`` whose rendering of a matplotlib figure holds the figures' lock (gradio renders it in
    the request's thread, concurrently with other requests' figures)."""

    def postprocess(self, value):
        from ..plots.common import RENDER_LOCK

        with RENDER_LOCK:
            return super().postprocess(value)

