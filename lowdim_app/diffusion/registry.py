"""Which models exist and how to load them.

* built-in ids (``digits-gen``, ``digits-mem``, ``digits-dup``): folders in ``assets/models``;
* allow-listed hub ids (extend with ``LOWDIM_EXTRA_MODELS``): loaded from the local Hugging
  Face cache, or downloaded when the hub is reachable; safetensors only, never pickles,
  never remote code;
* a local diffusers folder (``model_index.json`` of a DDPM/DDIM or Stable Diffusion pipeline).
"""
from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import forksafe
from ..config import Runtime
from ..errors import ModelUnavailable, UserError
from .model import DiffusionModel

log = logging.getLogger("lowdim_app.models")

BUILTIN_MODELS = {
    "digits-gen": "pixel DDPM 1x16x16 trained on all training digits (generalizes)",
    "digits-mem": "pixel DDPM 1x16x16 trained on 16 training digits (memorizes)",
    "digits-dup": "pixel DDPM 1x16x16 trained on all digits plus a duplicated subset (hybrid)",
}
HUB_MODELS = {
    "google/ddpm-cifar10-32": "pixel DDPM 3x32x32 (CIFAR-10)",
    "google/ddpm-ema-celebahq-256": "pixel DDPM 3x256x256 (CelebA-HQ faces)",
    "CompVis/stable-diffusion-v1-4": "latent text-to-image (Stable Diffusion v1.4, 512 px)",
}
DEFAULT_MODEL = "digits-gen"
_HUB_PATTERNS = ["*.json", "*.txt", "*.safetensors", "tokenizer/*", "*.model"]
_HUB_SKIP = ["*.bin", "*.ckpt", "*.pt", "*.pth", "*.msgpack", "*.h5", "*.onnx", "*fp16*", "*non_ema*",
             "*.ema.*", "safety_checker/*"]


@dataclass(frozen=True)
class ModelEntry:
    model_id: str
    description: str
    kind: str  # builtin | hub | folder
    available: bool
    detail: str = ""


def _rt(runtime: Runtime | None) -> Runtime:
    return runtime if runtime is not None else Runtime()


def builtin_dir(model_id: str, runtime: Runtime | None = None) -> Path:
    return _rt(runtime).assets / "models" / model_id


def hub_allow_list(runtime: Runtime | None = None) -> list[str]:
    return list(HUB_MODELS) + [m for m in _rt(runtime).extra_models if m not in HUB_MODELS]


def _hub_cached(repo_id: str) -> bool:
    try:
        from huggingface_hub import scan_cache_dir

        return any(r.repo_id == repo_id for r in scan_cache_dir().repos)
    except Exception:
        return False


def list_models(runtime: Runtime | None = None) -> list[ModelEntry]:
    """All models the app offers, with whether each can be loaded right now."""
    entries = []
    for mid, desc in BUILTIN_MODELS.items():
        ok = (builtin_dir(mid, runtime) / "model_index.json").is_file()
        entries.append(ModelEntry(mid, desc, "builtin", ok, "" if ok else "missing from the assets folder"))
    for mid in hub_allow_list(runtime):
        cached = _hub_cached(mid)
        entries.append(ModelEntry(mid, HUB_MODELS.get(mid, "allow-listed hub model"), "hub", cached,
                                  "in the local cache" if cached else "not cached (download needs internet)"))
    return entries


def _is_pipeline_folder(path: Path) -> bool:
    return (path / "model_index.json").is_file()


def download_command(model_id: str) -> str:
    """The ``hf`` command (huggingface_hub >= 1.0) that puts exactly what this app loads into the cache."""
    include = " ".join(f'--include "{p}"' for p in ("*.json", "*.txt", "*.safetensors", "*.model"))
    exclude = " ".join(f'--exclude "{p}"' for p in ("*fp16*", "*non_ema*", "*.ema.*", "safety_checker/*"))
    return f"hf download {model_id} {include} {exclude}"


def _unavailable_message(model_id: str) -> str:
    return (f"{model_id} is not in the local Hugging Face cache and the hub cannot be reached. "
            f"On a machine with internet run `{download_command(model_id)}` (same HF_HOME), "
            "or pass a local diffusers folder as the model; the built-in models keep working.")


def _snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS, ignore_patterns=_HUB_SKIP,
                                      local_files_only=True))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise ModelUnavailable(_unavailable_message(repo_id))
    try:
        return Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS, ignore_patterns=_HUB_SKIP))
    except Exception:
        raise ModelUnavailable(_unavailable_message(repo_id)) from None


MAX_MODEL_ID = 500


def resolve(model_id: str, runtime: Runtime | None = None) -> tuple[str, Path]:
    """``(kind, folder)`` for an id or a path; raises :class:`UserError` for anything else.

    In public mode (``runtime.public``) only built-in and allow-listed ids are accepted, and the
    message for anything else is the same whether or not such a folder exists on the server."""
    rt = _rt(runtime)
    if not isinstance(model_id, str) or not model_id.strip():
        raise UserError("no model given")
    model_id = model_id.strip()
    choices = ", ".join(list(BUILTIN_MODELS) + hub_allow_list(rt))
    shown = model_id if len(model_id) <= 80 else model_id[:77] + "..."
    if model_id in BUILTIN_MODELS:
        path = builtin_dir(model_id, rt)
        if not _is_pipeline_folder(path):
            raise ModelUnavailable(f"built-in model {model_id} is missing from this installation; recreate it "
                                   "with the command in its model card (python -m lowdim_app train ...)")
        return "builtin", path
    if model_id in hub_allow_list(rt):
        return "hub", _snapshot(model_id)
    if rt.public:
        raise UserError(f"unknown model {shown!r}: this server offers {choices}")
    if len(model_id) > MAX_MODEL_ID or "\x00" in model_id:
        raise UserError(f"unknown model {shown!r}: not a model id or folder path")
    path = Path(model_id).expanduser()
    if path.is_dir():
        if not _is_pipeline_folder(path):
            raise UserError(f"{shown} is not a diffusers pipeline folder (no model_index.json)")
        return "folder", path
    raise UserError(f"unknown model {shown!r}: use one of {choices} "
                    "or a local diffusers folder (other hub ids: set LOWDIM_EXTRA_MODELS)")


def unet_config(model_id: str, runtime: Runtime | None = None) -> dict | None:
    """The U-Net's config of a model without loading any weights (``None`` if it cannot be read)."""
    from .layout import inspect, read_json

    try:
        _, path = resolve(model_id, runtime)
        return read_json(inspect(path, model_id).unet_dir / "config.json", "the U-Net config")
    except UserError:
        return None


def _load_from_folder(model_id: str, path: Path, device: torch.device) -> DiffusionModel:
    """Load a checked pipeline folder (subfolder or flat layout, safetensors only)."""
    from .layout import inspect, read_json

    layout = inspect(path, model_id)
    card = read_json(path / "card.json", f"{model_id}: the model card") if (path / "card.json").is_file() else {}
    try:
        if layout.kind == "latent":  # Stable Diffusion style
            from diffusers import AutoencoderKL, UNet2DConditionModel
            from transformers import CLIPTextModel, CLIPTokenizer

            dtype = weights_dtype(latent=True, device=device)
            common = dict(use_safetensors=True, torch_dtype=dtype)
            unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", **common)
            vae = AutoencoderKL.from_pretrained(path, subfolder="vae", **common)
            text_encoder = CLIPTextModel.from_pretrained(path / "text_encoder", use_safetensors=True, dtype=dtype)
            tokenizer = CLIPTokenizer.from_pretrained(path / "tokenizer")
            return DiffusionModel(model_id, unet.to(device), layout.scheduler_config, vae=vae.to(device),
                                  text_encoder=text_encoder.to(device), tokenizer=tokenizer, device=device,
                                  dtype=dtype, source=str(path), card=card)
        from diffusers import UNet2DModel

        unet = UNet2DModel.from_pretrained(layout.unet_dir, use_safetensors=True)
        return DiffusionModel(model_id, unet.to(device), layout.scheduler_config, device=device,
                              source=str(path), card=card)
    except (OSError, EnvironmentError, ValueError, KeyError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelUnavailable(f"cannot load {model_id}: {type(err).__name__}: {first[:200]}") from None


def weights_dtype(latent: bool, device: torch.device) -> torch.dtype:
    """Latent (Stable Diffusion) weights run in half precision on a GPU; everything else in float32."""
    return torch.float16 if latent and device.type == "cuda" else torch.float32


class _ModelCache:
    """Loaded models by (id, device), least recently used dropped first.

    A model asked for on a GPU that this process already holds on the CPU is moved there instead of
    being read again: in a process forked from the one that loaded it (a ZeroGPU worker) in place --
    the server's copy is untouched -- and otherwise as a copy."""

    def __init__(self):
        self._lock = forksafe.Lock()
        self._models: "OrderedDict[tuple[str, str], DiffusionModel]" = OrderedDict()
        self._owner: dict[tuple[str, str], int] = {}          # the process that loaded each entry
        self._loading: dict[tuple[str, str], forksafe.Lock] = {}
        self._capacity = 0

    def get(self, model_id: str, device: torch.device, runtime: Runtime) -> DiffusionModel:
        key = (str(model_id).strip(), str(device))
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            lock = self._loading.setdefault(key, forksafe.Lock())
        with lock:  # one load per model even when requests race
            with self._lock:
                if key in self._models:
                    return self._models[key]
            start = time.perf_counter()
            model = self._moved_from_cpu(key, device)
            how = "moved from the CPU copy" if model is not None else "read from disk"
            if model is None:
                kind, path = resolve(key[0], runtime)
                model = _load_from_folder(key[0], path, device)
            log.info("model %s on %s: %s in %.2f s (process %d)", key[0], key[1], how,
                     time.perf_counter() - start, os.getpid())
            with self._lock:
                self._models[key] = model
                self._owner[key] = os.getpid()
                self._capacity = max(self._capacity, runtime.model_cache)   # preloading may raise it
                while len(self._models) > max(1, self._capacity):
                    old, _ = self._models.popitem(last=False)
                    self._owner.pop(old, None)
            return model

    def _moved_from_cpu(self, key: tuple[str, str], device: torch.device) -> DiffusionModel | None:
        if device.type == "cpu":
            return None
        cpu_key = (key[0], "cpu")
        with self._lock:
            base = self._models.get(cpu_key)
            inherited = self._owner.get(cpu_key) != os.getpid()
            if base is not None and inherited:      # its tensors move: the CPU entry goes
                del self._models[cpu_key]
                self._owner.pop(cpu_key, None)
        if base is None:
            return None
        return base.moved_to(device, weights_dtype(base.vae is not None, device), copy=not inherited)

    def loaded(self) -> list[tuple[str, str]]:
        """The (id, device) keys held now, oldest first."""
        with self._lock:
            return list(self._models)


_CACHE = _ModelCache()


def load_model(model_id: str = DEFAULT_MODEL, device: str | torch.device | None = None,
               runtime: Runtime | None = None) -> DiffusionModel:
    """Load (or reuse) a model by built-in id, allow-listed hub id, or local folder path.

    ``runtime``: the operator's settings (allow-list, assets, device); built-in defaults if omitted.
    Loaded models are read-only and shared; per-request state never lives on them.
    """
    rt = _rt(runtime)
    if rt.public and str(model_id).strip() not in list(BUILTIN_MODELS) + hub_allow_list(rt):
        resolve(model_id, rt)   # raises the public-mode message (never serve a cached folder model)
    dev = torch.device(device) if device is not None else rt.torch_device
    return _CACHE.get(model_id, dev, rt)
