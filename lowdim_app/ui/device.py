"""The GPU boundary of the app: one function decorated with ``spaces.GPU``, fed plain data.

On a ZeroGPU Space ``spaces.GPU`` runs the function in a worker process forked from the server and
pickles what crosses: the :class:`Job` in, the feature's result (or a one-line ``gr.Error``) out.
So a job holds only settings, the runtime, plain inputs (paths, arrays, images, CPU tensors), the
path of its stop file and the duration asked for -- no closures, locks, models or open files:

* progress is reported from inside the worker through ``gr.Progress`` (``spaces`` forwards it to the
  server's queue); tqdm bars are tracked the same way;
* Cancel reaches the worker through the stop file (:class:`StopFile`): the server creates it, the
  feature polls for it before every network call;
* models are loaded once in the server process (on the CPU, :func:`preload`); the forked worker
  inherits them and the registry moves them to the GPU there.

Off Spaces ``spaces.GPU`` returns the function unchanged, so the same code runs in-process.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from ..config import Runtime
from ..errors import UserError
from ..features.base import Cancelled, Progress
from ..features.settings import Settings

log = logging.getLogger("lowdim_app.ui")

ZERO_GPU = os.environ.get("SPACES_ZERO_GPU", "").strip().lower() in ("1", "t", "true")

try:  # ZeroGPU on Hugging Face Spaces; a no-op elsewhere
    import spaces  # type: ignore

    gpu = spaces.GPU
except Exception:  # pragma: no cover - depends on the host
    def gpu(fn=None, **_kwargs):
        return fn if fn is not None else (lambda f: f)


@dataclass(frozen=True)
class StopFile:
    """A run's stop request across processes: true once the file exists."""

    path: str

    def __call__(self) -> bool:
        return os.path.exists(self.path)


@dataclass(frozen=True)
class Job:
    """One feature run, as plain data."""

    feature: str                    # the feature's name (features.get)
    settings: Settings
    runtime: Runtime
    stop: StopFile
    seconds: int                    # the GPU duration asked for
    concurrent: int = 1             # computations running in this server now (threads rule)
    inputs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Stopped:
    """What a cancelled job returns (a result that says so, instead of an exception across processes)."""


def _duration(job: Job) -> int:
    return job.seconds


def show_progress(fraction, message) -> None:
    """Stages to the event's progress bar; a fresh ``gr.Progress`` finds the event through gradio's context
    (carried into the ZeroGPU worker by ``spaces``)."""
    import gradio as gr

    if fraction is not None and fraction >= 1.0:
        return   # the result itself says the run ended (a 100% bar would cover it until the event closes)
    try:
        gr.Progress()(fraction, desc=message)
    except Exception:  # progress is best effort (e.g. outside a Gradio event)
        pass


@gpu(duration=_duration)
def run_job(job: Job):
    """Run ``job`` (in the ZeroGPU worker on a Space, in this process elsewhere): the feature's result,
    :class:`Stopped` when it was cancelled, or a one-line ``gr.Error``."""
    from .. import threads
    from ..features import get
    from .errors import to_gr_error

    try:
        threads.apply(workers=job.concurrent)
        progress = Progress(show_progress, bars=True, should_stop=job.stop)
        progress.check()
        return get(job.feature).run(job.settings, runtime=job.runtime, progress=progress, **job.inputs)
    except Cancelled:
        return Stopped()
    except Exception as err:
        raise to_gr_error(err) from None


def preload(settings: Settings, runtime: Runtime) -> None:
    """Load the request's model in this (the server) process before the job runs, so that it is loaded
    once: on a ZeroGPU Space on the CPU (the forked worker inherits it and moves it to the GPU), else on
    the runtime's device. A model that cannot be loaded is left for the run to report."""
    model_id = getattr(settings, "model", None)
    if not isinstance(model_id, str) or not model_id.strip():
        return
    from ..diffusion.registry import load_model

    try:
        model = load_model(model_id.strip(), device="cpu" if ZERO_GPU else None, runtime=runtime)
    except UserError:
        return
    from ..data import classifier

    if ZERO_GPU and classifier.applies_to(model.image_shape):   # fitted once, here: the forked workers inherit
        classifier.digit_classifier()                            # it (the edit and steer results read it)


def preload_at_start(runtime: Runtime) -> list[str]:
    """The models the server loads at start-up (``runtime.preload``): on a ZeroGPU Space by default every
    model available here, on the CPU, so that every forked worker inherits them instead of reading them
    again; elsewhere none (they load on first use, in the same process). Returns the ids loaded."""
    from ..diffusion.registry import list_models, load_model

    choice = runtime.preload.strip().lower()
    if choice == "none" or (choice == "auto" and not ZERO_GPU):
        return []
    if choice == "auto":
        ids = [e.model_id for e in list_models(runtime) if e.available]
    else:
        ids = [m.strip() for m in runtime.preload.split(",") if m.strip()]
    cache = dataclasses.replace(runtime, model_cache=max(runtime.model_cache, len(ids) + 1))
    loaded = []
    for model_id in ids:
        try:
            load_model(model_id, device="cpu" if ZERO_GPU else None, runtime=cache)
            loaded.append(model_id)
        except UserError as err:
            log.warning("preload: %s", str(err).splitlines()[0])
    return loaded
