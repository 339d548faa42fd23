"""Which torch device a setting names: one rule for training, sampling and feature extraction."""

from __future__ import annotations

import torch


class DeviceError(RuntimeError):
    """A setting names a device this machine does not have; the message names the setting."""


def resolve_device(requested: str | None, setting: str = "device") -> torch.device:
    """'auto' (or empty) -> CUDA when torch sees a GPU, else CPU; an explicit CUDA device must exist.

    ``setting`` is the configuration field the value came from, so the error says what to change.
    """
    requested = (requested or "auto").strip()
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"{setting}={requested!r} asks for CUDA but torch sees no GPU; use 'auto' or 'cpu'")
    return device
