"""Content hashes of stored values: what data versions, model history and reports name.

A hash covers the content, not the file format: the same weights give the same hash whether
stored as safetensors or in any other container, and the same images whatever the container.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np


def state_dict_sha256(state: Mapping[str, Any]) -> str:
    """SHA-256 over names, shapes, dtypes and bytes of a state dict (independent of file format)."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        if tensor.dtype != torch.float32:
            digest.update(str(tensor.dtype).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def arrays_sha256(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of named arrays (e.g. packed images and ids)."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{array.dtype.str}|{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
