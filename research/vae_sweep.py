"""VAE-only training runs behind docs/experiments/2026-11-30-tiny-vae-sweeps.md: the prior's VAE loss, alone.

L1 + L2 on the posterior mode, random 32² crops and flips of the prepared train gts, batch 16, AdamW
with cosine decay, seeded; prints the round-trip PSNR (dB) of train (first 64 patches), val and test
every ``--every`` steps as JSON lines. Not the pipeline (``stages.prior`` is): a plain loop, so runs
are cheap to compare.

    python research/vae_sweep.py --block-out-channels 32 32 32 --layers-per-block 0 --no-mid-attention

The committed settings (``prior_train``): ``--steps 6000 --lr 6e-3 --beta2 0.99 --no-mid-attention``.

``--variant no-final-norm`` replaces both ``conv_norm_out`` GroupNorms by identities and ``--variant plain``
trains a norm-free conv autoencoder of the same factor; neither is an ``AutoencoderKL`` that the DAEM
decoder could be built from, they only show what the norms cost.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import types

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from unildiff import paths
from unildiff.training.latents import load_split_images, load_training_pairs
from unildiff.training.prior import round_trip_psnr


class PlainAutoencoder(torch.nn.Module):
    """Factor-4 conv autoencoder without normalisation (SiLU between 3×3 convs)."""

    def __init__(self, width: int = 32, latent_channels: int = 16) -> None:
        super().__init__()
        act = torch.nn.SiLU
        self.encoder = torch.nn.Sequential(
            torch.nn.Conv2d(3, width, 3, 1, 1),
            act(),
            torch.nn.Conv2d(width, width, 3, 2, 1),
            act(),
            torch.nn.Conv2d(width, width, 3, 1, 1),
            act(),
            torch.nn.Conv2d(width, width, 3, 2, 1),
            act(),
            torch.nn.Conv2d(width, latent_channels, 3, 1, 1),
        )
        self.decoder = torch.nn.Sequential(
            torch.nn.Conv2d(latent_channels, width, 3, 1, 1),
            act(),
            torch.nn.Upsample(scale_factor=2),
            torch.nn.Conv2d(width, width, 3, 1, 1),
            act(),
            torch.nn.Upsample(scale_factor=2),
            torch.nn.Conv2d(width, width, 3, 1, 1),
            act(),
            torch.nn.Conv2d(width, 3, 3, 1, 1),
        )

    def encode(self, image: torch.Tensor) -> types.SimpleNamespace:
        latent = self.encoder(image)
        return types.SimpleNamespace(latent_dist=types.SimpleNamespace(mode=lambda: latent))

    def decode(self, latent: torch.Tensor) -> types.SimpleNamespace:
        return types.SimpleNamespace(sample=self.decoder(latent))


def build(args: argparse.Namespace) -> torch.nn.Module:
    torch.manual_seed(args.seed)
    if args.variant == "plain":
        return PlainAutoencoder()
    levels = len(args.block_out_channels)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(args.block_out_channels),
        layers_per_block=args.layers_per_block,
        norm_num_groups=args.norm_num_groups,
        latent_channels=16,
        mid_block_add_attention=args.mid_attention,
    )
    if args.variant == "no-final-norm":
        vae.encoder.conv_norm_out = torch.nn.Identity()
        vae.decoder.conv_norm_out = torch.nn.Identity()
    return vae


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepared", default=str(paths.PREPARED))
    parser.add_argument(
        "--variant", choices=("autoencoderkl", "no-final-norm", "plain"), default="autoencoderkl"
    )
    parser.add_argument("--block-out-channels", type=int, nargs="+", default=[32, 32, 32])
    parser.add_argument("--layers-per-block", type=int, default=0)
    parser.add_argument("--no-mid-attention", dest="mid_attention", action="store_false")
    parser.add_argument("--norm-num-groups", type=int, default=8)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--lr", type=float, default=4e-3)
    parser.add_argument("--gradient-loss", type=float, default=0.0, help="weight of an L1 on image gradients")
    parser.add_argument("--every", type=int, default=200)
    parser.add_argument("--channel-shuffle", action="store_true", help="random RGB permutation per image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crop", type=int, default=32, help="side of the random training crops")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--beta2", type=float, default=0.999, help="AdamW's beta2")
    parser.add_argument(
        "--rot", action="store_true", help="random transposition (with the flip: 8 symmetries)"
    )
    parser.add_argument("--lowpass", type=float, default=0.0, help="weight of an L2 on 8x8 block means")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    vae = build(args)
    gt = load_training_pairs(args.prepared, None, 0).gt
    val, test = load_split_images(args.prepared, "val"), load_split_images(args.prepared, "test")
    optimizer = torch.optim.AdamW(vae.parameters(), lr=args.lr, weight_decay=0.0, betas=(0.9, args.beta2))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / args.steps))
    )
    generator, crop, start = torch.Generator().manual_seed(args.seed), args.crop, time.time()
    for step in range(1, args.steps + 1):
        images = gt[torch.randint(0, len(gt), (args.batch,), generator=generator)]
        top, left = torch.randint(0, images.shape[-1] - crop + 1, (2,), generator=generator).tolist()
        images = images[..., top : top + crop, left : left + crop]
        if torch.rand(1, generator=generator) < 0.5:
            images = images.flip(-1)
        if args.rot and torch.rand(1, generator=generator) < 0.5:
            images = images.transpose(-1, -2)
        if args.channel_shuffle:
            orders = torch.stack([torch.randperm(3, generator=generator) for _ in range(len(images))])
            images = torch.gather(images, 1, orders[:, :, None, None].expand_as(images))
        vae.train()
        decoded = vae.decode(vae.encode(images).latent_dist.mode()).sample
        loss = (decoded - images).abs().mean() + F.mse_loss(decoded, images)
        if args.lowpass:
            loss = loss + args.lowpass * F.mse_loss(F.avg_pool2d(decoded, 8), F.avg_pool2d(images, 8))
        if args.gradient_loss:
            for dim in (-1, -2):
                loss = loss + args.gradient_loss * (decoded.diff(dim=dim) - images.diff(dim=dim)).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % args.every == 0 or step == args.steps:
            vae.eval()
            scores = {
                name: round_trip_psnr(vae, images_, 4)["mean"]
                for name, images_ in (("train", gt[:64]), ("val", val), ("test", test))
                if images_ is not None
            }
            print(json.dumps({"step": step, "seconds": round(time.time() - start), **scores}), flush=True)


if __name__ == "__main__":
    main()
