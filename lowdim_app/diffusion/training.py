"""Train a small pixel DDPM (diffusers ``UNet2DModel``) with the DDPM loss.

``L = E_{x0, t, eps} || eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t) - eps ||^2``
(Wang et al. 2024, eq. 4 in epsilon form; Zhang et al. 2025, §2.1). The result is a diffusers
folder (``DDPMPipeline`` layout, safetensors only) with ``card.json``.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.digits import load_digits_split, subset_indices

SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
    prediction_type="epsilon", clip_sample=False,
)


@dataclass
class TrainConfig:
    data: str = "digits"          # "digits" or a folder of images
    subset: int | None = None     # train on this many training digits (seeded choice)
    duplicate: int = 0            # number of training images to duplicate (seeded choice)
    copies: int = 0               # extra copies of each duplicated image
    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-3
    ema_decay: float = 0.999
    seed: int = 0
    image_size: int = 16
    channels: int = 1
    block_out_channels: tuple[int, ...] = (32, 64, 64)
    attention: bool = True
    out: str = "runs/model"
    command: str = ""             # the command line that reproduces this training run


class TrainingStopped(Exception):
    """Raised when ``should_stop()`` turned true during training."""


@dataclass
class TrainResult:
    out: Path
    final_loss: float
    wall_time_s: float
    n_params: int
    loss_curve: list[float] = field(default_factory=list)
    train_index: list[int] = field(default_factory=list)


def build_unet(cfg: TrainConfig):
    from diffusers import UNet2DModel

    n_levels = len(cfg.block_out_channels)
    down = ["DownBlock2D"] * n_levels
    up = ["UpBlock2D"] * n_levels
    if cfg.attention and n_levels >= 2:
        down[1], up[-2] = "AttnDownBlock2D", "AttnUpBlock2D"
    return UNet2DModel(
        sample_size=cfg.image_size, in_channels=cfg.channels, out_channels=cfg.channels,
        block_out_channels=tuple(cfg.block_out_channels), down_block_types=tuple(down),
        up_block_types=tuple(up), layers_per_block=1, norm_num_groups=8, attention_head_dim=8,
    )


def training_images(cfg: TrainConfig) -> tuple[torch.Tensor, dict]:
    """The training tensor (duplicates included) and a description of where it came from."""
    if cfg.data == "digits":
        split = load_digits_split()
        index = np.arange(len(split.train_labels))
        if cfg.subset:
            index = subset_indices(cfg.subset, cfg.seed)
        images = split.train_images[index]
        info = {"source": "scikit-learn digits (8x8 -> 16x16 bilinear, [-1, 1]), fixed seeded split",
                "train_index": index.tolist()}
    else:
        from ..data.images import load_folder

        images, files, problems = load_folder(cfg.data, cfg.image_size, cfg.channels)
        index = np.arange(len(images))
        info = {"source": f"folder {cfg.data}", "files": [str(f) for f in files], "skipped": problems,
                "train_index": index.tolist()}
    dup = []
    if cfg.duplicate and cfg.copies:
        rng = np.random.default_rng(cfg.seed + 1)
        pick = np.sort(rng.choice(len(images), size=min(cfg.duplicate, len(images)), replace=False))
        dup = [int(index[i]) for i in pick]
        images = torch.cat([images, images[pick].repeat(cfg.copies, 1, 1, 1)])
        info["duplicated_positions"] = pick.tolist()
    info["duplicated_index"] = dup
    info["n_unique"] = int(len(index))
    info["n_total"] = int(len(images))
    return images, info


def train(cfg: TrainConfig, progress: bool = True, should_stop=None) -> TrainResult:
    """Train and save; ``should_stop()`` is polled every 50 steps (raises ``RuntimeError('stopped')``)."""
    from diffusers import DDPMPipeline, DDPMScheduler
    from diffusers.training_utils import EMAModel

    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    images, info = training_images(cfg)
    unet = build_unet(cfg)
    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay)
    scheduler = DDPMScheduler(**SCHEDULER_CONFIG)
    abar = scheduler.alphas_cumprod.float()
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=0.0)
    warmup = min(200, cfg.steps // 10 + 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
    n = len(images)
    bs = min(cfg.batch_size, n)
    losses: list[float] = []
    start = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="train", disable=not progress, mininterval=2)
    perm, pos = torch.randperm(n, generator=gen), 0
    for step in bar:
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        x0 = images[perm[pos:pos + bs]]
        pos += bs
        t = torch.randint(0, scheduler.config.num_train_timesteps, (bs,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        a = abar[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        loss = (unet(xt, t).sample - eps).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        ema.step(unet.parameters())
        losses.append(float(loss))
        if step % 50 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
            if should_stop is not None and should_stop():
                raise TrainingStopped(f"stopped after {step} of {cfg.steps} steps")
    wall = time.perf_counter() - start
    ema.copy_to(unet.parameters())
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(out, safe_serialization=True)
    curve = [float(np.mean(losses[i:i + 100])) for i in range(0, len(losses), 100)]
    result = TrainResult(
        out=out, final_loss=float(np.mean(losses[-200:])), wall_time_s=wall,
        n_params=sum(p.numel() for p in unet.parameters()), loss_curve=curve, train_index=info["train_index"],
    )
    card = {
        "training": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "data": {k: v for k, v in info.items() if k not in ("train_index",)},
        "train_index": info["train_index"],
        "final_loss_last200_mean": result.final_loss,
        "loss_curve_per100": curve,
        "wall_time_s": round(wall, 1),
        "n_params": result.n_params,
        "scheduler": SCHEDULER_CONFIG,
        "hardware": f"{torch.get_num_threads()} CPU threads, torch {torch.__version__}",
    }
    (out / "card.json").write_text(json.dumps(card, indent=1))
    return result
