"""A small image encoder trained self-supervised on the archive's own real images (no download).

A random-weight network does not know what a medical image looks like: it scores upside-down or
polarity-inverted real images as closer to the real set than a trained generator. This encoder
learns the cues those controls break, from real images alone, for any grayscale modality:

- **Pretext task (orientation and polarity).** Each training image gets one of 16 transforms,
  the dihedral group of the square (rotation by 0/90/180/270 degrees, each with or without a
  vertical flip) times polarity (as is, or inverted ``x -> -x``), and the encoder learns to say
  which one (RotNet, Gidaris et al. 2018, extended to flips and polarity). To answer it must
  encode where anatomy sits and which way the grey levels run, which is what upside-down and
  inverted images violate. Images that are mirror-symmetric make some classes
  indistinguishable; that only raises the loss floor.
- **Augmentation.** The classifier sees two random views of each transformed image (a random
  crop of at least ``crop_min_scale`` of the side, resized back, and a small brightness/contrast
  change), so it must answer from anatomy, not from a few exact pixels.
- **Optional invariance (VICReg, Bardes et al. 2022)**, ``invariance_weight > 0``: the two
  views must embed close while each embedding dimension keeps unit spread. Measured off by
  default (``benchmarks/bench_extractor.py``): on CT phantoms it pulled the pretext accuracy
  down and left upside-down images almost as close to the real ones as real held-out images;
  the pretext task alone separated every control on both image families tried.

Features for FID are the encoder's pooled representation (before the heads). Images are float
N x H x W in [-1, 1], any side from 16 up; sides above ``max_side`` are area-downsampled to it
in training and extraction alike. Training is seeded and deterministic on the CPU: the same
seed, images and settings give bit-identical weights on one machine and torch build.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gan_assets.storage.digest import state_dict_sha256

log = logging.getLogger(__name__)

ARCHITECTURE = "domain_cnn_v1"
# Rotation (4) x vertical flip (2) x polarity (2): the dihedral group of the square, times inversion.
PRETEXT_CLASSES = 16
MIN_SIDE = 16


@dataclass(frozen=True)
class DomainEncoderSettings:
    """How the encoder is built and trained (all recorded beside the weights)."""

    widths: tuple[int, ...] = (32, 64, 128, 128)
    steps: int = 300
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    # Either weight may be 0 (not both): pretext alone (the measured default), or VICReg alone;
    # VICReg's own coefficients are fixed in vicreg_loss.
    pretext_weight: float = 1.0
    invariance_weight: float = 0.0
    crop_min_scale: float = 0.75
    intensity_jitter: float = 0.1
    # Pooled grid per feature map: 1 = global average (feature_dim = widths[-1]).
    pool_grid: int = 1
    # Larger images are area-downsampled to this side for training and extraction alike: each
    # doubling of the side multiplies the CPU time several-fold (docs/domain_extractor.md), and
    # every control (noise, blur of side/8, flips, inversion) is plain at 64.
    max_side: int = 64
    projector_dim: int = 128

    def __post_init__(self) -> None:
        if not self.widths or any(w < 4 for w in self.widths):
            raise ValueError(f"domain encoder widths={self.widths} is invalid: give one or more channel counts >= 4")
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError(f"domain encoder steps={self.steps} and batch_size={self.batch_size} must be >= 1 and >= 2")
        if not 0.0 < self.learning_rate < 1.0:
            raise ValueError(f"domain encoder learning_rate={self.learning_rate} must be in (0, 1)")
        if self.invariance_weight < 0 or self.pretext_weight < 0 or self.invariance_weight + self.pretext_weight == 0:
            raise ValueError(f"domain encoder pretext_weight={self.pretext_weight} and invariance_weight="
                             f"{self.invariance_weight} must be >= 0 and not both 0")
        if not 0.3 <= self.crop_min_scale <= 1.0:
            raise ValueError(f"domain encoder crop_min_scale={self.crop_min_scale} must be in [0.3, 1]")
        if not 0.0 <= self.intensity_jitter <= 0.5:
            raise ValueError(f"domain encoder intensity_jitter={self.intensity_jitter} must be in [0, 0.5]")
        if self.pool_grid not in (1, 2):
            raise ValueError(f"domain encoder pool_grid={self.pool_grid} must be 1 (global) or 2 (2 x 2)")
        if self.max_side < MIN_SIDE:
            raise ValueError(f"domain encoder max_side={self.max_side} must be >= {MIN_SIDE}")

    @property
    def feature_dim(self) -> int:
        return self.widths[-1] * self.pool_grid * self.pool_grid

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["widths"] = list(self.widths)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DomainEncoderSettings:
        known = {name for name in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"domain encoder settings have unknown fields {unknown}; written by a newer version?")
        values = dict(data)
        if "widths" in values:
            values["widths"] = tuple(int(w) for w in values["widths"])
        return cls(**values)


@dataclass(frozen=True)
class DomainEncoderWeights:
    """Trained weights (a state dict) and a JSON-able description of how they were made."""

    state: dict[str, torch.Tensor]
    description: dict[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> DomainEncoderSettings:
        return DomainEncoderSettings.from_dict(self.description["settings"])

    @property
    def sha256(self) -> str:
        return state_dict_sha256(self.state)


class DomainEncoder(nn.Module):
    """Stride-2 3x3 conv stages (conv, batch norm, LeakyReLU) then pooling; heads for training only."""

    def __init__(self, settings: DomainEncoderSettings) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 1
        for out_ch in settings.widths:
            layers += [
                nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out_ch),
                nn.LeakyReLU(0.2),
                # out_ch x (S / 2**k) x (S / 2**k)
            ]
            in_ch = out_ch
        self.body = nn.Sequential(*layers)
        self.pool_grid = settings.pool_grid
        dim = settings.feature_dim
        self.pretext_head = nn.Linear(dim, PRETEXT_CLASSES)
        self.projector = nn.Sequential(
            nn.Linear(dim, settings.projector_dim), nn.BatchNorm1d(settings.projector_dim), nn.ReLU(),
            nn.Linear(settings.projector_dim, settings.projector_dim),
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled representation (N x feature_dim) of N x 1 x S x S images in [-1, 1]."""
        maps = self.body(x)
        if self.pool_grid == 1:
            return maps.mean(dim=(2, 3))
        return F.adaptive_avg_pool2d(maps, self.pool_grid).flatten(1)



def images_sha256(images: np.ndarray) -> str:
    """SHA-256 of the training images as float32 (shape included)."""
    images = np.ascontiguousarray(images, dtype=np.float32)
    digest = hashlib.sha256(str(images.shape).encode())
    digest.update(images.tobytes())
    return digest.hexdigest()


def working_side(image_side: int, settings: DomainEncoderSettings) -> int:
    """The side the encoder sees for images of ``image_side`` (native, capped at max_side)."""
    return min(int(image_side), settings.max_side)


def to_working_size(batch: torch.Tensor, side: int) -> torch.Tensor:
    """N x 1 x H x W -> N x 1 x side x side (area filter: what extraction uses too)."""
    if batch.shape[-2:] == (side, side):
        return batch
    return F.interpolate(batch, size=(side, side), mode="area")


def pretext_transform(batch: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Apply class ``label`` to each image: rotation = label % 4, vflip = bit 2, inversion = bit 3."""
    out = torch.empty_like(batch)
    for label in range(PRETEXT_CLASSES):
        mask = labels == label
        if not bool(mask.any()):
            continue
        part = batch[mask]
        if label & 4:
            part = part.flip(-2)
        part = torch.rot90(part, k=label % 4, dims=(-2, -1))
        if label & 8:
            part = -part
        out[mask] = part
    return out


def _random_view(batch: torch.Tensor, settings: DomainEncoderSettings, generator: torch.Generator) -> torch.Tensor:
    """A random crop (zoomed back to full size) and a small brightness/contrast change per image."""
    n = batch.shape[0]
    scale = settings.crop_min_scale + (1.0 - settings.crop_min_scale) * torch.rand(n, generator=generator)
    # The crop stays inside the image: its centre moves at most (1 - scale) in normalised units.
    shift = (torch.rand(n, 2, generator=generator) * 2.0 - 1.0) * (1.0 - scale)[:, None]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = scale
    theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    view = F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False)
    jitter = settings.intensity_jitter
    contrast = 1.0 + jitter * (torch.rand(n, 1, 1, 1, generator=generator) * 2.0 - 1.0)
    brightness = jitter * (torch.rand(n, 1, 1, 1, generator=generator) * 2.0 - 1.0)
    return (view * contrast + brightness).clamp(-1.0, 1.0)


def vicreg_loss(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """VICReg: 25 * invariance (MSE) + 25 * variance hinge (std >= 1) + 1 * covariance (off-diagonal)."""
    n, d = z1.shape
    invariance = F.mse_loss(z1, z2)
    variance = z1.new_zeros(())
    covariance = z1.new_zeros(())
    for z in (z1, z2):
        z = z - z.mean(dim=0)
        std = torch.sqrt(z.var(dim=0) + 1e-4)
        variance = variance + F.relu(1.0 - std).mean() / 2.0
        cov = (z.T @ z) / (n - 1)
        off_diagonal = cov - torch.diag(torch.diag(cov))
        covariance = covariance + off_diagonal.pow(2).sum() / d / 2.0
    return 25.0 * invariance + 25.0 * variance + covariance


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"domain encoder needs square grayscale images N x S x S, got shape {images.shape}")
    if images.shape[0] < 2:
        raise ValueError(f"domain encoder needs at least 2 real images to train on, got {images.shape[0]}")
    if images.shape[1] < MIN_SIDE:
        raise ValueError(f"domain encoder needs images of side >= {MIN_SIDE}, got {images.shape[1]}")
    if not np.all(np.isfinite(images)):
        raise ValueError("domain encoder training images contain NaN or inf; check preprocessed_images")
    return images


def train_domain_encoder(images: np.ndarray, *, seed: int, settings: DomainEncoderSettings) -> DomainEncoderWeights:
    """Train the encoder on real images (float N x S x S in [-1, 1]) on the CPU; deterministic per seed."""
    images = _check_images(images)
    started = time.perf_counter()
    side = working_side(images.shape[1], settings)
    data = to_working_size(torch.from_numpy(images).unsqueeze(1), side)
    generator = torch.Generator().manual_seed(int(seed))
    # Weight init draws from torch's global RNG: seed it inside a fork so the caller's stream is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        encoder = DomainEncoder(settings)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.steps)
    batch_size = min(settings.batch_size, max(2, data.shape[0]))
    encoder.train()
    history: list[dict[str, float]] = []
    window: list[tuple[float, float, float]] = []
    for step in range(1, settings.steps + 1):
        index = torch.randint(0, data.shape[0], (batch_size,), generator=generator)
        labels = torch.randint(0, PRETEXT_CLASSES, (batch_size,), generator=generator)
        transformed = pretext_transform(data[index], labels)
        view1 = _random_view(transformed, settings, generator)
        view2 = _random_view(transformed, settings, generator)
        both = torch.cat([view1, view2])
        features = encoder.features(both)
        logits = encoder.pretext_head(features)
        pretext = F.cross_entropy(logits, torch.cat([labels, labels]))
        loss = settings.pretext_weight * pretext
        invariance = torch.zeros(())
        if settings.invariance_weight > 0:
            z = encoder.projector(features)
            invariance = vicreg_loss(z[:batch_size], z[batch_size:])
            loss = loss + settings.invariance_weight * invariance
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        accuracy = float((logits.argmax(dim=1) == torch.cat([labels, labels])).float().mean())
        window.append((pretext.item(), invariance.item(), accuracy))
        if step % max(1, settings.steps // 10) == 0 or step == settings.steps:
            mean = np.mean(window, axis=0)
            history.append({"step": step, "pretext_loss": float(mean[0]), "invariance_loss": float(mean[1]),
                            "pretext_accuracy": float(mean[2])})
            log.info("domain encoder step %d/%d: pretext loss %.3f (accuracy %.2f), invariance loss %.3f",
                     step, settings.steps, mean[0], mean[2], mean[1])
            window = []
    encoder.eval()
    state = {name: tensor.detach().clone() for name, tensor in encoder.state_dict().items()}
    seconds = time.perf_counter() - started
    final = history[-1]
    description = {
        "architecture": ARCHITECTURE,
        "settings": settings.to_dict(),
        "seed": int(seed),
        "feature_dim": settings.feature_dim,
        "pretext_classes": PRETEXT_CLASSES,
        "pretext": "rotation 0/90/180/270 x vertical flip x polarity inversion (16 classes)",
        "invariance": "VICReg between two random crops/intensity jitters" if settings.invariance_weight > 0 else "none",
        "image_count": int(images.shape[0]),
        "image_side": int(images.shape[1]),
        "working_side": int(side),
        "images_sha256": images_sha256(images),
        "seconds": round(seconds, 3),
        "final_losses": {"pretext": final["pretext_loss"], "invariance": final["invariance_loss"]},
        "final_pretext_accuracy": final["pretext_accuracy"],
        "history": history,
    }
    return DomainEncoderWeights(state=state, description=description)


def encoder_from_weights(weights: DomainEncoderWeights) -> DomainEncoder:
    """The eval-mode encoder the weights describe (raises ValueError on a mismatch)."""
    architecture = weights.description.get("architecture")
    if architecture != ARCHITECTURE:
        raise ValueError(
            f"domain encoder weights are of architecture {architecture!r}, this code builds {ARCHITECTURE!r}; "
            "re-materialize fid_feature_extractor"
        )
    encoder = DomainEncoder(weights.settings)
    try:
        encoder.load_state_dict(weights.state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"domain encoder weights do not fit the described architecture ({err}); "
                         "re-materialize fid_feature_extractor") from err
    return encoder.eval()


def weights_to_tensors(weights: DomainEncoderWeights) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, attrs) to store as a TensorBundle; attrs hold the description under ``encoder``."""
    return dict(weights.state), {"encoder": weights.description, "weights_sha256": weights.sha256}


def weights_from_tensors(tensors: dict[str, torch.Tensor], attrs: dict[str, Any]) -> DomainEncoderWeights:
    """The weights stored by :func:`weights_to_tensors` (checks the recorded SHA-256)."""
    if "encoder" not in attrs or not tensors:
        raise ValueError(
            "the fid_feature_extractor bundle holds no domain encoder (it was materialized while "
            "fid_extractor.kind was not 'domain'); re-materialize fid_feature_extractor with kind='domain'"
        )
    weights = DomainEncoderWeights(state=dict(tensors), description=dict(attrs["encoder"]))
    recorded = attrs.get("weights_sha256")
    if recorded is not None and recorded != weights.sha256:
        raise ValueError(f"domain encoder weights hash {weights.sha256[:12]} differs from the recorded {str(recorded)[:12]}; "
                         "the stored weights are damaged: re-materialize fid_feature_extractor")
    return weights
