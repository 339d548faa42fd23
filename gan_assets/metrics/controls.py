"""Control image sets that tell whether a quality gate can see anything at all.

A gate is only trustworthy if it fails image sets that are obviously wrong and passes real
images it has not seen. Every month the controls below are built from that month's real
images (seeded, deterministic) and scored exactly like the generator: same extractor, same
reference set, same number of images.

========================  ========  =========================================================
control                   kind      what it is
========================  ========  =========================================================
``uniform_noise``         negative  i.i.d. uniform noise over the full range [-1, 1]
``gaussian_noise``        negative  i.i.d. Gaussian noise with the real pixels' mean and std
``mean_plus_noise``       negative  the mean real image plus per-pixel Gaussian noise of the
                                    real images' per-pixel spread
``constant``              negative  every pixel at the real images' mean grey level
``blurred``               negative  real images blurred (Gaussian, sigma = side / 8) until
                                    anatomy is gone
``flipped_vertical``      negative  real images upside down
``inverted``              negative  real images with inverted polarity (x -> -x)
``held_out_real``         positive  real images of the month not in the reference set
========================  ========  =========================================================

The month's real images are split once (:func:`split_reference`) into a reference set (what
every candidate is scored against) and a held-out set (the positive control, and the source of
the image-derived negatives). Images are float32 N x H x W in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.ndimage import gaussian_filter

ControlKind = Literal["negative", "positive"]

NEGATIVE_CONTROLS = (
    "uniform_noise", "gaussian_noise", "mean_plus_noise", "constant", "blurred", "flipped_vertical", "inverted",
)
# Blur strong enough to erase anatomy at any image size: sigma is an eighth of the side.
BLUR_SIGMA_FRACTION = 1.0 / 8.0
# A constant image has no spread; a whisper of noise keeps its feature covariance full rank
# without making it look like anything (1/1000 of the range is below one uint8 step).
CONSTANT_JITTER = 1e-3


@dataclass(frozen=True)
class ControlSet:
    """One control's images and what a good gate must say about them."""

    name: str
    kind: ControlKind
    images: np.ndarray


@dataclass(frozen=True)
class ReferenceSplit:
    """The month's real images split into the scoring reference and a held-out set (by index)."""

    reference_index: np.ndarray
    held_out_index: np.ndarray
    seed: int


def split_reference(count: int, seed: int = 0) -> ReferenceSplit:
    """A seeded split of ``count`` images into a reference half and a held-out half.

    The reference gets the larger half when ``count`` is odd; the held-out half sets how many
    images every candidate (generator and controls) is scored with.
    """
    if count < 4:
        raise ValueError(f"controls need at least 4 real images (two halves of 2), got {count}")
    order = np.random.default_rng(seed).permutation(count)
    held = count // 2
    return ReferenceSplit(reference_index=np.sort(order[held:]), held_out_index=np.sort(order[:held]), seed=seed)


def _clip(images: np.ndarray) -> np.ndarray:
    return np.clip(images, -1.0, 1.0).astype(np.float32, copy=False)


def build_controls(real: np.ndarray, held_out: np.ndarray, seed: int = 0) -> list[ControlSet]:
    """Every control of the table above, each with ``len(held_out)`` images.

    ``real`` (all the month's real images) sets the statistics the synthetic negatives copy
    (mean, spread); ``held_out`` (images not in the reference set) is the positive control and
    the source of the image-derived negatives, so no negative is a transformed copy of an image
    it is compared with.
    """
    real = np.asarray(real, dtype=np.float32)
    held_out = np.asarray(held_out, dtype=np.float32)
    if real.ndim != 3 or held_out.ndim != 3 or real.shape[1:] != held_out.shape[1:]:
        raise ValueError(f"controls need N x H x W images of one size, got {real.shape} and {held_out.shape}")
    count, side = held_out.shape[0], held_out.shape[1:]
    rng = np.random.default_rng(seed)
    mean_level = float(real.mean())
    spread = float(real.std())
    mean_image = real.mean(axis=0)
    pixel_spread = real.std(axis=0)
    sigma = BLUR_SIGMA_FRACTION * float(max(side))

    builders: dict[str, Callable[[], np.ndarray]] = {
        "uniform_noise": lambda: rng.uniform(-1.0, 1.0, size=(count, *side)),
        "gaussian_noise": lambda: rng.normal(mean_level, spread, size=(count, *side)),
        "mean_plus_noise": lambda: mean_image[None] + rng.normal(size=(count, *side)) * pixel_spread[None],
        "constant": lambda: mean_level + CONSTANT_JITTER * rng.standard_normal(size=(count, *side)),
        # Blur each image in its own plane only (sigma 0 along the batch axis).
        "blurred": lambda: gaussian_filter(held_out, sigma=(0.0, sigma, sigma), mode="reflect"),
        "flipped_vertical": lambda: held_out[:, ::-1, :],
        "inverted": lambda: -held_out,
    }
    controls = [ControlSet(name, "negative", _clip(builders[name]())) for name in NEGATIVE_CONTROLS]
    controls.append(ControlSet("held_out_real", "positive", _clip(held_out)))
    return controls
