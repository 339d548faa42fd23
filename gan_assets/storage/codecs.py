"""Serialise values by type into open formats; never pickle.

| value                                   | extension | loaded with                       |
|-----------------------------------------|-----------|-----------------------------------|
| ArrayBundle (named arrays + JSON attrs) | .npz      | numpy.load(allow_pickle=False)     |
| numpy.ndarray                           | .npy      | numpy.load(allow_pickle=False)     |
| TensorBundle (named tensors + attrs)    | .pt       | torch.load(weights_only=True)      |
| dict / list / finite number (JSON)      | .json     | json.loads                         |
| pandas.DataFrame                        | .csv      | pandas.read_csv (dtypes recorded)  |
| Blob (bytes + extension: png, html, dcm)| .<ext>    | raw bytes                          |

Anything else is refused at write time with StorageTypeError (a subclass of TypeError).
Anything that does not decode as its extension promises (truncated, garbled, tampered, or a
``.pt`` that smuggles arbitrary objects) raises StorageFormatError naming the object.
"""

from __future__ import annotations

import io
import json
import math
from pickle import UnpicklingError  # the exception class only: torch's safe loader raises it
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ATTRS_KEY = "__attrs__"
_BLOB_EXTENSIONS = ("png", "html", "dcm", "txt", "md", "svg")
# First line(s) of a stored CSV: the dtypes, and which string cells were missing (not "").
_CSV_DTYPES = "# dtypes: "
_CSV_MISSING = "# missing: "


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
        if not isinstance(self.data, (bytes, bytearray, memoryview)):
            raise StorageTypeError(f"Blob data must be bytes, not {type(self.data).__name__}")
        self.data = bytes(self.data)


def known_extensions() -> tuple[str, ...]:
    return ("npz", "npy", "pt", "json", "csv", *_BLOB_EXTENSIONS)


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

    if not isinstance(value.tensors, dict):
        raise StorageTypeError(f"TensorBundle.tensors must be a dict, not {type(value.tensors).__name__}")
    tensors: dict[str, Any] = {}
    for name, tensor in value.tensors.items():
        if not isinstance(name, str):
            raise StorageTypeError(f"TensorBundle names must be strings, got {name!r}")
        if not isinstance(tensor, torch.Tensor):
            raise StorageTypeError(f"TensorBundle entry {name!r} is {type(tensor).__name__}, not a tensor")
        tensor = tensor.detach().cpu().contiguous()
        # torch.save writes a view's whole storage; copy slices so the file holds only the slice.
        if tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size():
            tensor = tensor.clone()
        tensors[name] = tensor
    if not isinstance(value.attrs, dict):
        raise StorageTypeError(f"TensorBundle.attrs must be a dict, not {type(value.attrs).__name__}")
    attrs_json = _json_bytes(value.attrs, "TensorBundle.attrs").decode()
    buf = io.BytesIO()
    torch.save({"tensors": tensors, "attrs_json": attrs_json}, buf)
    return buf.getvalue()


def _pd() -> Any:
    import pandas as pd

    return pd


def _is_text_dtype(dtype: Any) -> bool:
    return dtype == object or isinstance(dtype, _pd().StringDtype)


def _is_missing(cell: Any) -> bool:
    return cell is None or cell is _pd().NA or (isinstance(cell, float) and math.isnan(cell))


def _encode_frame(frame: Any) -> bytes:
    # A named index (set_index("id")) carries data: keep it as columns. An unnamed one is a
    # row number and is dropped; the frame comes back with a RangeIndex.
    if any(name is not None for name in frame.index.names):
        frame = frame.reset_index()
    columns = list(frame.columns)
    if not all(isinstance(c, str) for c in columns) or len(set(columns)) != len(columns):
        raise StorageTypeError(
            f"DataFrame columns must be unique strings to round-trip through CSV, got {columns!r}"
        )
    dtypes = {c: str(t) for c, t in frame.dtypes.items()}
    missing: dict[str, list[int]] = {}
    for column in columns:
        series = frame[column]
        if not _is_text_dtype(series.dtype):
            continue
        bad = [v for v in series if not (isinstance(v, str) or _is_missing(v))]
        if bad:
            raise StorageTypeError(
                f"DataFrame column {column!r} holds {type(bad[0]).__name__} values such as {bad[0]!r}; "
                "CSV can only restore text columns of str (and missing) cells: convert with "
                ".astype(str) or to a numeric dtype"
            )
        rows = [i for i, v in enumerate(series) if _is_missing(v)]
        if rows:
            missing[column] = rows
    header = _CSV_DTYPES + json.dumps(dtypes, sort_keys=True) + "\n"
    if missing:
        header += _CSV_MISSING + json.dumps(missing, sort_keys=True) + "\n"
    return (header + frame.to_csv(index=False, lineterminator="\n")).encode()


def _decode_frame(data: bytes) -> Any:
    pd = _pd()
    text = data.decode()
    dtypes: dict[str, str] = {}
    missing: dict[str, list[int]] = {}
    if text.startswith(_CSV_DTYPES):
        first, _, text = text.partition("\n")
        dtypes = json.loads(first[len(_CSV_DTYPES):])
    if text.startswith(_CSV_MISSING):
        first, _, text = text.partition("\n")
        missing = json.loads(first[len(_CSV_MISSING):])
    if not isinstance(dtypes, dict) or not isinstance(missing, dict):
        raise ValueError("CSV header is not a JSON object")
    text_columns = [c for c, t in dtypes.items() if t in ("object", "str", "string") or t.startswith("string[")]
    # Text columns are read verbatim ("001" stays a string, "" stays ""); other columns treat
    # an empty field as missing, which is how to_csv wrote NaN.
    frame = pd.read_csv(
        io.StringIO(text),
        dtype={c: str for c in text_columns},
        keep_default_na=False,
        na_values={c: [""] for c in dtypes if c not in text_columns} if dtypes else [""],
    )
    if dtypes and set(frame.columns) != set(dtypes):
        raise ValueError(f"CSV columns {list(frame.columns)} do not match its header {sorted(dtypes)}")
    for column, dtype in dtypes.items():
        if column not in text_columns:
            frame[column] = frame[column].astype(dtype)
            continue
        values = frame[column].astype(object).to_numpy(copy=True)
        for row in missing.get(column, []):
            values[row] = None
        frame[column] = pd.Series(values, index=frame.index, dtype=object if dtype == "object" else dtype)
    return frame


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
        return "pt", _encode_tensor_bundle(value)
    if isinstance(value, (dict, list)):
        return "json", _json_bytes(value)
    pd = _pd()
    if isinstance(value, pd.DataFrame):
        return "csv", _encode_frame(value)
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


def _decode_pt(data: bytes, where: str) -> TensorBundle:
    import torch

    payload = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    if (
        not isinstance(payload, dict)
        or not isinstance(payload.get("tensors"), dict)
        or not isinstance(payload.get("attrs_json", "{}"), str)
    ):
        raise StorageFormatError(f"{where}: .pt object is not a TensorBundle ({{'tensors': ..., 'attrs_json': ...}})")
    tensors = payload["tensors"]
    for name, tensor in tensors.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise StorageFormatError(f"{where}: .pt entry {name!r} is {type(tensor).__name__}, not a tensor")
    attrs = json.loads(payload.get("attrs_json", "{}"))
    if not isinstance(attrs, dict):
        raise StorageFormatError(f"{where}: .pt attributes are not a JSON object")
    return TensorBundle(tensors=dict(tensors), attrs=attrs)


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
        if extension == "pt":
            return _decode_pt(data, where)
        if extension == "json":
            return json.loads(data.decode())
        if extension == "csv":
            return _decode_frame(data)
        if extension in _BLOB_EXTENSIONS:
            return Blob(data=data, extension=extension)
    except StorageFormatError:
        raise
    except UnpicklingError as err:
        # torch's weights_only unpickler refuses anything but tensors and plain containers.
        # Its own message suggests weights_only=False: never do that for a stored artifact,
        # so only the line naming the refused global is passed on.
        lines = str(err).splitlines()
        reason = next((line.strip() for line in lines if "WeightsUnpickler error" in line), lines[0] if lines else "")
        reason = reason.split(" Please use")[0]
        raise StorageFormatError(
            f"{where}: .pt object is corrupt or holds something other than tensors and plain "
            f"values, and the safe loader (weights_only=True) refused it ({reason}); "
            "re-materialize the asset that wrote it"
        ) from err
    except (
        ValueError, TypeError, OSError, EOFError, KeyError, IndexError, UnicodeDecodeError,
        zipfile.BadZipFile, RuntimeError,
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
