"""Feature networks for FID/KID, and the fingerprint that says exactly which one produced a score.

- :class:`RandomConvExtractor` (offline default): a small convolutional network whose weights are
  drawn once from a seed (numpy PCG64, so the same seed gives the same weights on any machine and
  torch version) and never trained. Random-network embeddings are a documented evaluation method
  (Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for Generative Models"); they need
  no download and run at the images' native resolution, fast on a CPU. Their scores are only
  comparable with scores of the same fingerprint, never with published Inception FIDs.
- :class:`DomainExtractor`: the pooled representation of a small encoder trained
  self-supervised on the archive's own real images (``gan_assets.metrics.domain_encoder``:
  orientation/polarity prediction plus augmentation invariance). It knows what an upright
  image of this archive looks like, so upside-down, inverted, blurred or noise images land far
  from the real ones. Its fingerprint names the exact trained weights.
- :class:`TorchScriptExtractor`: any TorchScript feature network saved as a file (for example the
  Inception-v3 network that published FIDs use), with the input size, resize filter and value
  range it expects; grayscale images are replicated to three channels.

Inputs are float images N x H x W in [-1, 1]; outputs are float32 features N x D.
"""

from __future__ import annotations

import hashlib
import json
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gan_assets.metrics.domain_encoder import DomainEncoderWeights, encoder_from_weights, working_side
from gan_assets.model.device import resolve_device
from gan_assets.storage.digest import state_dict_sha256

log = logging.getLogger(__name__)

RESIZE_FILTERS = ("bilinear", "bicubic", "nearest", "area")
INPUT_RANGES = ("-1..1", "0..1", "0..255")
FEATURE_DTYPE = "float32 features, float64 statistics"
# Bumped when the preprocessing or the random architecture changes, so old caches are not reused.
EXTRACTOR_CODE_VERSION = 1


class ExtractorError(ValueError):
    """The feature extractor is misconfigured or produced unusable output; the message says what to do."""


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ExtractorError(f"fid_extractor.{name}={value!r} is invalid: choose one of {', '.join(choices)}")


def _as_image_batch(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 3:
        raise ExtractorError(f"images must be N x H x W grayscale in [-1, 1], got shape {images.shape}")
    return images


class FeatureExtractor(ABC):
    """Maps grayscale images in [-1, 1] (N x H x W) to float32 features (N x feature_dim)."""

    name: str
    resize_filter: str
    input_range: str
    batch_size: int
    device: torch.device
    # Set by each subclass's constructor once its weights are fixed.
    _sha: str
    _feature_dim: int

    @property
    def weights_sha256(self) -> str:
        return self._sha

    @property
    def feature_dim(self) -> int:
        return self._feature_dim

    @abstractmethod
    def input_size_for(self, image_size: int) -> int:
        """Side length the network sees for images of side ``image_size``."""

    @abstractmethod
    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Network call on a preprocessed N x C x S x S batch."""

    @abstractmethod
    def _channels(self) -> int: ...

    def _preprocess(self, batch: torch.Tensor) -> torch.Tensor:
        # batch: N x 1 x H x W in [-1, 1]
        size = self.input_size_for(batch.shape[-1])
        if batch.shape[-2:] != (size, size):
            kwargs: dict[str, Any] = {}
            if self.resize_filter in ("bilinear", "bicubic"):
                kwargs["align_corners"] = False
            batch = F.interpolate(batch, size=(size, size), mode=self.resize_filter, **kwargs)
        if self.input_range == "0..1":
            batch = (batch + 1.0) * 0.5
        elif self.input_range == "0..255":
            batch = (batch + 1.0) * 127.5
        if self._channels() == 3:
            batch = batch.expand(-1, 3, -1, -1)
        return batch

    @torch.inference_mode()
    def extract(self, images: np.ndarray) -> np.ndarray:
        """Features (float32, N x feature_dim) of images (N x H x W, float in [-1, 1])."""
        images = _as_image_batch(images)
        out = np.empty((images.shape[0], self.feature_dim), dtype=np.float32)
        # cuDNN convolutions default to TF32 on recent GPUs (10-bit mantissa): features would
        # then differ from CPU ones by ~1e-3 while the fingerprint says float32. Keep full fp32.
        # The same for matmuls (a training run in this process may have lowered the precision).
        matmul_precision = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")
        try:
            with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
                self._extract_into(images, out)
        finally:
            torch.set_float32_matmul_precision(matmul_precision)
        if not np.all(np.isfinite(out)):
            raise ExtractorError(f"{self.name} produced NaN/inf features; check the network and its input_range")
        return out

    def _extract_into(self, images: np.ndarray, out: np.ndarray) -> None:
        for start in range(0, images.shape[0], self.batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(images[start:start + self.batch_size], dtype=np.float32))
            batch = self._preprocess(chunk.unsqueeze(1).to(self.device))
            features = self._forward(batch)
            features = features.reshape(features.shape[0], -1).float().cpu().numpy()
            if features.shape[1] != self.feature_dim:
                raise ExtractorError(
                    f"{self.name} returned {features.shape[1]} features per image, expected {self.feature_dim}"
                )
            out[start:start + features.shape[0]] = features

    def describe(self, image_size: int) -> dict[str, Any]:
        """What determines the features (and so the cache): no sample counts."""
        return {
            "extractor": self.name,
            "weights_sha256": self.weights_sha256,
            "input_size": self.input_size_for(image_size),
            "native_image_size": int(image_size),
            "resize_filter": self.resize_filter,
            "input_range": self.input_range,
            "channels": self._channels(),
            "feature_dim": self.feature_dim,
            "dtype": FEATURE_DTYPE,
            "code_version": EXTRACTOR_CODE_VERSION,
        }

    def fingerprint_id(self, image_size: int) -> str:
        """Short stable id of :meth:`describe` (names the real-feature cache)."""
        blob = json.dumps(self.describe(image_size), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def fingerprint(self, image_size: int, n_real: int, n_fake: int) -> dict[str, Any]:
        """Everything a reader needs to know whether two scores are comparable."""
        return {
            **self.describe(image_size),
            "n_real": int(n_real),
            "n_fake": int(n_fake),
            "id": self.fingerprint_id(image_size),
        }


class _RandomConvNet(nn.Module):
    """Four stride-2 3x3 convolutions with LeakyReLU, then global average pooling."""

    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 1
        for out_ch in widths:
            layers += [nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
            # out_ch x (S / 2**k) x (S / 2**k)
            in_ch = out_ch
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))  # feature_dim per image


class RandomConvExtractor(FeatureExtractor):
    """Fixed, seeded random-weight conv network at the images' native resolution (offline default)."""

    def __init__(self, feature_dim: int = 512, seed: int = 0, batch_size: int = 256, device: str = "cpu",
                 input_size: int = 0, resize_filter: str = "bilinear") -> None:
        if feature_dim < 8 or feature_dim % 8:
            raise ExtractorError(f"fid_extractor.feature_dim={feature_dim} is invalid: use a multiple of 8, >= 8")
        if batch_size < 1:
            raise ExtractorError(f"fid_extractor.batch_size={batch_size} is invalid: must be >= 1")
        if input_size < 0:
            raise ExtractorError(f"fid_extractor.input_size={input_size} is invalid: 0 (native) or a side in pixels")
        _check_choice("resize_filter", resize_filter, RESIZE_FILTERS)
        self.name = "random_conv"
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.device = resolve_device(device, "fid_extractor.device")
        self.input_size = int(input_size)
        self.resize_filter = resize_filter
        self.input_range = "-1..1"
        self._feature_dim = int(feature_dim)
        widths = [feature_dim // 8, feature_dim // 4, feature_dim // 2, feature_dim]
        self.net = _RandomConvNet(widths)
        self._init_weights()
        self.net.to(self.device).eval()
        self._sha = state_dict_sha256(self.net.state_dict())

    def _init_weights(self) -> None:
        # He-normal weights and small biases from numpy's PCG64: stable across machines and
        # torch versions (torch's own RNG streams are not guaranteed to be).
        rng = np.random.Generator(np.random.PCG64(self.seed))
        with torch.no_grad():
            for module in self.net.modules():
                if isinstance(module, nn.Conv2d):
                    fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
                    weight = rng.standard_normal(tuple(module.weight.shape)) * np.sqrt(2.0 / fan_in)
                    module.weight.copy_(torch.from_numpy(weight.astype(np.float32)))
                    bias = rng.standard_normal(tuple(module.bias.shape)) * 0.01
                    module.bias.copy_(torch.from_numpy(bias.astype(np.float32)))

    def input_size_for(self, image_size: int) -> int:
        return self.input_size or int(image_size)

    def _channels(self) -> int:
        return 1

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.net(batch)

    def describe(self, image_size: int) -> dict[str, Any]:
        return {**super().describe(image_size), "seed": self.seed}


class TorchScriptExtractor(FeatureExtractor):
    """A TorchScript feature network loaded from a file, fed 3-channel images of ``input_size``."""

    def __init__(self, path: str, input_size: int = 299, resize_filter: str = "bilinear",
                 input_range: str = "0..255", batch_size: int = 64, device: str = "cpu") -> None:
        _check_choice("resize_filter", resize_filter, RESIZE_FILTERS)
        _check_choice("input_range", input_range, INPUT_RANGES)
        if input_size < 8:
            raise ExtractorError(f"fid_extractor.input_size={input_size} is invalid: the side the network expects, e.g. 299")
        if batch_size < 1:
            raise ExtractorError(f"fid_extractor.batch_size={batch_size} is invalid: must be >= 1")
        file = Path(path).expanduser()
        if not path or not file.is_file():
            raise ExtractorError(
                f"fid_extractor.torchscript_path={path!r} is not a file; download the TorchScript "
                "feature network once and give its local path (no download happens at run time)"
            )
        data = file.read_bytes()
        self._sha = hashlib.sha256(data).hexdigest()
        self.device = resolve_device(device, "fid_extractor.device")
        try:
            self.module = torch.jit.load(str(file), map_location=self.device).eval()
        except (RuntimeError, ValueError) as err:
            raise ExtractorError(
                f"fid_extractor.torchscript_path={path!r} is not a loadable TorchScript file ({err}); "
                "save the network with torch.jit.script(...).save(path) or torch.jit.trace(...).save(path)"
            ) from err
        self.name = f"torchscript:{file.name}"
        self.path = str(file)
        self.input_size = int(input_size)
        self.resize_filter = resize_filter
        self.input_range = input_range
        self.batch_size = int(batch_size)
        self._feature_dim = self._probe_dim()
        log.info("Loaded TorchScript feature network %s (sha256 %s, %d features)", file, self._sha[:12], self._feature_dim)

    def _probe_dim(self) -> int:
        # One forward pass on two blank images tells the feature size before any real work.
        with torch.inference_mode():
            probe = self._preprocess(torch.zeros(2, 1, self.input_size, self.input_size, device=self.device))
            out = self._forward(probe)
        if out.shape[0] != 2:
            raise ExtractorError(f"{self.name} returned batch size {out.shape[0]} for 2 inputs; it must map N images to N feature vectors")
        return int(out.reshape(2, -1).shape[1])

    def input_size_for(self, image_size: int) -> int:
        return self.input_size

    def _channels(self) -> int:
        return 3

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        out = self.module(batch)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise ExtractorError(f"{self.name} returned {type(out).__name__}; it must return a tensor of features")
        return out


class DomainExtractor(FeatureExtractor):
    """Pooled features of a domain encoder trained on real images (see ``metrics.domain_encoder``)."""

    def __init__(self, weights: DomainEncoderWeights, batch_size: int = 256, device: str = "cpu") -> None:
        if batch_size < 1:
            raise ExtractorError(f"fid_extractor.batch_size={batch_size} is invalid: must be >= 1")
        try:
            encoder = encoder_from_weights(weights)
        except ValueError as err:
            raise ExtractorError(str(err)) from err
        self.name = "domain"
        self.settings = weights.settings
        self.description = weights.description
        self.batch_size = int(batch_size)
        self.device = resolve_device(device, "fid_extractor.device")
        # Training downsampled with the area filter; extraction must see images the same way.
        self.resize_filter = "area"
        self.input_range = "-1..1"
        self._feature_dim = int(self.settings.feature_dim)
        self.encoder = encoder.to(self.device)
        self._sha = weights.sha256

    def input_size_for(self, image_size: int) -> int:
        return working_side(image_size, self.settings)

    def _channels(self) -> int:
        return 1

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.encoder.features(batch)

    def describe(self, image_size: int) -> dict[str, Any]:
        return {
            **super().describe(image_size),
            "architecture": self.description.get("architecture"),
            "trained_on_images": self.description.get("image_count"),
            "training_images_sha256": self.description.get("images_sha256"),
        }


def compare_fingerprints(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Human-readable differences between two score fingerprints (empty: directly comparable).

    Sample counts are listed too: FID is biased by N, so scores from different counts differ
    even for the same model.
    """
    keys = sorted((set(a) | set(b)) - {"id"})
    return [f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]
