"""The Gradio app: one tab per capability; tabs are thin adapters over the feature layer."""
from __future__ import annotations

import logging
import os

import gradio as gr

from .. import __version__

TITLE = "LowDim Lab"
INTRO = (f"# LowDim Lab <small>v{__version__}</small>\n"
         "The low-dimensional structure of diffusion models, made usable: Jacobian singular-vector editing, "
         "representation steering, memorization checks, and live theory labs. "
         "Every result here is reproducible from the CLI (`python -m lowdim_app ...`) with the seed shown.")

# Page-wide display rules: a tab's "About" line folded and quiet; captions of the image pairs wrap instead of
# being cut; an error is said once, in its toast, not again as a red badge on every output of the failed run;
# a download box waiting for its first file is one line high, not a drop zone; on a narrow window a lab's
# figure (and the Edit strip) goes under its inputs at full width (beside them it would be too small to read).
CSS = """
.tab-intro details { margin-top: 2px; color: var(--body-text-color-subdued); }
.tab-intro summary { cursor: pointer; font-weight: 600; }
#mem-nn .caption-label { white-space: normal; max-width: 100%; }
[data-testid='status-tracker'] span.error, [data-testid='status-tracker'] .clear-status { display: none; }
.compact-file:has([aria-label='Empty value']) { min-height: 0 !important; height: 64px !important; }
.compact-file [aria-label='Empty value'] { min-height: 0 !important; }
@media (max-width: 1000px) {
  .lab-row { flex-direction: column !important; }
  .lab-row > .column { width: 100% !important; max-width: 100% !important; }
}
"""

# The next action clears the last error: any button press (a run, a tab) closes the open error toasts, so an
# old message never sits over a new result or follows the visitor to another tab.
HEAD = """<script>
document.addEventListener("click", (event) => {
  const button = event.target.closest("button");
  if (!button || button.closest("[data-testid='toast-body']")) return;
  document.querySelectorAll("[data-testid='toast-close']").forEach((close) => close.click());
}, true);
</script>"""


def _import_libraries() -> None:
    """Import the libraries requests load lazily, once, before requests run side by side: diffusers'
    and transformers' lazy module loaders (and matplotlib's pyplot) fail when two threads import the same
    name at once ("cannot import name 'UNet2DModel' from 'diffusers'")."""
    import matplotlib.pyplot  # noqa: F401
    from diffusers import AutoencoderKL, UNet2DConditionModel, UNet2DModel  # noqa: F401
    from transformers import CLIPTextModel, CLIPTokenizer  # noqa: F401


def build_app() -> gr.Blocks:
    from . import edit_tab, memorization_tab, models_tab, molrg, steer_tab, theory

    from . import gradio_fixes
    from .common import Blocks

    _import_libraries()
    gradio_fixes.install()
    with Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        gr.Markdown(INTRO, elem_id="intro")
        with gr.Tabs(elem_id="tabs"):
            with gr.Tab("Models", id="models", elem_id="tab-models"):
                models_tab.build()
            with gr.Tab("Edit", id="edit", elem_id="tab-edit"):
                edit_tab.build()
            with gr.Tab("Memorization", id="memorization", elem_id="tab-memorization"):
                memorization_tab.build()
            with gr.Tab("Steer", id="steer", elem_id="tab-steer"):
                steer_tab.build()
            with gr.Tab("Theory labs", id="theory", elem_id="tab-theory"):
                with gr.Tabs(elem_id="theory-labs"):
                    molrg.build()
                    theory.build()
        demo.unload(_stop_session_runs)
    demo.queue(default_concurrency_limit=2, max_size=64)
    return demo


def _stop_session_runs(request: gr.Request) -> None:
    """A closed (or reloaded) tab stops every computation it started."""
    from .common import STOP_FLAGS

    if STOP_FLAGS.cancel_session(request):
        logging.getLogger("lowdim_app.ui").info("tab closed: its running requests were stopped")


def launch(host: str | None = None, port: int | None = None, **kwargs):
    """Start the server: ``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` (default 127.0.0.1:7860)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    host = host or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    port = int(port or os.environ.get("GRADIO_SERVER_PORT") or 7860)
    app_log = logging.getLogger("lowdim_app")
    if not app_log.handlers:   # server-side notes (e.g. "run stopped by Cancel") go to stderr
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        app_log.addHandler(handler)
        app_log.setLevel(logging.INFO)
    from .common import runtime
    from .device import preload_at_start

    rt = runtime()
    loaded = preload_at_start(rt)
    if loaded:
        app_log.info("models loaded at start-up (inherited by every GPU worker): %s", ", ".join(loaded))
    demo = build_app()
    kwargs.setdefault("max_file_size", rt.max_upload_mb * 1024 * 1024)   # refused before it is stored
    return demo.launch(server_name=host, server_port=port, ssr_mode=False, footer_links=["api"], css=CSS, head=HEAD,
                       **kwargs)
