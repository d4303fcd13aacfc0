"""Tiny randomly initialised pipelines built from configs (never the hub), for tests and benches.

* :func:`build_tiny_pixel_pipeline` — a small ``UNet2DModel`` DDPM pipeline.
* :func:`build_tiny_sd_pipeline` — a Stable-Diffusion-shaped pipeline whose U-Net keeps
  SD v1.4's block types and ``layers_per_block=2``, so module names are the real ones
  (``up_blocks.0.resnets.2``, ``up_blocks.1.resnets.1``, ...), with a tiny VAE, a tiny CLIP
  text encoder and a CLIP BPE tokenizer over a small vocabulary.
Both write a diffusers folder (safetensors) that :func:`~.registry.load_model` loads by path.
* :func:`build_tiny_clip` — a tiny ``CLIPModel`` (text + vision towers) with its processor, the
  offline stand-in for the CLIP that scores steering curves of text models.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..config import REPO_ROOT

TOKENIZER_FIXTURE = REPO_ROOT / "tests" / "fixtures" / "clip_tokenizer"
SD_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                    prediction_type="epsilon", clip_sample=False, set_alpha_to_one=False, steps_offset=1)
SD_V14_DOWN = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D")
SD_V14_UP = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")


def build_tiny_pixel_pipeline(out: str | Path, seed: int = 0, channels: int = 1, size: int = 16) -> Path:
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       layers_per_block=1, norm_num_groups=4, attention_head_dim=8)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)
    out = Path(out)
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(out, safe_serialization=True)
    return out


def tiny_sd_unet(seed: int = 0, sample_size: int = 16, block_out_channels=(32, 32, 64, 64), cross_attention_dim: int = 32):
    """SD v1.4 block layout at toy width (random weights)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=tuple(block_out_channels), down_block_types=SD_V14_DOWN, up_block_types=SD_V14_UP,
        cross_attention_dim=cross_attention_dim, attention_head_dim=8, norm_num_groups=8,
    )


def build_tiny_sd_pipeline(out: str | Path, seed: int = 0, tokenizer_dir: str | Path = TOKENIZER_FIXTURE) -> Path:
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tokenizer_dir = Path(tokenizer_dir)
    tokenizer = CLIPTokenizer(vocab=str(tokenizer_dir / "vocab.json"), merges=str(tokenizer_dir / "merges.txt"),
                              model_max_length=77)
    torch.manual_seed(seed)
    unet = tiny_sd_unet(seed)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8),
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=1, norm_num_groups=4, sample_size=128)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=DDIMScheduler(**SD_SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    out = Path(out)
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def build_tiny_clip(out: str | Path, seed: int = 0, tokenizer_dir: str | Path = TOKENIZER_FIXTURE) -> Path:
    from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTextConfig,
                              CLIPTokenizer, CLIPVisionConfig)

    tokenizer_dir = Path(tokenizer_dir)
    tokenizer = CLIPTokenizer(vocab=str(tokenizer_dir / "vocab.json"), merges=str(tokenizer_dir / "merges.txt"),
                              model_max_length=77)
    torch.manual_seed(seed)
    text = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                              image_size=32, patch_size=8)
    model = CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16))
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    out = Path(out)
    model.save_pretrained(out, safe_serialization=True)
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)
    return out


def to_flat_layout(folder: str | Path, out: str | Path) -> Path:
    """Rewrite a subfolder-layout pixel pipeline in the flat layout the Google DDPM repos publish:
    the U-Net's ``config.json`` and weights and ``scheduler_config.json`` at the root."""
    import shutil

    folder, out = Path(folder), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for f in (folder / "unet").iterdir():
        shutil.copy2(f, out / f.name)
    shutil.copy2(folder / "scheduler" / "scheduler_config.json", out / "scheduler_config.json")
    shutil.copy2(folder / "model_index.json", out / "model_index.json")
    return out
