"""From a stored ``trained_generator`` (a TensorBundle) back to a generator and its samples."""

from __future__ import annotations

import numpy as np
import torch

from gan_assets.model.config import TrainConfig
from gan_assets.model.dcgan import Generator, build_generator
from gan_assets.storage import TensorBundle


def generator_from_bundle(bundle: TensorBundle, device: str = "cpu") -> Generator:
    """Rebuild the generator (eval mode) from the exact config stored beside its weights."""
    config = TrainConfig.from_dict(bundle.attrs["config"])
    generator = build_generator(config)
    generator.load_state_dict(bundle.tensors, strict=True)
    return generator.to(device).eval()


@torch.no_grad()
def sample_images(generator: Generator, count: int, seed: int, batch_size: int = 256, device: str = "cpu") -> np.ndarray:
    """``count`` images (float32, N x H x W in [-1, 1]) from noise seeded by ``seed``.

    The noise is drawn on the CPU from its own generator so that a seed gives the same
    images on any device and independently of the batch size.
    """
    noise = torch.randn(count, generator.latent_dim, generator=torch.Generator().manual_seed(seed))
    out = []
    for start in range(0, count, batch_size):
        batch = noise[start:start + batch_size].to(device)
        out.append(generator(batch).float().cpu())
    return torch.cat(out).squeeze(1).numpy() if out else np.zeros((0, generator.image_size, generator.image_size), np.float32)
