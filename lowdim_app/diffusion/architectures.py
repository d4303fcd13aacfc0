"""The exact architectures of the allow-listed hub models, built from their configs with random
weights -- so features are verified at real size without downloading anything.

* ``cifar10``: ``google/ddpm-cifar10-32`` (``UNet2DModel``, 35.7M parameters, 3x32x32);
* ``celebahq``: ``google/ddpm-ema-celebahq-256`` (``UNet2DModel``, 113.7M parameters, 3x256x256);
* ``sd-v1-4``: ``CompVis/stable-diffusion-v1-4`` (``UNet2DConditionModel`` 859.5M, ``AutoencoderKL``
  83.7M, CLIP ViT-L/14 text encoder 123.1M, ``PNDMScheduler``, latent scaling 0.18215).

``width`` divides every channel count (same block types and depth, so module names are the real
ones); ``sample_size`` overrides the resolution (SD: latent size). :func:`build` writes a local
diffusers folder in the subfolder layout or the flat layout the Google DDPM repos publish.
"""
from __future__ import annotations

from pathlib import Path

import torch

ARCHITECTURES = ("cifar10", "celebahq", "sd-v1-4")
HUB_IDS = {"cifar10": "google/ddpm-cifar10-32", "celebahq": "google/ddpm-ema-celebahq-256",
           "sd-v1-4": "CompVis/stable-diffusion-v1-4"}

DDPM_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                      variance_type="fixed_large", clip_sample=True)
SD_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                    set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1)
SD_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
SD_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")


def _ch(channels, width: int) -> tuple[int, ...]:
    return tuple(max(8, c // width) for c in channels)


def pixel_unet_config(arch: str, width: int = 1, sample_size: int | None = None) -> dict:
    """``UNet2DModel`` config of the Google DDPM repos (``config.json`` as published)."""
    common = dict(act_fn="silu", attention_head_dim=None, center_input_sample=False, downsample_padding=0,
                  flip_sin_to_cos=False, freq_shift=1, in_channels=3, out_channels=3, layers_per_block=2,
                  mid_block_scale_factor=1, norm_eps=1e-6, time_embedding_type="positional")
    if arch == "cifar10":
        return dict(common, sample_size=sample_size or 32, block_out_channels=_ch((128, 256, 256, 256), width),
                    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                    norm_num_groups=max(1, 32 // width))
    if arch == "celebahq":
        return dict(common, sample_size=sample_size or 256,
                    block_out_channels=_ch((128, 128, 256, 256, 512, 512), width),
                    down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4,
                    norm_num_groups=max(1, 32 // width))
    raise ValueError(f"not a pixel architecture: {arch}")


def sd_unet_config(width: int = 1, sample_size: int | None = None) -> dict:
    return dict(sample_size=sample_size or 64, in_channels=4, out_channels=4, layers_per_block=2,
                block_out_channels=_ch((320, 640, 1280, 1280), width), down_block_types=SD_DOWN, up_block_types=SD_UP,
                cross_attention_dim=max(16, 768 // width), attention_head_dim=8, norm_num_groups=max(1, 32 // width),
                act_fn="silu", center_input_sample=False, downsample_padding=1, flip_sin_to_cos=True, freq_shift=0,
                mid_block_scale_factor=1, norm_eps=1e-5)


def sd_vae_config(width: int = 1, sample_size: int = 512) -> dict:
    return dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=_ch((128, 256, 512, 512), width),
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                layers_per_block=2, norm_num_groups=max(1, 32 // width), act_fn="silu", sample_size=sample_size,
                scaling_factor=0.18215)


def sd_text_config(width: int = 1, vocab_size: int = 49408) -> dict:
    heads = max(1, 12 // width)
    return dict(vocab_size=vocab_size, hidden_size=64 * heads, intermediate_size=256 * heads,
                num_hidden_layers=max(1, 12 // width), num_attention_heads=heads, max_position_embeddings=77,
                hidden_act="quick_gelu", projection_dim=768 // width)


def build(arch: str, out: str | Path, *, layout: str = "subfolder", width: int = 1, sample_size: int | None = None,
          seed: int = 0, tokenizer_dir: str | Path | None = None) -> Path:
    """Write a random-weight diffusers folder of ``arch`` (safetensors) and return its path."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; one of {', '.join(ARCHITECTURES)}")
    if layout not in ("subfolder", "flat"):
        raise ValueError("layout must be 'subfolder' or 'flat'")
    out = Path(out)
    torch.manual_seed(seed)
    if arch in ("cifar10", "celebahq"):
        from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

        pipe = DDPMPipeline(unet=UNet2DModel(**pixel_unet_config(arch, width, sample_size)),
                            scheduler=DDPMScheduler(**DDPM_SCHEDULER))
        pipe.save_pretrained(out, safe_serialization=True)
        if layout == "flat":
            from .tiny import to_flat_layout

            tmp = out.with_name(out.name + ".flat")
            to_flat_layout(out, tmp)
            import shutil

            shutil.rmtree(out)
            tmp.rename(out)
        return out
    if layout == "flat":
        raise ValueError("Stable Diffusion is published in the subfolder layout only")
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from .tiny import TOKENIZER_FIXTURE

    tok_dir = Path(tokenizer_dir or TOKENIZER_FIXTURE)
    tokenizer = CLIPTokenizer(vocab=str(tok_dir / "vocab.json"), merges=str(tok_dir / "merges.txt"),
                              model_max_length=77)
    unet = UNet2DConditionModel(**sd_unet_config(width, sample_size))
    vae_size = 8 * (sample_size or 64)
    vae = AutoencoderKL(**sd_vae_config(width, vae_size))
    text_cfg = sd_text_config(width, vocab_size=max(len(tokenizer), 49408 if width == 1 else len(tokenizer)))
    text_cfg.pop("projection_dim")
    text = CLIPTextModel(CLIPTextConfig(**text_cfg, bos_token_id=tokenizer.bos_token_id,
                                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                   scheduler=PNDMScheduler(**SD_SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def parameter_counts(arch: str, width: int = 1) -> dict[str, int]:
    """Parameters per component, counted on meta tensors (no memory is allocated)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel, UNet2DModel

    with torch.device("meta"):
        if arch in ("cifar10", "celebahq"):
            return {"unet": sum(p.numel() for p in UNet2DModel(**pixel_unet_config(arch, width)).parameters())}
        from transformers import CLIPTextConfig, CLIPTextModel

        cfg = sd_text_config(width)
        cfg.pop("projection_dim")
        return {"unet": sum(p.numel() for p in UNet2DConditionModel(**sd_unet_config(width)).parameters()),
                "vae": sum(p.numel() for p in AutoencoderKL(**sd_vae_config(width)).parameters()),
                "text_encoder": sum(p.numel() for p in CLIPTextModel(CLIPTextConfig(**cfg)).parameters())}
