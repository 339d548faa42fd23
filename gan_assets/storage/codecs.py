"""Serialise values by type into open formats; never pickle.

| value                                   | extension    | loaded with                        |
|-----------------------------------------|--------------|------------------------------------|
| ArrayBundle (named arrays + JSON attrs) | .npz         | numpy.load(allow_pickle=False)     |
| numpy.ndarray                           | .npy         | numpy.load(allow_pickle=False)     |
| TensorBundle (named tensors + attrs)    | .safetensors | safetensors.torch.load (no pickle) |
| dict / list / finite number (JSON)      | .json        | json.loads                         |
| pandas.DataFrame                        | .parquet     | pyarrow (schema stored), to_pandas |
| pyarrow.Table (declared schema)         | .parquet     | pyarrow.parquet.read_table         |
| Blob (bytes + extension: png, html, dcm)| .<ext>       | raw bytes                          |

Anything else is refused at write time with StorageTypeError (a subclass of TypeError).
Anything that does not decode as its extension promises (truncated, garbled, or a retired
pickle-based ``.pt``) raises StorageFormatError naming the object. A well-formed file whose
bytes were changed still decodes: ``storage.integrity`` catches that against the recorded SHA-256.
"""

from __future__ import annotations

import io
import json
import math
import struct
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
    """Named torch tensors (e.g. a state dict) plus JSON-able attributes, stored as ``.safetensors``."""

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
        if not isinstance(self.data, (bytes, bytearray, memoryview)):
            raise StorageTypeError(f"Blob data must be bytes, not {type(self.data).__name__}")
        self.data = bytes(self.data)


def known_extensions() -> tuple[str, ...]:
    return ("npz", "npy", "safetensors", "json", "parquet", *_BLOB_EXTENSIONS)


def _json_bytes(value: Any, what: str = "value") -> bytes:
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False, indent=1).encode()
    except (TypeError, ValueError) as err:
        raise StorageTypeError(
            f"{what} is not strict JSON ({err}); convert numpy scalars/arrays to float/int/list "
            "and replace NaN/inf before storing"
        ) from err


def _check_plain_array(name: str, array: np.ndarray) -> None:
    if array.dtype.hasobject:
        raise StorageTypeError(
            f"array {name!r} has dtype object, which only pickle can store; "
            "use a numeric or fixed-width string dtype (e.g. np.str_)"
        )


def _encode_array_bundle(value: ArrayBundle) -> bytes:
    if not isinstance(value.arrays, dict):
        raise StorageTypeError(f"ArrayBundle.arrays must be a dict, not {type(value.arrays).__name__}")
    if ATTRS_KEY in value.arrays:
        raise StorageTypeError(f"array name {ATTRS_KEY!r} is reserved")
    payload: dict[str, np.ndarray] = {}
    for name, array in value.arrays.items():
        if not isinstance(name, str) or not name or "/" in name:
            raise StorageTypeError(f"ArrayBundle array names must be non-empty strings without '/', got {name!r}")
        array = np.asarray(array)
        _check_plain_array(name, array)
        payload[name] = array
    if not isinstance(value.attrs, dict):
        raise StorageTypeError(f"ArrayBundle.attrs must be a dict, not {type(value.attrs).__name__}")
    payload[ATTRS_KEY] = np.frombuffer(_json_bytes(value.attrs, "ArrayBundle.attrs"), dtype=np.uint8)
    buf = io.BytesIO()
    # Uncompressed: packed uint8 images barely compress and savez is several times faster.
    np.savez(buf, **payload)
    return buf.getvalue()


def _encode_tensor_bundle(value: TensorBundle) -> bytes:
    import torch
    from safetensors.torch import save

    if not isinstance(value.tensors, dict):
        raise StorageTypeError(f"TensorBundle.tensors must be a dict, not {type(value.tensors).__name__}")
    tensors: dict[str, Any] = {}
    for name, tensor in value.tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise StorageTypeError(f"TensorBundle names must be strings other than '__metadata__', got {name!r}")
        if not isinstance(tensor, torch.Tensor):
            raise StorageTypeError(f"TensorBundle entry {name!r} is {type(tensor).__name__}, not a tensor")
        # safetensors refuses tensors that share memory (tied weights, views); a copy holds
        # exactly the tensor's own bytes.
        tensors[name] = tensor.detach().cpu().contiguous().clone()
    if not isinstance(value.attrs, dict):
        raise StorageTypeError(f"TensorBundle.attrs must be a dict, not {type(value.attrs).__name__}")
    attrs_json = _json_bytes(value.attrs, "TensorBundle.attrs").decode()
    return save(tensors, metadata={ATTRS_KEY: attrs_json})


def _pd() -> Any:
    import pandas as pd

    return pd


def _encode_table(table: Any) -> bytes:
    """A pyarrow Table as Parquet: its schema (types, nullability, metadata) is stored with it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _encode_frame(frame: Any) -> bytes:
    import pyarrow as pa

    # A named index (set_index("id")) carries data: keep it as columns. An unnamed one is a
    # row number and is dropped; the frame comes back with a RangeIndex.
    if any(name is not None for name in frame.index.names):
        frame = frame.reset_index()
    columns = list(frame.columns)
    if not all(isinstance(c, str) for c in columns) or len(set(columns)) != len(columns):
        raise StorageTypeError(f"DataFrame columns must be unique strings to store as Parquet, got {columns!r}")
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
        raise StorageTypeError(
            f"DataFrame cannot be stored as Parquet ({err}); give each column one type "
            "(str, int, float, bool) and missing cells as None"
        ) from err
    return _encode_table(table)


def _decode_parquet(data: bytes) -> Any:
    """A stored DataFrame comes back as a DataFrame, a stored pyarrow Table as a Table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(pa.BufferReader(data))
    if table.schema.metadata and b"pandas" in table.schema.metadata:
        return table.to_pandas()
    return table


def encode(value: Any) -> tuple[str, bytes]:
    """Return ``(extension, bytes)`` for a value, or raise StorageTypeError."""
    if isinstance(value, Blob):
        return value.extension, value.data
    if isinstance(value, ArrayBundle):
        return "npz", _encode_array_bundle(value)
    if isinstance(value, np.ndarray):
        _check_plain_array("value", value)
        buf = io.BytesIO()
        np.save(buf, value, allow_pickle=False)
        return "npy", buf.getvalue()
    if isinstance(value, TensorBundle):
        return "safetensors", _encode_tensor_bundle(value)
    if isinstance(value, (dict, list)):
        return "json", _json_bytes(value)
    pd = _pd()
    if isinstance(value, pd.DataFrame):
        return "parquet", _encode_frame(value)
    if type(value).__module__.startswith("pyarrow") and type(value).__name__ == "Table":
        return "parquet", _encode_table(value)
    if isinstance(value, (float, int)) and not isinstance(value, bool) and math.isfinite(value):
        return "json", _json_bytes(value)
    raise StorageTypeError(
        f"cannot store a value of type {type(value).__module__}.{type(value).__qualname__} in an "
        "open format; return an ArrayBundle, TensorBundle, numpy array, DataFrame, JSON dict/list "
        "or Blob (no pickle fallback by design)"
    )


def _decode_npz(data: bytes, where: str) -> ArrayBundle:
    loaded = np.load(io.BytesIO(data), allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise StorageFormatError(f"{where}: .npz object holds a single .npy array, not an archive")
    with loaded as npz:
        arrays = {k: npz[k] for k in npz.files}
    attrs_raw = arrays.pop(ATTRS_KEY, None)
    attrs = json.loads(attrs_raw.tobytes().decode()) if attrs_raw is not None else {}
    if not isinstance(attrs, dict):
        raise StorageFormatError(f"{where}: .npz attributes are not a JSON object")
    return ArrayBundle(arrays=arrays, attrs=attrs)


def _decode_safetensors(data: bytes, where: str) -> TensorBundle:
    from safetensors.torch import load

    # The header (8-byte little-endian length, then JSON) holds the attributes; load() parses
    # and bounds-checks it again along with the tensor data, and never unpickles.
    if len(data) < 8:
        raise StorageFormatError(f"{where}: .safetensors object is truncated (no header)")
    (header_size,) = struct.unpack("<Q", data[:8])
    if header_size > len(data) - 8:
        raise StorageFormatError(f"{where}: .safetensors header runs past the end of the object")
    header = json.loads(data[8:8 + header_size].decode())
    metadata = header.get("__metadata__") or {} if isinstance(header, dict) else None
    if not isinstance(metadata, dict):
        raise StorageFormatError(f"{where}: .safetensors header is not a JSON object")
    attrs = json.loads(metadata.get(ATTRS_KEY, "{}"))
    if not isinstance(attrs, dict):
        raise StorageFormatError(f"{where}: .safetensors attributes are not a JSON object")
    return TensorBundle(tensors=dict(load(data)), attrs=attrs)


def _safetensors_error() -> type[Exception]:
    from safetensors import SafetensorError

    return SafetensorError


def decode(extension: str, data: bytes, *, where: str = "object") -> Any:
    """Inverse of :func:`encode`; garbled input raises StorageFormatError naming ``where``."""
    extension = extension.lstrip(".").lower()
    try:
        if extension == "npz":
            return _decode_npz(data, where)
        if extension == "npy":
            array = np.load(io.BytesIO(data), allow_pickle=False)
            if not isinstance(array, np.ndarray):
                raise StorageFormatError(f"{where}: .npy object is an archive, not a single array")
            return array
        if extension == "safetensors":
            return _decode_safetensors(data, where)
        if extension == "pt":
            raise StorageFormatError(
                f"{where}: .pt (torch pickle) objects are no longer loaded; weights are stored as "
                ".safetensors: re-materialize the asset that wrote it")
        if extension == "json":
            return json.loads(data.decode())
        if extension == "parquet":
            return _decode_parquet(data)
        if extension in _BLOB_EXTENSIONS:
            return Blob(data=data, extension=extension)
    except StorageFormatError:
        raise
    except (
        ValueError, TypeError, OSError, EOFError, KeyError, IndexError, UnicodeDecodeError,
        zipfile.BadZipFile, RuntimeError, struct.error, _safetensors_error(),
    ) as err:
        if "pickle" in str(err) or "Object arrays" in str(err):
            # numpy's message suggests enabling pickle; stored artifacts are never unpickled.
            raise StorageFormatError(
                f"{where}: stored .{extension} object contains pickled (object) data, which is "
                "never loaded (allow_pickle=False); re-materialize the asset that wrote it"
            ) from err
        raise StorageFormatError(
            f"{where}: stored .{extension} object is corrupt or not in the expected format "
            f"({type(err).__name__}: {err}); re-materialize the asset that wrote it"
        ) from err
    raise StorageFormatError(f"{where}: unknown extension .{extension}; known: {known_extensions()}")
