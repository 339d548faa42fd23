"""DiffAugment (Zhao et al., 2020): differentiable translation and cutout for GANs on few images.

The same policy is applied to every image D sees -- real, fake for D's step and fake for G's
step -- so D cannot tell real from fake by the augmentation, and gradients flow through the
augmentation into G. Each image draws its own offsets. Both ops are written with broadcast
comparisons and gathers (no data-dependent shapes, no host syncs), so they run inside CUDA
graphs and under ``torch.compile``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TRANSLATION_RATIO = 0.125  # shift up to 1/8 of the side, as in the DiffAugment paper
CUTOUT_RATIO = 0.5  # erase a square of half the side


def _randint(low: int, high: int, n: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randint(low, high, (n, 1, 1, 1), device=device, generator=generator)


def rand_translation(x: torch.Tensor, generator: torch.Generator | None = None, ratio: float = TRANSLATION_RATIO) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its side; uncovered pixels become 0 (mid-grey in [-1, 1])."""
    n, c, h, w = x.shape
    shift_y, shift_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = _randint(-shift_y, shift_y + 1, n, x.device, generator)
    tx = _randint(-shift_x, shift_x + 1, n, x.device, generator)
    # Pad by one zero pixel and clamp indices onto it: out-of-range reads become zeros.
    padded = F.pad(x, (1, 1, 1, 1))
    rows = torch.clamp(torch.arange(h, device=x.device).view(1, 1, h, 1) + ty + 1, 0, h + 1)
    cols = torch.clamp(torch.arange(w, device=x.device).view(1, 1, 1, w) + tx + 1, 0, w + 1)
    shifted_rows = torch.gather(padded, 2, rows.expand(n, c, h, w + 2))
    return torch.gather(shifted_rows, 3, cols.expand(n, c, h, w))


def rand_cutout(x: torch.Tensor, generator: torch.Generator | None = None, ratio: float = CUTOUT_RATIO) -> torch.Tensor:
    """Zero a square of ``ratio`` x side at a random centre in each image (clipped at the border)."""
    n, _, h, w = x.shape
    size_y, size_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = _randint(0, h + (1 - size_y % 2), n, x.device, generator)
    cx = _randint(0, w + (1 - size_x % 2), n, x.device, generator)
    top, left = cy - size_y // 2, cx - size_x // 2
    rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
    inside = (rows >= top) & (rows < top + size_y) & (cols >= left) & (cols < left + size_x)
    return x * (~inside).to(x.dtype)


POLICIES = {"translation": rand_translation, "cutout": rand_cutout}


class DiffAugment:
    """Callable applying the configured policies in a fixed order (translation, then cutout)."""

    def __init__(self, policies: tuple[str, ...] | list[str], generator: torch.Generator | None = None) -> None:
        unknown = [p for p in policies if p not in POLICIES]
        if unknown:
            raise ValueError(f"unknown DiffAugment policies {unknown}; known: {sorted(POLICIES)}")
        self.policies = tuple(p for p in POLICIES if p in policies)
        self.generator = generator

    def __bool__(self) -> bool:
        return bool(self.policies)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for policy in self.policies:
            x = POLICIES[policy](x, self.generator)
        return x
