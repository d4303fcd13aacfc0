"""Hugging Face Space entry point: `python app.py` serves LowDim Lab.

Honours GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (default 127.0.0.1:7860; the Docker image sets 0.0.0.0).
"""
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # before torch loads: lowdim_app.threads explains why

from lowdim_app.ui.app import build_app, launch  # noqa: E402

demo = build_app  # for tooling that looks for a Blocks factory

if __name__ == "__main__":
    launch()
