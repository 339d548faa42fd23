"""Dagster's side of storage: one resource, ``ArtifactStorage``, over the storage core.

It is the IO manager (``io_manager``: each asset's value under ``{root}/{asset_key}/{partition}.{ext}``)
and the artifact store (``artifact_store``: previews, reports, history beside those values), for a
root that is a local folder or ``s3://bucket/prefix``; S3 settings come from dagster-aws's
``S3Resource``, the same one the landing zone uses. Values are stored by type in open formats
(``gan_assets.storage.codecs``), one ``dg.UPathIOManager`` per format:

| declared type                  | format       |
|--------------------------------|--------------|
| ArrayBundle                    | .npz         |
| TensorBundle                   | .safetensors |
| numpy.ndarray                  | .npy         |
| pandas.DataFrame, pyarrow.Table| .parquet     |
| dict, list                     | .json        |

An output's format is its value's (Dagster has checked it against the declared type); an input's is its
declared type's (``T`` or ``dict[str, T]`` for a window of partitions). An input declared
``Any`` or ``dict[str, Any]`` finds its format by checking which of the known extensions exists
for its first partition (HEADs, never a listing).
"""

# No ``from __future__ import annotations`` here: Dagster's resource metaclass must see the
# real ``ResourceDependency[S3Resource]`` annotation, not a string.
from dataclasses import dataclass
from typing import Any, Optional, get_args, get_origin

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
from dagster_aws.s3 import S3Resource
from pydantic import Field, PrivateAttr
from upath import UPath

from gan_assets.storage import (
    ArrayBundle,
    ArtifactIntegrityError,
    ObjectNotFoundError,
    ObjectStore,
    S3Settings,
    StorageFormatError,
    TensorBundle,
    decode,
    encode,
    known_extensions,
    store_from_uri,
)
from gan_assets.storage.stores import sha256_hex

FORMAT_OF_TYPE: tuple[tuple[type, str], ...] = (
    (ArrayBundle, "npz"),
    (TensorBundle, "safetensors"),
    (np.ndarray, "npy"),
    (pd.DataFrame, "parquet"),
    (pa.Table, "parquet"),
    (dict, "json"),
    (list, "json"),
)
TYPED_FORMATS = ("npz", "safetensors", "json", "parquet", "npy")


def format_of_type(typing_type: Any) -> Optional[str]:
    """The format a declared type is stored in, or None (Any, or a type with no open format)."""
    origin = get_origin(typing_type) or typing_type
    if isinstance(origin, type):
        for cls, ext in FORMAT_OF_TYPE:
            if issubclass(origin, cls):
                return ext
    return None


def input_format(typing_type: Any) -> Optional[str]:
    """An input's format from its declared type: ``T``, or ``dict[str, T]`` for several partitions.

    ``dict[str, Any]`` is not decided (a JSON object, or a window of anything); a bare ``dict`` is JSON.
    """
    if get_origin(typing_type) is dict:
        args = get_args(typing_type)
        inner = format_of_type(args[1]) if len(args) == 2 else None
        return inner if inner not in (None, "json") else None
    return format_of_type(typing_type)


def s3_settings(s3: S3Resource) -> S3Settings:
    """The storage core's S3 settings from dagster-aws's resource (endpoint, region, credentials)."""
    return S3Settings(
        endpoint_url=s3.endpoint_url or None,
        region_name=s3.region_name or None,
        access_key_id=s3.aws_access_key_id or None,
        secret_access_key=s3.aws_secret_access_key or None,
        session_token=s3.aws_session_token or None,
        profile_name=s3.profile_name or None,
    )


class ReadsS3(dg.ConfigurableResource):
    """A resource that reaches S3 with the deployment's one ``S3Resource`` (the landing zone does).

    Declared here, in a module without postponed annotations, so that Dagster sees the real
    ``ResourceDependency`` type when a subclass lives in a module that has them.
    """

    s3: dg.ResourceDependency[S3Resource] = Field(
        default_factory=S3Resource,
        description="S3 endpoint, region and credentials for s3:// locations (shared with the artifact storage).")

    def s3_settings(self) -> S3Settings:
        return s3_settings(self.s3)


@dataclass
class _Encoded:
    """A value already serialised by the codec (encoded once, then written by its format's manager)."""

    extension: str
    data: bytes
    uri: str = ""


def _where(context: dg.InputContext, partition: Optional[str]) -> str:
    asset = context.asset_key.to_user_string() if context.has_asset_key else "this input"
    return f"{asset} partition {partition}" if partition else asset


def materialized_sha256(context: dg.InputContext, partition: Optional[str]) -> Optional[tuple[str, str]]:
    """(SHA-256, run id) that the input's latest materialization recorded, if the instance holds one.

    The event log is the trust anchor that lives apart from the bucket: bytes replaced together
    with their sidecar hash still differ from it. Objects stored by hand, or loads outside a run,
    have no such record and rely on the sidecar alone.
    """
    if not context.has_asset_key:
        return None
    try:
        instance = context.instance
    except dg.DagsterInvariantViolationError:
        return None
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[partition] if partition else None),
        limit=1).records
    event = records[0].asset_materialization if records else None
    value = event.metadata.get("sha256") if event is not None else None
    return (str(value.value), records[0].run_id or "none") if value is not None else None


class FormatIOManager(dg.UPathIOManager):
    """The UPathIOManager of one open format: ``{root}/{asset_key}/{partition}.{ext}``."""

    def __init__(self, store: ObjectStore, extension: str) -> None:
        self.extension = f".{extension}"
        self.store = store
        super().__init__(base_path=store.root)

    def dump_to_path(self, context: dg.OutputContext, obj: _Encoded, path: UPath) -> None:
        obj.uri = self.store.put(self.store.key_of(path), obj.data)
        context.log.debug(f"Wrote {len(obj.data)} bytes to {obj.uri}")

    def get_metadata(self, context: dg.OutputContext, obj: _Encoded) -> dict[str, dg.MetadataValue]:
        return {
            "uri": dg.MetadataValue.path(obj.uri),
            "stored_bytes": dg.MetadataValue.int(len(obj.data)),
            "format": dg.MetadataValue.text(obj.extension),
            "sha256": dg.MetadataValue.text(sha256_hex(obj.data)),
        }

    def load_from_path(self, context: dg.InputContext, path: UPath) -> Any:
        key = self.store.key_of(path)
        partition = path.name[: -len(self.extension)] if context.has_asset_partitions else None
        where = _where(context, partition)
        try:
            data = self.store.get(key)
        except ArtifactIntegrityError as err:
            raise ArtifactIntegrityError(
                f"{where} failed its integrity check and was not loaded: {err}. Re-materialize {where} "
                "(its materialization metadata holds the SHA-256 it was written with)"
            ) from err
        recorded = materialized_sha256(context, partition)
        actual = sha256_hex(data)
        if recorded is not None and recorded[0] != actual:
            raise ArtifactIntegrityError(
                f"{where} failed its integrity check and was not loaded: {path} has SHA-256 {actual[:16]} but its "
                f"latest materialization (run {recorded[1][:8]}) recorded {recorded[0][:16]}; the object was replaced "
                f"after it was materialized. Re-materialize {where}")
        return decode(self.extension[1:], data, where=str(path))

    def unlink(self, path: UPath) -> None:
        self.store.delete(self.store.key_of(path))

    def make_directory(self, path: UPath) -> None:
        return None  # the store creates local folders as it writes; S3 has none


class OpenFormatIOManager(dg.IOManager):
    """Picks the format's UPathIOManager for each output (by value and declared type) and input."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.by_format = {ext: FormatIOManager(store, ext) for ext in known_extensions()}

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        # Dagster has checked the value against the declared type: the value's format is the type's.
        extension, data = encode(obj)
        self.by_format[extension].handle_output(context, _Encoded(extension, data))

    def load_input(self, context: dg.InputContext) -> Any:
        extension = input_format(context.dagster_type.typing_type) or self._stored_format(context)
        return self.by_format[extension].load_input(context)

    def _stored_format(self, context: dg.InputContext) -> str:
        """The one known extension stored for the input's first present partition (HEAD requests only)."""
        asset = "/".join(context.asset_key.path)
        partitions = list(context.asset_partition_keys) if context.has_asset_partitions else [None]
        for partition in partitions:
            stem = f"{asset}/{partition}" if partition else asset
            for candidates in (TYPED_FORMATS, tuple(e for e in known_extensions() if e not in TYPED_FORMATS)):
                found = [ext for ext in candidates if self.store.exists(f"{stem}.{ext}")]
                if len(found) > 1:
                    raise StorageFormatError(
                        f"{self.store.uri(stem)} is stored in several formats ({', '.join(found)}): the asset changed "
                        f"type. Declare the input's type (e.g. ArrayBundle) or delete the stale object")
                if found:
                    return found[0]
        allow_missing = (context.definition_metadata or {}).get("allow_missing_partitions", False)
        if allow_missing:
            return TYPED_FORMATS[0]  # every partition is missing: the manager returns none of them
        raise ObjectNotFoundError(
            f"no stored object for {self.store.uri(f'{asset}/{partitions[0]}' if partitions[0] else asset)}.*; "
            "materialize that asset partition first")


class ArtifactStorage(dg.ConfigurableIOManager):
    """Stores every asset in open formats, and extra artifacts beside them, under one root.

    Use one instance as both ``io_manager`` and ``artifact_store``.
    """

    root: str = Field(description="A local folder, or s3://bucket/prefix; holds {asset_key}/{partition}.{ext} objects.")
    s3: dg.ResourceDependency[S3Resource] = Field(
        default_factory=S3Resource,
        description="S3 endpoint, region and credentials for an s3:// root (shared with the landing zone).")

    _store: Optional[ObjectStore] = PrivateAttr(default=None)

    def object_store(self) -> ObjectStore:
        """The store under ``root``: put/get/list/uri of ``{asset_key}/{partition}.{ext}``, hash-checked."""
        if self._store is None:
            self._store = store_from_uri(self.root, s3_settings(self.s3))
        return self._store

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        OpenFormatIOManager(self.object_store()).handle_output(context, obj)

    def load_input(self, context: dg.InputContext) -> Any:
        return OpenFormatIOManager(self.object_store()).load_input(context)
