"""One object for a loaded diffusion model, pixel (``UNet2DModel``) or latent text-to-image
(Stable Diffusion). Everything downstream (methods, CLI, UI) talks to this, never to diffusers.

Notation (Wang et al. 2024, §2.1): ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``,
``x0_hat(x_t, t, c) = (x_t - sqrt(1 - abar_t) eps_theta(x_t, t, c)) / sqrt(abar_t)``
(the posterior-mean / DAE view, Wang et al. 2024, eq. 5-6), converted from ``v_prediction`` and
``sample`` outputs as well. For latent models ``x`` is the scaled VAE latent.

DDIM (eta = 0) sampling and inversion share one timestep grid (:meth:`DiffusionModel.timesteps`),
so inversion followed by sampling is the same deterministic map run backwards.
Nothing here mutates shared state: no scheduler object is stepped, hooks are context managers.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import forksafe
from ..errors import UserError, check_range
from . import attention


@dataclass
class Conditioning:
    """Prompt embeddings for a text-conditioned U-Net.

    ``cond``: ``B x L x D`` (or ``1 x L x D``, broadcast over the batch); ``uncond``: the
    empty/negative prompt, used when ``guidance_scale != 1`` (classifier-free guidance).
    """

    cond: torch.Tensor
    uncond: torch.Tensor | None = None
    guidance_scale: float = 1.0
    prompt: str = ""

    @property
    def uses_cfg(self) -> bool:
        return self.uncond is not None and self.guidance_scale != 1.0


StepCallback = Callable[[int, int], None]
# called after DDIM step i with the new point; returns the point the next step starts from
AfterStep = Callable[[int, torch.Tensor], torch.Tensor]
# VAE encode/decode slice: 8 images at 512 px. SD's VAE adds 0.56 (decode) / 0.63 (encode) GiB per 512 px
# image (float32 CPU peak RSS, bench/jacobian_memory.py), so a slice is about 5 GiB.
VAE_PIXELS_PER_CALL = 8 * 512 * 512


def _trace_profile(unet, sample_shape, is_text: bool, cross_dim) -> dict[str, float]:
    """See :meth:`DiffusionModel.activation_profile`: one forward of a meta-device twin of ``unet``."""
    from diffusers.models.attention_processor import Attention

    with torch.device("meta"):
        twin = type(unet).from_config(unet.config).eval()
    tot = {"activations": 0.0, "attention": 0.0, "largest": 0.0}

    def leaf(module, _inputs, out):
        if isinstance(out, torch.Tensor) and not any(True for _ in module.children()):
            b = out.numel() * 4.0
            tot["activations"] += b
            tot["largest"] = max(tot["largest"], b)

    def attn(module, args, kwargs, _out):
        hs = args[0] if args else kwargs.get("hidden_states")
        ehs = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
        lq = hs.shape[2] * hs.shape[3] if hs.ndim == 4 else hs.shape[1]
        lk = ehs.shape[1] if ehs is not None else lq
        tot["attention"] += float(module.heads) * lq * lk * 4.0

    handles = [m.register_forward_hook(leaf) for m in twin.modules()]
    handles += [m.register_forward_hook(attn, with_kwargs=True) for m in twin.modules() if isinstance(m, Attention)]
    kwargs = {}
    if cross_dim is not None and is_text:
        kwargs["encoder_hidden_states"] = torch.zeros(1, 77, int(cross_dim), device="meta")
    elif cross_dim is not None:
        kwargs["encoder_hidden_states"] = torch.zeros(1, 1, int(cross_dim), device="meta")
    try:
        with torch.no_grad():
            twin(torch.zeros(1, *sample_shape, device="meta"), torch.tensor([500], device="meta"), **kwargs)
    finally:
        for h in handles:
            h.remove()
    return tot


class DiffusionModel:
    """A loaded model. Build with :func:`lowdim_app.diffusion.registry.load_model` (an id or a folder),
    :meth:`from_pipeline` (a diffusers pipeline object) or :meth:`from_unet` (its parts)."""

    def __init__(self, model_id: str, unet, scheduler_config: dict, *, vae=None, text_encoder=None,
                 tokenizer=None, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 source: str = "", card: dict | None = None):
        self.model_id = model_id
        self.unet = unet.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False) if vae is not None else None
        self.text_encoder = text_encoder.eval().requires_grad_(False) if text_encoder is not None else None
        self.tokenizer = tokenizer
        self.scheduler_config = dict(scheduler_config)
        self.device = torch.device(device)
        self.dtype = dtype
        self.source = source
        self.card = card or {}
        self._unet_fp32 = None          # the float32 U-Net copy, only while a float32_unet() context holds it
        self._fp32_users = 0
        self._fp32_lock = forksafe.Lock()
        self._profile = None            # activation_profile(), filled once under _profile_lock
        self._profile_lock = forksafe.Lock()
        self.alphas_cumprod = self._alphas_cumprod(self.scheduler_config).to(torch.float64)
        self.num_train_timesteps = int(self.scheduler_config.get("num_train_timesteps", 1000))
        self.prediction_type = self.scheduler_config.get("prediction_type", "epsilon")
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise UserError(f"unsupported prediction type {self.prediction_type!r}")
        cfg = self.unet.config
        size = cfg.sample_size if isinstance(cfg.sample_size, (tuple, list)) else (cfg.sample_size, cfg.sample_size)
        self.sample_shape: tuple[int, int, int] = (int(cfg.in_channels), int(size[0]), int(size[1]))
        if self.vae is not None:
            f = 2 ** (len(self.vae.config.block_out_channels) - 1)
            self.image_shape = (3, self.sample_shape[1] * f, self.sample_shape[2] * f)
            self.latent_scale = float(getattr(self.vae.config, "scaling_factor", 0.18215))
        else:
            self.image_shape = self.sample_shape
            self.latent_scale = 1.0

    def moved_to(self, device: torch.device | str, dtype: torch.dtype | None = None, *, copy: bool = True) -> "DiffusionModel":
        """This model on ``device`` (weights in ``dtype``, default: unchanged). ``copy=False`` moves the
        modules themselves (only where nothing else uses them, e.g. in a forked worker process)."""
        import copy as copying

        dtype = dtype or self.dtype

        def move(module):
            if module is None:
                return None
            module = (copying.deepcopy(module) if copy else module).to(device=device)
            first = next(module.parameters(), None)
            return module.to(dtype=dtype) if first is not None and first.dtype != dtype else module

        return DiffusionModel(self.model_id, move(self.unet), self.scheduler_config, vae=move(self.vae),
                              text_encoder=move(self.text_encoder), tokenizer=self.tokenizer, device=device,
                              dtype=dtype, source=self.source, card=self.card)

    # ------------------------------------------------------- from objects
    @classmethod
    def from_pipeline(cls, pipe: Any, model_id: str | None = None) -> "DiffusionModel":
        """Wrap a diffusers pipeline object you already hold (nothing is loaded, nothing is copied).

        Works for pixel pipelines (``DDPMPipeline``, ``DDIMPipeline``: ``pipe.unet`` a ``UNet2DModel``) and
        latent text-to-image pipelines (``StableDiffusionPipeline``: ``unet``, ``vae``, ``text_encoder``,
        ``tokenizer``), with any scheduler that has DDPM alphas (``DDPMScheduler``, ``DDIMScheduler``,
        ``PNDMScheduler``, ``EulerDiscreteScheduler``, ...): only its config (betas, prediction type) is
        read -- the scheduler is never stepped, sampling here is DDIM on the model's own grid.

        The model keeps the pipeline's modules, device and dtype: a half-precision U-Net on a GPU samples
        in half precision, and only Jacobian work (edit, rank) makes a float32 copy of the U-Net, for the
        duration of the request (:meth:`float32_unet`). The modules are switched to ``eval()`` and their
        parameters to ``requires_grad_(False)`` (in place, as :meth:`__init__` does for loaded models).

        Args:
            pipe: a diffusers pipeline with ``unet`` and ``scheduler`` (and ``vae``, ``text_encoder``,
                ``tokenizer`` for latent text models).
            model_id: the name results, saved directions and steering vectors carry (a saved direction
                only applies to a model of the same id). Default: the folder or hub id the pipeline was
                loaded from (``pipe.name_or_path``), else the pipeline class and the object's address.

        Returns:
            A :class:`DiffusionModel` sharing the pipeline's weights.

        Examples:
            >>> from diffusers import DDPMPipeline
            >>> pipe = DDPMPipeline.from_pretrained("google/ddpm-cifar10-32")   # doctest: +SKIP
            >>> model = DiffusionModel.from_pipeline(pipe)                     # doctest: +SKIP
            >>> lowdim_app.sample(model, n=4, steps=20).samples.shape          # doctest: +SKIP
            torch.Size([4, 3, 32, 32])
        """
        for need in ("unet", "scheduler"):
            if getattr(pipe, need, None) is None:
                raise UserError(f"{type(pipe).__name__} has no {need}: need a DDPM/DDIM or Stable Diffusion "
                                "pipeline (or use DiffusionModel.from_unet)")
        if model_id is None:
            name = getattr(pipe, "name_or_path", None) or getattr(getattr(pipe, "config", {}), "_name_or_path", None)
            model_id = str(name) if name else f"{type(pipe).__name__}@{id(pipe.unet):x}"
        return cls.from_unet(pipe.unet, pipe.scheduler, vae=getattr(pipe, "vae", None),
                             text_encoder=getattr(pipe, "text_encoder", None),
                             tokenizer=getattr(pipe, "tokenizer", None), model_id=model_id,
                             source=f"a {type(pipe).__name__} object")

    @classmethod
    def from_unet(cls, unet: Any, scheduler: Any, vae: Any = None, text_encoder: Any = None, tokenizer: Any = None, *,
                  model_id: str | None = None, source: str = "") -> "DiffusionModel":
        """Wrap a U-Net and a scheduler (and, for latent text models, the VAE, text encoder and tokenizer).

        Nothing is copied: the model runs ``unet`` on its own device and in its own dtype; Jacobian work
        makes a float32 copy only while it runs when the U-Net is in half precision (:meth:`float32_unet`).
        The modules are put in ``eval()`` mode with ``requires_grad_(False)`` (in place).

        Args:
            unet: a diffusers ``UNet2DModel`` (pixel) or ``UNet2DConditionModel`` (text-conditioned latent).
            scheduler: a scheduler object with DDPM alphas (``alphas_cumprod``), or its config dict.
            vae: ``AutoencoderKL`` of a latent model (``None``: the U-Net works on pixels).
            text_encoder: CLIP text encoder of a text-conditioned U-Net.
            tokenizer: its tokenizer.
            model_id: the name results carry (default: the U-Net class and the object's address).
            source: where the model came from, for messages.

        Returns:
            A :class:`DiffusionModel` sharing the given modules.

        Examples:
            >>> from diffusers import DDPMScheduler, UNet2DModel
            >>> unet = UNet2DModel(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(8, 16),
            ...                    down_block_types=("DownBlock2D", "DownBlock2D"),
            ...                    up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
            >>> model = DiffusionModel.from_unet(unet, DDPMScheduler(num_train_timesteps=1000))
            >>> model.sample_shape
            (1, 16, 16)
        """
        cfg = getattr(unet, "config", None)
        if cfg is None or not hasattr(cfg, "in_channels") or not hasattr(cfg, "sample_size"):
            raise UserError(f"{type(unet).__name__} is not a diffusers U-Net (no config with in_channels/sample_size)")
        conditional = getattr(cfg, "cross_attention_dim", None) is not None and \
            type(unet).__name__ != "UNet2DModel"
        if conditional and (text_encoder is None or tokenizer is None):
            raise UserError(f"{type(unet).__name__} is text-conditioned: give its text_encoder and tokenizer too")
        if (text_encoder is None) != (tokenizer is None):
            raise UserError("give the text encoder and the tokenizer together")
        config = dict(scheduler) if isinstance(scheduler, dict) else dict(getattr(scheduler, "config", {}) or {})
        if not config:
            raise UserError(f"{type(scheduler).__name__} has no config: need a diffusers scheduler")
        ours = cls._alphas_cumprod(config)
        theirs = getattr(scheduler, "alphas_cumprod", None)
        if not isinstance(scheduler, dict):
            if theirs is None or tuple(torch.as_tensor(theirs).shape) != tuple(ours.shape) or not torch.allclose(
                    torch.as_tensor(theirs, dtype=torch.float64).cpu(), ours.to(torch.float64), rtol=1e-4, atol=1e-6):
                raise UserError(f"{type(scheduler).__name__} has no DDPM alphas (alphas_cumprod from its betas); "
                                "LowDim Lab needs a DDPM-family scheduler (DDPM, DDIM, PNDM, Euler, DPM-Solver, ...)")
        device = next(unet.parameters()).device
        dtype = next(unet.parameters()).dtype
        for name, mod in (("vae", vae), ("text_encoder", text_encoder)):
            if mod is not None and next(mod.parameters()).device != device:
                raise UserError(f"the {name} is on {next(mod.parameters()).device} but the U-Net on {device}: "
                                "move the pipeline to one device first (pipe.to(device))")
        mid = model_id or f"{type(unet).__name__}@{id(unet):x}"
        return cls(mid, unet, config, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, device=device,
                   dtype=dtype, source=source or f"a {type(unet).__name__} object")

    # ------------------------------------------------------------------ basics
    @staticmethod
    def _alphas_cumprod(config: dict) -> torch.Tensor:
        from diffusers import DDPMScheduler

        keys = {k: v for k, v in config.items() if not k.startswith("_")}
        sched = DDPMScheduler.from_config(keys)
        return sched.alphas_cumprod.clone()

    @property
    def is_latent(self) -> bool:
        return self.vae is not None

    @property
    def is_text(self) -> bool:
        return self.text_encoder is not None

    @property
    def n(self) -> int:
        """Dimension of the diffusion space (C*H*W of the U-Net input)."""
        return int(np.prod(self.sample_shape))

    def abar(self, t) -> torch.Tensor:
        """``abar_t`` for integer timesteps (tensor), float64 on CPU."""
        t = torch.as_tensor(t, dtype=torch.long).cpu()
        return self.alphas_cumprod[t]

    def _coef(self, t, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.abar(t).to(device=like.device, dtype=torch.float32)
        a = a.reshape(-1, *([1] * (like.ndim - 1))) if a.ndim else a
        return a.sqrt().to(like.dtype), (1 - a).sqrt().to(like.dtype)

    def check_timestep(self, t: int) -> int:
        check_range("timestep", t, 0, self.num_train_timesteps - 1)
        return int(t)

    def timestep_from_fraction(self, frac: float) -> int:
        """``frac`` of ``T`` as an integer timestep (e.g. 0.7 -> 0.7T, Wang et al. 2024, App. E.4)."""
        check_range("time fraction", frac, 0.0, 1.0)
        return int(round(frac * (self.num_train_timesteps - 1)))

    # ------------------------------------------------------------ VAE / text
    @property
    def vae_batch_size(self) -> int:
        """Most images one VAE encode/decode call takes: ``VAE_PIXELS_PER_CALL`` pixels (8 images at
        512 px; measured in bench/jacobian_memory.py), at least 1."""
        h, w = self.image_shape[1:]
        return max(1, VAE_PIXELS_PER_CALL // (h * w))

    def encode(self, images: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Pixel images in [-1, 1] -> diffusion-space tensors (identity for pixel models; VAE mean * scale),
        in slices of ``batch_size`` images (default :attr:`vae_batch_size`)."""
        images = images.to(self.device)
        if self.vae is None:
            return images.float()
        step = batch_size or self.vae_batch_size
        out = []
        with torch.no_grad():
            for i in range(0, images.shape[0], step):
                z = self.vae.encode(images[i:i + step].to(self.vae.dtype)).latent_dist.mean
                out.append((z * self.latent_scale).float())
        return torch.cat(out) if out else torch.zeros(0, *self.sample_shape, device=self.device)

    def decode(self, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Diffusion-space tensors -> pixel images in [-1, 1], in slices of ``batch_size`` (default
        :attr:`vae_batch_size`)."""
        if self.vae is None:
            return x.float().clamp(-1, 1)
        step = batch_size or self.vae_batch_size
        out = []
        with torch.no_grad():
            for i in range(0, x.shape[0], step):
                z = (x[i:i + step] / self.latent_scale).to(device=self.device, dtype=self.vae.dtype)
                out.append(self.vae.decode(z).sample.float().clamp(-1, 1))
        return torch.cat(out) if out else torch.zeros(0, *self.image_shape, device=self.device)

    def encode_prompt(self, prompt: str | Sequence[str], negative_prompt: str = "", guidance_scale: float = 1.0) -> Conditioning:
        """CLIP text embeddings of ``prompt`` (and of ``negative_prompt`` for CFG)."""
        if not self.is_text:
            raise UserError(f"{self.model_id} is not text-conditioned; it takes no prompt")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)

        def embed(texts):
            tok = self.tokenizer(texts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt")
            with torch.no_grad():
                return self.text_encoder(tok.input_ids.to(self.device))[0].to(self.dtype)

        cond = embed(prompts)
        uncond = embed([negative_prompt] * len(prompts))
        return Conditioning(cond=cond, uncond=uncond, guidance_scale=guidance_scale,
                            prompt=prompts[0] if len(prompts) == 1 else "; ".join(prompts))

    def default_conditioning(self, guidance_scale: float = 1.0) -> Conditioning | None:
        """The empty prompt for text models (Zhang et al. 2025, §3.1, scores with it), ``None`` otherwise."""
        return self.encode_prompt("", guidance_scale=guidance_scale) if self.is_text else None

    # ---------------------------------------------------------------- U-Net
    def _float32_copy(self) -> torch.nn.Module:
        """A float32 copy of the U-Net built parameter by parameter (peak: the copy itself, no
        intermediate half-precision duplicate); hooks and processor switches of the shared U-Net are
        not copied."""
        with torch.device("meta"):
            copy_ = type(self.unet).from_config(self.unet.config)
        state = {k: v.detach().to(torch.float32) for k, v in self.unet.state_dict().items()}
        copy_.load_state_dict(state, assign=True)
        if any(t.is_meta for t in list(copy_.parameters()) + list(copy_.buffers())):  # non-persistent buffers
            import copy as copy_module

            copy_ = copy_module.deepcopy(self.unet).to(torch.float32)
        return copy_.to(self.device).eval().requires_grad_(False)

    @contextmanager
    def float32_unet(self) -> Iterator[torch.nn.Module]:
        """The U-Net in float32 for Jacobian work, for the duration of the context.

        A model that runs in float32 yields its own U-Net. A half-precision model (CUDA) builds a
        float32 copy (SD v1.4: 859.5M parameters, 3.4 GB) under a lock when the first user enters;
        concurrent users share it (reference counted) and it is dropped -- and the CUDA cache emptied
        -- when the last one leaves, so no copy outlives the requests that need it."""
        if self.dtype == torch.float32:
            yield self.unet
            return
        with self._fp32_lock:
            if self._unet_fp32 is None:
                self._unet_fp32 = self._float32_copy()
            self._fp32_users += 1
            unet = self._unet_fp32
        try:
            yield unet
        finally:
            with self._fp32_lock:
                self._fp32_users -= 1
                if self._fp32_users == 0:
                    self._unet_fp32 = None
                    del unet
                    if self.device.type == "cuda":
                        torch.cuda.empty_cache()

    @contextmanager
    def _unet_in(self, dtype: torch.dtype) -> Iterator[torch.nn.Module]:
        if dtype == self.dtype:
            yield self.unet
            return
        if dtype != torch.float32:
            raise UserError(f"the U-Net runs in {self.dtype} or float32, not {dtype}")
        with self.float32_unet() as unet:   # outside a float32_unet() context: a copy for this call only
            yield unet

    def _unet_for(self, dtype: torch.dtype):
        """The U-Net for ``dtype`` (backward compatible accessor): the model's own, or the float32 copy
        while a :meth:`float32_unet` context holds it; raises when no such context is open."""
        if dtype == self.dtype:
            return self.unet
        with self._fp32_lock:
            if self._unet_fp32 is None:
                raise RuntimeError("the float32 U-Net exists only inside model.float32_unet()")
            return self._unet_fp32

    def unet_call(self, x: torch.Tensor, t, encoder_hidden_states: torch.Tensor | None = None,
                  dtype: torch.dtype | None = None) -> torch.Tensor:
        """Raw U-Net output for a batch (``t`` an int or a length-B tensor). ``dtype=torch.float32`` on
        a half-precision model runs the float32 copy of :meth:`float32_unet` (enter that context around
        many calls: outside it every call builds and drops its own copy)."""
        dtype = dtype or self.dtype
        with self._unet_in(dtype) as unet:
            return self._unet_forward(unet, x, t, encoder_hidden_states, dtype)

    def _unet_forward(self, unet, x, t, encoder_hidden_states, dtype):
        tt = torch.as_tensor(t, device=x.device)
        if tt.ndim == 0:
            tt = tt.expand(x.shape[0])
        kwargs = {}
        if encoder_hidden_states is not None:
            kwargs["encoder_hidden_states"] = encoder_hidden_states.to(device=x.device, dtype=dtype)
        out = unet(x.to(dtype), tt, **kwargs).sample
        return out.float() if x.dtype == torch.float32 else out

    def _model_input(self, x: torch.Tensor, cond: Conditioning | None):
        """Batch (and text embeddings) for one U-Net call; CFG doubles the batch as [uncond; cond]."""
        if cond is None:
            if self.is_text:
                raise UserError("a text-conditioned model needs a conditioning (use encode_prompt(''))")
            return x, None
        b = x.shape[0]
        c = cond.cond if cond.cond.shape[0] == b else cond.cond.expand(b, -1, -1)
        if cond.uses_cfg:
            u = cond.uncond if cond.uncond.shape[0] == b else cond.uncond.expand(b, -1, -1)
            return torch.cat([x, x]), torch.cat([u, c])
        return x, c

    def predict(self, x_t: torch.Tensor, t, cond: Conditioning | None = None,
                dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(eps_hat, x0_hat)`` at ``(x_t, t, c)``, with CFG when ``cond.uses_cfg``.

        Differentiable in ``x_t`` (no ``no_grad`` here), so JVP/VJP go through it.
        """
        xin, ehs = self._model_input(x_t, cond)
        t_in = t if torch.as_tensor(t).ndim == 0 else torch.cat([torch.as_tensor(t)] * (xin.shape[0] // x_t.shape[0]))
        out = self.unet_call(xin, t_in, ehs, dtype=dtype)
        if cond is not None and cond.uses_cfg:
            out_u, out_c = out.chunk(2)
            out = out_u + cond.guidance_scale * (out_c - out_u)
        sa, sb = self._coef(t, x_t)
        out = out.to(x_t.dtype)
        if self.prediction_type == "epsilon":
            eps = out
            x0 = (x_t - sb * eps) / sa
        elif self.prediction_type == "v_prediction":
            x0 = sa * x_t - sb * out
            eps = sb * x_t + sa * out
        else:
            x0 = out
            eps = (x_t - sa * x0) / sb
        return eps, x0

    def eps(self, x_t, t, cond: Conditioning | None = None, dtype=None) -> torch.Tensor:
        return self.predict(x_t, t, cond, dtype)[0]

    def x0_hat(self, x_t, t, cond: Conditioning | None = None, dtype=None) -> torch.Tensor:
        """Posterior-mean estimate of the clean sample (Wang et al. 2024, eq. 5-6)."""
        return self.predict(x_t, t, cond, dtype)[1]

    def add_noise(self, x0: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
        """``sqrt(abar_t) x0 + sqrt(1 - abar_t) noise`` (``t`` an int or length-B tensor)."""
        sa, sb = self._coef(t, x0)
        return sa * x0 + sb * noise.to(device=x0.device, dtype=x0.dtype)

    def randn(self, n: int, seed: int, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """Seeded Gaussian noise, drawn on the CPU so a seed means the same noise on every device."""
        g = torch.Generator().manual_seed(int(seed))
        return torch.randn((n, *(shape or self.sample_shape)), generator=g).to(self.device)

    @contextmanager
    def forward_ad_safe(self) -> Iterator["DiffusionModel"]:
        """Forward-mode JVPs (``torch.func.jvp``) through the float32 U-Net work inside this context
        (see :mod:`.attention`); it also holds the float32 copy of a half-precision model."""
        with self.float32_unet() as unet, attention.forward_ad_safe(unet):
            yield self

    def activation_profile(self) -> dict[str, float]:
        """Memory a float32 U-Net forward of one sample touches, from a trace on the ``meta`` device
        (no memory is allocated, well under a second): ``activations`` = bytes of the outputs of all
        leaf modules, ``attention`` = bytes of all attention maps (heads x queries x keys, float32),
        ``largest`` = the largest single output. :mod:`lowdim_app.methods.jacobian` turns it into
        memory per JVP/VJP direction. Computed once per model (under a lock)."""
        with self._profile_lock:
            if self._profile is None:
                self._profile = _trace_profile(self.unet, self.sample_shape, self.is_text,
                                               getattr(self.unet.config, "cross_attention_dim", None))
            return dict(self._profile)

    # ------------------------------------------------------------------ DDIM
    def timesteps(self, t_start: int, steps: int) -> list[int]:
        """Descending DDIM grid from ``t_start`` to 0 with ``steps`` U-Net evaluations."""
        self.check_timestep(t_start)
        check_range("steps", steps, 1, self.num_train_timesteps)
        steps = min(int(steps), int(t_start) + 1)
        grid = np.unique(np.round(np.linspace(0, t_start, steps)).astype(int))[::-1]
        return [int(v) for v in grid]

    def _abar_or_one(self, t: int | None) -> float:
        return 1.0 if t is None else float(self.alphas_cumprod[t])

    def _ddim_move(self, eps: torch.Tensor, x0: torch.Tensor, t_to: int | None) -> torch.Tensor:
        a = self._abar_or_one(t_to)
        return a ** 0.5 * x0 + (1 - a) ** 0.5 * eps

    @torch.no_grad()
    def ddim_sample(self, x_t: torch.Tensor, t_start: int, steps: int, cond: Conditioning | None = None,
                    progress: bool = False, step_callback: StepCallback | None = None,
                    desc: str = "DDIM sampling", after_step: AfterStep | None = None) -> torch.Tensor:
        """Deterministic DDIM (eta = 0) from ``x_t`` at ``t_start`` down to a clean sample.
        ``after_step(i, x)`` (optional) replaces the point after step ``i`` (blended sampling)."""
        ts = self.timesteps(t_start, steps)
        x = x_t.to(self.device, self.dtype)
        for i, t in enumerate(tqdm(ts, desc=desc, disable=not progress, leave=False)):
            if step_callback is not None:
                step_callback(i, t)
            eps, x0 = self.predict(x, t, cond)
            x = self._ddim_move(eps, x0, ts[i + 1] if i + 1 < len(ts) else None)
            if after_step is not None:
                x = after_step(i, x)
        return x.float()

    @torch.no_grad()
    def ddim_invert(self, x0: torch.Tensor, t_end: int, steps: int, cond: Conditioning | None = None,
                    progress: bool = False, desc: str = "DDIM inversion",
                    step_callback: StepCallback | None = None) -> torch.Tensor:
        """DDIM inversion: clean sample -> ``x_t`` at ``t_end`` on the grid :meth:`ddim_sample` uses.

        Each step evaluates eps at the target timestep with the current point (the usual
        approximation, exact in the limit of many steps).
        """
        ts = self.timesteps(t_end, steps)[::-1]  # ascending
        x = x0.to(self.device, self.dtype)
        prev: int | None = None
        for i, t in enumerate(tqdm(ts, desc=desc, disable=not progress, leave=False)):
            if step_callback is not None:
                step_callback(i, t)
            eps, _ = self.predict(x, t, cond)
            a_prev = self._abar_or_one(prev)
            x0_est = (x - (1 - a_prev) ** 0.5 * eps) / a_prev ** 0.5
            x = self._ddim_move(eps, x0_est, t)
            prev = t
        return x.float()

    @torch.no_grad()
    def generate(self, n: int, seed: int = 0, steps: int = 50, cond: Conditioning | None = None,
                 progress: bool = False, batch_size: int = 64, step_callback: StepCallback | None = None) -> torch.Tensor:
        """``n`` samples from pure noise (seeded), returned as pixel images in [-1, 1]."""
        check_range("number of samples", n, 1, 100_000)
        if self.is_text and cond is None:
            cond = self.default_conditioning()
        noise = self.randn(n, seed)
        out = []
        for i in range(0, n, batch_size):
            chunk = noise[i:i + batch_size]
            c = cond
            if c is not None and c.cond.shape[0] not in (1, chunk.shape[0]):
                c = Conditioning(c.cond[i:i + batch_size], None if c.uncond is None else c.uncond[i:i + batch_size],
                                 c.guidance_scale, c.prompt)
            z = self.ddim_sample(chunk, self.num_train_timesteps - 1, steps, c, progress=progress,
                                 step_callback=step_callback)
            out.append(self.decode(z).cpu())
        return torch.cat(out)

    def __repr__(self) -> str:
        kind = "latent text-to-image" if self.is_text else ("latent" if self.is_latent else "pixel")
        return f"DiffusionModel({self.model_id!r}, {kind}, sample_shape={self.sample_shape}, device={self.device})"
