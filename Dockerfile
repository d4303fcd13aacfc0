# Self-hosting LowDim Lab (the Hugging Face Space itself uses the Gradio SDK, see README front matter).
#   CPU:  docker build -t lowdim-lab .
#   CUDA: docker build -t lowdim-lab --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 .
#         docker run --gpus all -p 7860:7860 lowdim-lab
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

RUN useradd -m -u 1000 user
USER user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    HF_HOME=/home/user/.cache/huggingface \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False \
    LOWDIM_PUBLIC=1 \
    PYTHONUNBUFFERED=1
WORKDIR $HOME/app

COPY --chown=user requirements.txt .
# the pinned torch from the chosen wheel index first (CPU by default, a CUDA index for GPUs)
RUN pip install --no-cache-dir --user torch==2.13.0 --index-url ${TORCH_INDEX} \
    && pip install --no-cache-dir --user -r requirements.txt

COPY --chown=user . .
EXPOSE 7860
# the app answers its page once the models are loaded; stdlib only (the slim image has no curl)
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('GRADIO_SERVER_PORT', '7860') + '/', timeout=8)" || exit 1
CMD ["python", "app.py"]
