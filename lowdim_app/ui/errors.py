"""Errors as the app shows them: one ``gr.Error`` line (picklable, so it crosses the ZeroGPU worker)."""
from __future__ import annotations

import logging

import gradio as gr

from ..data.images import ImageError
from ..errors import UserError
from ..features.base import Cancelled

log = logging.getLogger("lowdim_app.ui")


def to_gr_error(err: BaseException) -> gr.Error:
    """A library error as one ``gr.Error`` line; an unexpected one is logged with its traceback and
    named, and the server keeps running."""
    if isinstance(err, gr.Error):
        return err
    if isinstance(err, (UserError, ImageError)):   # expected: one log line, no traceback
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        log.info("user error: %s", message[:300])
        return gr.Error(message, print_exception=False)
    if isinstance(err, Cancelled):
        return gr.Error("cancelled", print_exception=False)
    log.error("unexpected error in a UI handler", exc_info=err)
    first = str(err).splitlines()[0][:200] if str(err) else ""
    return gr.Error(f"Unexpected {type(err).__name__}: {first}. The app is still running; please report this.",
                    print_exception=False)
