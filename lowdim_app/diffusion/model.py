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
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

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


class DiffusionModel:
    """A loaded model. Build with :func:`lowdim_app.diffusion.registry.load_model`."""

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
        self._unet_fp32 = None
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
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Pixel images in [-1, 1] -> diffusion-space tensors (identity for pixel models; VAE mean * scale)."""
        images = images.to(self.device)
        if self.vae is None:
            return images.float()
        with torch.no_grad():
            z = self.vae.encode(images.to(self.vae.dtype)).latent_dist.mean
        return (z * self.latent_scale).float()

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Diffusion-space tensors -> pixel images in [-1, 1]."""
        if self.vae is None:
            return x.float().clamp(-1, 1)
        with torch.no_grad():
            img = self.vae.decode((x / self.latent_scale).to(device=self.device, dtype=self.vae.dtype)).sample
        return img.float().clamp(-1, 1)

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
    def _unet_for(self, dtype: torch.dtype):
        if dtype == self.dtype:
            return self.unet
        if self._unet_fp32 is None:  # Jacobians run in float32 even when sampling runs in fp16
            import copy

            self._unet_fp32 = copy.deepcopy(self.unet).to(torch.float32)
        return self._unet_fp32

    def unet_call(self, x: torch.Tensor, t, encoder_hidden_states: torch.Tensor | None = None,
                  dtype: torch.dtype | None = None) -> torch.Tensor:
        """Raw U-Net output for a batch (``t`` an int or a length-B tensor)."""
        dtype = dtype or self.dtype
        unet = self._unet_for(dtype)
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
        """JVPs through the U-Net work inside this context (see :mod:`.attention`)."""
        with attention.forward_ad_safe(self._unet_for(torch.float32)):
            yield self

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
                    desc: str = "DDIM sampling") -> torch.Tensor:
        """Deterministic DDIM (eta = 0) from ``x_t`` at ``t_start`` down to a clean sample."""
        ts = self.timesteps(t_start, steps)
        x = x_t.to(self.device, self.dtype)
        for i, t in enumerate(tqdm(ts, desc=desc, disable=not progress, leave=False)):
            if step_callback is not None:
                step_callback(i, t)
            eps, x0 = self.predict(x, t, cond)
            x = self._ddim_move(eps, x0, ts[i + 1] if i + 1 < len(ts) else None)
        return x.float()

    @torch.no_grad()
    def ddim_invert(self, x0: torch.Tensor, t_end: int, steps: int, cond: Conditioning | None = None,
                    progress: bool = False, desc: str = "DDIM inversion") -> torch.Tensor:
        """DDIM inversion: clean sample -> ``x_t`` at ``t_end`` on the grid :meth:`ddim_sample` uses.

        Each step evaluates eps at the target timestep with the current point (the usual
        approximation, exact in the limit of many steps).
        """
        ts = self.timesteps(t_end, steps)[::-1]  # ascending
        x = x0.to(self.device, self.dtype)
        prev: int | None = None
        for t in tqdm(ts, desc=desc, disable=not progress, leave=False):
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
