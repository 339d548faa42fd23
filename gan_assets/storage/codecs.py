"""Serialise values by type into open formats; never pickle.

| value                                   | extension | loaded with                       |
|-----------------------------------------|-----------|-----------------------------------|
| ArrayBundle (named arrays + JSON attrs) | .npz      | numpy.load(allow_pickle=False)     |
| numpy.ndarray                           | .npy      | numpy.load(allow_pickle=False)     |
| TensorBundle (named tensors + attrs)    | .pt       | torch.load(weights_only=True)      |
| dict / list (JSON-able)                 | .json     | json.loads                         |
| pandas.DataFrame                        | .csv      | pandas.read_csv (dtypes recorded)  |
| Blob (bytes + extension: png, html, dcm)| .<ext>    | raw bytes                          |

Anything else is refused at write time with StorageTypeError (a subclass of TypeError).
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ATTRS_KEY = "__attrs__"
_BLOB_EXTENSIONS = ("png", "html", "dcm", "txt", "md", "svg")


class StorageTypeError(TypeError):
    """A value of a type that has no safe open format."""


class StorageFormatError(ValueError):
    """A stored object cannot be decoded (garbled, truncated or tampered with)."""


@dataclass
class ArrayBundle:
    """Named numpy arrays plus JSON-able attributes, stored as one ``.npz``."""

    arrays: dict[str, np.ndarray]
    attrs: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]


@dataclass
class TensorBundle:
    """Named torch tensors (e.g. a state dict) plus JSON-able attributes, stored as ``.pt``."""

    tensors: dict[str, Any]
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Blob:
    """Bytes that already are a file in an open format (PNG, HTML, DICOM...)."""

    data: bytes
    extension: str

    def __post_init__(self) -> None:
        self.extension = self.extension.lstrip(".").lower()
        if self.extension not in _BLOB_EXTENSIONS:
            raise StorageTypeError(
                f"Blob extension {self.extension!r} is not one of {_BLOB_EXTENSIONS}"
            )


def known_extensions() -> tuple[str, ...]:
    return ("npz", "npy", "pt", "json", "csv", *_BLOB_EXTENSIONS)


def _json_bytes(value: Any) -> bytes:
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False, indent=1).encode()
    except (TypeError, ValueError) as err:
        raise StorageTypeError(
            f"value is not strict JSON ({err}); convert numpy scalars to float/int and "
            "replace NaN/inf before storing"
        ) from err


def _check_plain_array(name: str, array: np.ndarray) -> None:
    if array.dtype.hasobject:
        raise StorageTypeError(
            f"array {name!r} has dtype object, which only pickle can store; "
            "use a numeric or fixed-width string dtype (e.g. np.str_)"
        )


def encode(value: Any) -> tuple[str, bytes]:
    """Return ``(extension, bytes)`` for a value, or raise StorageTypeError."""
    if isinstance(value, Blob):
        return value.extension, value.data
    if isinstance(value, ArrayBundle):
        if ATTRS_KEY in value.arrays:
            raise StorageTypeError(f"array name {ATTRS_KEY!r} is reserved")
        payload: dict[str, np.ndarray] = {}
        for name, array in value.arrays.items():
            array = np.asarray(array)
            _check_plain_array(name, array)
            payload[name] = array
        payload[ATTRS_KEY] = np.frombuffer(_json_bytes(value.attrs), dtype=np.uint8)
        buf = io.BytesIO()
        np.savez(buf, **payload)
        return "npz", buf.getvalue()
    if isinstance(value, np.ndarray):
        _check_plain_array("value", value)
        buf = io.BytesIO()
        np.save(buf, value, allow_pickle=False)
        return "npy", buf.getvalue()
    if isinstance(value, TensorBundle):
        import torch

        for name, tensor in value.tensors.items():
            if not isinstance(tensor, torch.Tensor):
                raise StorageTypeError(f"TensorBundle entry {name!r} is {type(tensor).__name__}, not a tensor")
        buf = io.BytesIO()
        tensors = {k: v.detach().cpu().contiguous() for k, v in value.tensors.items()}
        torch.save({"tensors": tensors, "attrs_json": _json_bytes(value.attrs).decode()}, buf)
        return "pt", buf.getvalue()
    if isinstance(value, (dict, list)):
        return "json", _json_bytes(value)
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a hard dependency
        pd = None
    if pd is not None and isinstance(value, pd.DataFrame):
        # dtypes travel in a header comment line so that a reload gives the same frame.
        dtypes = {str(c): str(t) for c, t in value.dtypes.items()}
        text = "# dtypes: " + json.dumps(dtypes, sort_keys=True) + "\n" + value.to_csv(index=False)
        return "csv", text.encode()
    if isinstance(value, (float, int)) and not isinstance(value, bool) and math.isfinite(value):
        return "json", _json_bytes(value)
    raise StorageTypeError(
        f"cannot store a value of type {type(value).__module__}.{type(value).__qualname__} in an "
        "open format; return an ArrayBundle, TensorBundle, numpy array, DataFrame, JSON dict/list "
        "or Blob (no pickle fallback by design)"
    )


def decode(extension: str, data: bytes, *, where: str = "object") -> Any:
    """Inverse of :func:`encode`; garbled input raises StorageFormatError naming ``where``."""
    extension = extension.lstrip(".").lower()
    try:
        if extension == "npz":
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            attrs_raw = arrays.pop(ATTRS_KEY, None)
            attrs = json.loads(attrs_raw.tobytes().decode()) if attrs_raw is not None else {}
            return ArrayBundle(arrays=arrays, attrs=attrs)
        if extension == "npy":
            return np.load(io.BytesIO(data), allow_pickle=False)
        if extension == "pt":
            import torch

            payload = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
            if not isinstance(payload, dict) or "tensors" not in payload:
                raise StorageFormatError(f"{where}: .pt object is not a TensorBundle")
            return TensorBundle(tensors=dict(payload["tensors"]), attrs=json.loads(payload.get("attrs_json", "{}")))
        if extension == "json":
            return json.loads(data.decode())
        if extension == "csv":
            import pandas as pd

            text = data.decode()
            first, _, rest = text.partition("\n")
            dtypes: dict[str, str] = {}
            if first.startswith("# dtypes: "):
                dtypes = json.loads(first[len("# dtypes: "):])
                text = rest
            frame = pd.read_csv(io.StringIO(text), keep_default_na=False, na_values=[""])
            for column, dtype in dtypes.items():
                if column in frame.columns and dtype != "object":
                    frame[column] = frame[column].astype(dtype)
                elif column in frame.columns:
                    frame[column] = frame[column].astype(object).where(frame[column].notna(), "")
            return frame
        if extension in _BLOB_EXTENSIONS:
            return Blob(data=data, extension=extension)
    except StorageFormatError:
        raise
    except (ValueError, OSError, EOFError, KeyError, UnicodeDecodeError, zipfile.BadZipFile, RuntimeError) as err:
        raise StorageFormatError(
            f"{where}: stored .{extension} object is corrupt or not in the expected format "
            f"({type(err).__name__}: {err}); re-materialize the asset that wrote it"
        ) from err
    except Exception as err:  # torch's unpickler raises its own types for tampered files
        if type(err).__name__ == "UnpicklingError":
            raise StorageFormatError(
                f"{where}: .pt object holds something other than tensors and plain values "
                f"and was refused by the safe loader ({err})"
            ) from err
        raise
    raise StorageFormatError(f"{where}: unknown extension .{extension}; known: {known_extensions()}")
