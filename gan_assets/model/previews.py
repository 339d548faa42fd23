"""The fixed-noise sample grid of a training run (PNG bytes), as the reference DCGAN draws it.

No Dagster imports. The loss curve is ``report.charts.loss_chart``, drawn once for the UI and
the report.
"""

from __future__ import annotations

import math

from torch import nn

from gan_assets.model.artifact import sample_images
from gan_assets.storage.images import grid_png

FIXED_NOISE_COUNT = 64  # the reference DCGAN's 8 x 8 grid


def fixed_noise_grid_png(generator: nn.Module, seed: int, count: int = FIXED_NOISE_COUNT, device: str = "cpu") -> bytes:
    """8 x 8 grid of samples from the fixed noise of ``seed`` (the same images for the same weights)."""
    was_training = generator.training
    generator.eval()
    try:
        images = sample_images(generator, count, seed, device=device)  # type: ignore[arg-type]
    finally:
        generator.train(was_training)
    return grid_png(images, columns=int(math.ceil(math.sqrt(count))))
