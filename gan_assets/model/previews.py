"""Preview images of a training run: the loss curve and the fixed-noise sample grid (PNG bytes).

Drawn with PIL (matplotlib is not a dependency). No Dagster imports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw
from torch import nn

from gan_assets.model.artifact import sample_images
from gan_assets.report.images import grid_png, png_bytes

FIXED_NOISE_COUNT = 64  # the reference DCGAN's 8 x 8 grid
_COLORS = {"loss_d": (31, 119, 180), "loss_g": (214, 39, 40)}


def fixed_noise_grid_png(generator: nn.Module, seed: int, count: int = FIXED_NOISE_COUNT, device: str = "cpu") -> bytes:
    """8 x 8 grid of samples from the fixed noise of ``seed`` (the same images for the same weights)."""
    was_training = generator.training
    generator.eval()
    try:
        images = sample_images(generator, count, seed, device=device)  # type: ignore[arg-type]
    finally:
        generator.train(was_training)
    return grid_png(images, columns=int(math.ceil(math.sqrt(count))))


def loss_curve_png(history: dict[str, Sequence[float]], width: int = 480, height: int = 260) -> bytes:
    """Line chart of loss_d and loss_g against step (non-finite points are skipped)."""
    steps = np.asarray(history.get("step", []), dtype=np.float64)
    series = {name: np.asarray(history.get(name, []), dtype=np.float64) for name in _COLORS}
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 48, width - 12, 24, height - 28
    draw.rectangle([left, top, right, bottom], outline=(120, 120, 120))
    values = np.concatenate([v[np.isfinite(v)] for v in series.values()]) if len(steps) else np.zeros(0)
    if len(steps) == 0 or values.size == 0:
        draw.text((left + 8, top + 8), "no loss history", fill=(0, 0, 0))
        return png_bytes(np.asarray(image))
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    x0, x1 = float(steps.min()), float(steps.max())
    x_span = max(x1 - x0, 1e-9)

    def point(step: float, value: float) -> tuple[float, float]:
        x = left + (step - x0) / x_span * (right - left)
        y = bottom - (value - low) / (high - low) * (bottom - top)
        return x, y

    for fraction in (0.0, 0.5, 1.0):  # y ticks: min, middle, max
        value = low + fraction * (high - low)
        _, y = point(x0, value)
        draw.line([left - 4, y, left, y], fill=(120, 120, 120))
        draw.text((2, y - 6), f"{value:.3g}", fill=(60, 60, 60))
    draw.text((left, bottom + 8), f"step {int(x0)}", fill=(60, 60, 60))
    draw.text((right - 70, bottom + 8), f"step {int(x1)}", fill=(60, 60, 60))
    for index, (name, ys) in enumerate(series.items()):
        color = _COLORS[name]
        points = [point(s, v) for s, v in zip(steps, ys, strict=False) if math.isfinite(v)]
        if len(points) == 1:
            x, y = points[0]
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=color)
        elif points:
            draw.line(points, fill=color, width=2)
        lx = left + 8 + index * 90
        draw.line([lx, 12, lx + 16, 12], fill=color, width=3)
        draw.text((lx + 20, 6), name, fill=(0, 0, 0))
    return png_bytes(np.asarray(image))
