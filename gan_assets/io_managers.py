"""Dagster shells over the storage core: a typed, pickle-free IO manager and an artifact store.

Both exist in a local flavour (the embedded default) and an S3 flavour that takes dagster-aws's
``S3Resource`` as a ``ResourceDependency`` -- the way dagster-aws builds ``S3PickleIOManager`` --
but values are serialised by type into open formats (see ``gan_assets.storage.codecs``).
"""

# No ``from __future__ import annotations`` here: Dagster's resource metaclass must see the
# real ``ResourceDependency[S3Resource]`` annotation, not a string, or passing an S3Resource
# fails pydantic validation.
from abc import abstractmethod
from typing import Any, Optional

import dagster as dg
from dagster._core.storage.upath_io_manager import UPathIOManager
from dagster_aws.s3 import S3Resource
from pydantic import Field, PrivateAttr
from upath import UPath

from gan_assets.storage import ObjectStore, decode, encode, known_extensions, store_from_uri
from gan_assets.storage.stores import ArtifactIntegrityError, ObjectNotFoundError, sha256_hex

# Formats the IO manager writes for typed values; on a tie between several under one stem,
# loads prefer them in this order. Blobs (png, html, ...) under the same stem are sidecars.
_LOAD_PREFERENCE = ("npz", "safetensors", "json", "parquet", "npy")


class TypedObjectIOManager(UPathIOManager):
    """UPathIOManager whose paths are keys in an ObjectStore and whose format follows the type.

    Paths are ``/{asset_key path}/{partition}``; the extension is added by the codec at write
    time and found again at read time, so one asset can hold any supported type.
    """

    extension = ""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self._written: dict[str, tuple[str, int, str, str]] = {}  # stem -> (uri, bytes, extension, sha256)
        super().__init__(base_path=UPath("/"))

    @staticmethod
    def _stem(path: UPath) -> str:
        return path.as_posix().lstrip("/")

    def _find_key(self, stem: str) -> str:
        found: dict[str, str] = {}
        for key in self.store.list(stem + "."):
            ext = key[len(stem) + 1:]
            if ext in known_extensions():
                found[ext] = key
        typed = [found[ext] for ext in _LOAD_PREFERENCE if ext in found]
        if len(typed) == 1:
            return typed[0]
        if typed:
            # Several typed objects under one stem: the asset changed type and the old object
            # stayed behind (it may be an artifact_store sidecar too). The newest one is what
            # the IO manager wrote last; on a timestamp tie the preference order decides.
            return max(typed, key=lambda k: (self.store.modified(k), -typed.index(k)))
        if found:
            return found[sorted(found)[0]]  # an asset whose value is a Blob (png, html, ...)
        raise ObjectNotFoundError(
            f"no stored object for {self.store.uri(stem)}.*; materialize that asset partition first"
        )

    def dump_to_path(self, context: dg.OutputContext, obj: Any, path: UPath) -> None:
        if obj is None:
            return
        ext, data = encode(obj)
        key = f"{self._stem(path)}.{ext}"
        uri = self.store.put(key, data)
        context.log.debug(f"Wrote {len(data)} bytes to {uri}")
        self._written[self._stem(path)] = (uri, len(data), ext, sha256_hex(data))

    def load_from_path(self, context: dg.InputContext, path: UPath) -> Any:
        key = self._find_key(self._stem(path))
        try:
            data = self.store.get(key)
        except ArtifactIntegrityError as err:
            asset = context.asset_key.to_user_string() if context.has_asset_key else "this output"
            partition = f" partition {path.name}" if context.has_asset_partitions else ""
            raise ArtifactIntegrityError(
                f"{asset}{partition} failed its integrity check and was not loaded: {err}. "
                f"Re-materialize {asset}{partition} (the event log holds the SHA-256 it was written with)"
            ) from err
        return decode(key.rsplit(".", 1)[1], data, where=self.store.uri(key))

    def path_exists(self, path: UPath) -> bool:
        try:
            self._find_key(self._stem(path))
        except FileNotFoundError:
            return False
        return True

    def unlink(self, path: UPath) -> None:
        stem = self._stem(path)
        for key in self.store.list(stem + "."):
            if key[len(stem) + 1:] in known_extensions():  # not sidecar folders like {stem}.x/...
                self.store.delete(key)

    def make_directory(self, path: UPath) -> None:
        return None  # stores create folders (local) or need none (S3)

    def _handle_transition_to_partitioned_asset(self, context: dg.OutputContext, path: UPath) -> None:
        return None  # paths are store keys, not files on this machine

    def get_metadata(self, context: dg.OutputContext, obj: Any) -> dict[str, dg.MetadataValue]:
        written = self._written.pop(self._stem(self._get_path_for_output(context)), None)
        if written is None:
            return {}
        uri, size, ext, digest = written
        # "path" replaces UPathIOManager's store-relative path with the object's real location.
        return {
            "path": dg.MetadataValue.path(uri),
            "uri": dg.MetadataValue.path(uri),
            "stored_bytes": dg.MetadataValue.int(size),
            "format": dg.MetadataValue.text(ext),
            "sha256": dg.MetadataValue.text(digest),
        }

    def _get_path_for_output(self, context: dg.OutputContext) -> UPath:
        if context.has_asset_partitions:
            return next(iter(self._get_paths_for_partitions(context).values()))
        return self._get_path(context)

    def get_loading_input_log_message(self, path: UPath) -> str:
        return f"Loading {self.store.uri(self._stem(path))}.*"

    def get_writing_output_log_message(self, path: UPath) -> str:
        return f"Writing {self.store.uri(self._stem(path))}.<format>"


class _CachedStoreMixin:
    """Builds the ObjectStore once per run (``setup_for_execution``) instead of once per call.

    An S3 client costs a botocore session (hundreds of milliseconds); a run with many inputs
    and outputs would otherwise pay that for every load and every write.
    """

    _store: Optional[ObjectStore]  # a PrivateAttr, declared on each pydantic subclass

    @abstractmethod
    def _build_store(self) -> ObjectStore: ...

    def object_store(self) -> ObjectStore:
        """The store under this resource's root: put/get/list/uri of ``{asset_key}/{partition}.{ext}``."""
        if self._store is None:
            self._store = self._build_store()
        return self._store

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._store = self._build_store()


class _ArtifactStoreBase(_CachedStoreMixin, dg.ConfigurableResource):
    _store: Optional[ObjectStore] = PrivateAttr(default=None)


class _OpenFormatIOManagerBase(_CachedStoreMixin, dg.ConfigurableIOManager):
    _store: Optional[ObjectStore] = PrivateAttr(default=None)

    def _inner(self) -> TypedObjectIOManager:
        return TypedObjectIOManager(self.object_store())

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        self._inner().handle_output(context, obj)

    def load_input(self, context: dg.InputContext) -> Any:
        return self._inner().load_input(context)


class LocalOpenFormatIOManager(_OpenFormatIOManagerBase):
    """Stores every asset in open formats under a local folder (the embedded default)."""

    base_dir: str = Field(description="Folder that holds {asset_key}/{partition}.{ext} objects.")

    def _build_store(self) -> ObjectStore:
        return store_from_uri(self.base_dir)


class S3OpenFormatIOManager(_OpenFormatIOManagerBase):
    """Stores every asset in open formats under s3://{s3_bucket}/{s3_prefix} via S3Resource."""

    s3_resource: dg.ResourceDependency[S3Resource]
    s3_bucket: str = Field(description="Bucket that holds the artifacts.")
    s3_prefix: str = Field(default="gan-assets", description="Key prefix inside the bucket.")

    def _build_store(self) -> ObjectStore:
        return store_from_uri(f"s3://{self.s3_bucket}/{self.s3_prefix}", self.s3_resource.get_client())


class LocalArtifactStore(_ArtifactStoreBase):
    """Extra artifacts (previews, reports, synthetic DICOM, caches) under the same local root."""

    base_dir: str = Field(description="Same folder as the IO manager's base_dir.")

    def _build_store(self) -> ObjectStore:
        return store_from_uri(self.base_dir)


class S3ArtifactStore(_ArtifactStoreBase):
    """Extra artifacts (previews, reports, synthetic DICOM, caches) under the same S3 root."""

    s3_resource: dg.ResourceDependency[S3Resource]
    s3_bucket: str = Field(description="Bucket that holds the artifacts.")
    s3_prefix: str = Field(default="gan-assets", description="Key prefix inside the bucket.")

    def _build_store(self) -> ObjectStore:
        return store_from_uri(f"s3://{self.s3_bucket}/{self.s3_prefix}", self.s3_resource.get_client())
