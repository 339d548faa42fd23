"""DCGAN generator and discriminator for one-channel images of side 32, 64, 128 or 256.

Follows pytorch/examples' dcgan/main.py: N(0, 0.02) conv init, N(1, 0.02) batch-norm init,
transposed convolutions 4x4 stride 2, LeakyReLU(0.2) in D. One up/down block per doubling;
feature widths double towards 4 x 4 and are capped at 8x the base width (as the reference has
at 64 x 64). D returns logits: the sigmoid is fused into the loss (BCE-with-logits or hinge).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gan_assets.model.config import TrainConfig

CHANNELS = 1
MAX_WIDTH_MULTIPLIER = 8


def _depth(image_size: int) -> int:
    """Number of stride-2 blocks between 4 x 4 and image_size x image_size."""
    depth = int(math.log2(image_size)) - 2
    if 2 ** (depth + 2) != image_size or depth < 1:
        raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
    return depth


def _multiplier(level: int) -> int:
    """Width multiplier of the feature map ``level`` doublings above 4 x 4 (level 0 = 4 x 4)."""
    return min(2 ** level, MAX_WIDTH_MULTIPLIER)


def weights_init(module: nn.Module) -> None:
    """The reference DCGAN init: conv weights ~ N(0, 0.02), batch-norm scale ~ N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    def __init__(self, image_size: int, latent_dim: int, width: int) -> None:
        super().__init__()
        depth = _depth(image_size)
        self.image_size, self.latent_dim = image_size, latent_dim
        top = width * _multiplier(depth - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, top, 4, 1, 0, bias=False),
            nn.BatchNorm2d(top),
            nn.ReLU(True),
            # (width * mult) x 4 x 4
        ]
        in_ch = top
        for level in range(depth - 1, 0, -1):
            out_ch = width * _multiplier(level - 1)
            layers += [nn.ConvTranspose2d(in_ch, out_ch, 4, 2, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(True)]
            # out_ch x (image_size / 2**level) x (image_size / 2**level)
            in_ch = out_ch
        layers += [nn.ConvTranspose2d(in_ch, CHANNELS, 4, 2, 1, bias=False), nn.Tanh()]
        # 1 x image_size x image_size, in [-1, 1]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.view(z.shape[0], self.latent_dim, 1, 1))


class Discriminator(nn.Module):
    def __init__(self, image_size: int, width: int, spectral_norm: bool = False) -> None:
        super().__init__()
        depth = _depth(image_size)
        sn = nn.utils.spectral_norm if spectral_norm else (lambda m: m)
        layers: list[nn.Module] = [sn(nn.Conv2d(CHANNELS, width, 4, 2, 1, bias=False)), nn.LeakyReLU(0.2, inplace=True)]
        # width x (image_size / 2) x (image_size / 2)
        in_ch = width
        for level in range(1, depth):
            out_ch = width * _multiplier(level)
            layers.append(sn(nn.Conv2d(in_ch, out_ch, 4, 2, 1, bias=False)))
            if not spectral_norm:  # spectral norm replaces batch norm as D's regulariser
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            # out_ch x (image_size / 2**(level+1)) x (image_size / 2**(level+1))
            in_ch = out_ch
        layers.append(sn(nn.Conv2d(in_ch, 1, 4, 1, 0, bias=False)))
        # 1 x 1 x 1: one logit per image
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).flatten()


def build_generator(config: TrainConfig) -> Generator:
    generator = Generator(config.image_size, config.latent_dim, config.generator_width)
    generator.apply(weights_init)
    return generator


def build_discriminator(config: TrainConfig) -> Discriminator:
    discriminator = Discriminator(config.image_size, config.discriminator_width, config.spectral_norm)
    discriminator.apply(weights_init)
    return discriminator


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
