"""One object store over fsspec (``UPath``): a local folder or ``s3://bucket/prefix`` through s3fs.

Key layout: ``{root}/{asset_key path}/{partition}.{ext}``, the same on both backends. Every object
is tamper-evident: ``put`` records the SHA-256 of its bytes in a hidden sidecar
(``a/.b.ext.sha256`` for ``a/b.ext``) and ``get`` refuses bytes that differ from it.

This is the one thin layer kept over fsspec, for two things fsspec does not do: the recorded
hash, and atomic local writes (``LocalFileSystem.pipe_file`` writes the target in place, so a
crash leaves half an object; here a temporary file in the same folder is renamed over it). On
S3 a write is one PUT through s3fs, which S3 makes visible whole or not at all.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from upath import UPath

SHA256_SUFFIX = ".sha256"
LOCAL_PROTOCOLS = ("", "file", "local")


class ObjectNotFoundError(FileNotFoundError):
    """No object at the key; the message names the URI."""


class ArtifactIntegrityError(ValueError):
    """A stored object's bytes differ from the SHA-256 recorded when it was written."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_key(key: str) -> str:
    """Where the SHA-256 of ``key`` is recorded: a hidden ``.{name}.sha256`` beside it."""
    folder, _, name = key.replace("\\", "/").strip("/").rpartition("/")
    return f"{folder}/.{name}{SHA256_SUFFIX}" if folder else f".{name}{SHA256_SUFFIX}"


@dataclass(frozen=True)
class S3Settings:
    """How to reach S3 (AWS, MinIO, moto): the one place the IO managers and the landing zone read.

    ``None`` leaves a setting to the standard AWS chain (environment, profile, instance role).
    """

    endpoint_url: str | None = None
    region_name: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    profile_name: str | None = None

    def storage_options(self) -> dict[str, Any]:
        """s3fs keyword arguments. Listings are never cached: another process (a run, the sensor)
        may have written since, and a stale listing would hide its objects."""
        options: dict[str, Any] = {"use_listings_cache": False}
        if self.endpoint_url:
            options["endpoint_url"] = self.endpoint_url
        if self.region_name:
            options["client_kwargs"] = {"region_name": self.region_name}
        for name, value in (("key", self.access_key_id), ("secret", self.secret_access_key),
                            ("token", self.session_token), ("profile", self.profile_name)):
            if value:
                options[name] = value
        return options

    def client(self) -> Any:
        """A boto3 S3 client with these settings (for the few calls s3fs does not expose)."""
        import boto3

        session = boto3.session.Session(profile_name=self.profile_name) if self.profile_name else boto3.session.Session()
        return session.client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region_name,
            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key,
            aws_session_token=self.session_token)


def storage_path(location: str, s3: S3Settings | None = None) -> UPath:
    """``s3://bucket/prefix`` -> an s3fs path with ``s3``'s settings; anything else -> a local folder."""
    if location.startswith("s3://"):
        bucket = location[len("s3://"):].split("/", 1)[0]
        if not bucket:
            raise ValueError(f"storage location {location!r} names no bucket; use s3://bucket/prefix")
        return UPath(location.rstrip("/"), **(s3 or S3Settings()).storage_options())
    if location.startswith("file://"):
        location = location[len("file://"):]
    return UPath(os.path.abspath(os.path.expanduser(location)))


def _clean(key: str) -> str:
    cleaned = key.replace("\\", "/").strip("/")
    if not cleaned or any(part in ("", ".", "..") for part in cleaned.split("/")):
        raise ValueError(f"invalid storage key {key!r}: empty, '.' or '..' path segments are not allowed")
    return cleaned


class ObjectStore:
    """Bytes under string keys (``a/b/c.ext``) below a root; ``uri`` names an object for people and metadata."""

    # mkstemp creates 0600 files; artifacts are meant to be read by the UI and other users.
    FILE_MODE = 0o644

    def __init__(self, root: UPath) -> None:
        self.root = root
        self.is_local = root.protocol in LOCAL_PROTOCOLS

    @property
    def root_uri(self) -> str:
        return str(self.root).rstrip("/")

    def path(self, key: str) -> UPath:
        return self.root.joinpath(*_clean(key).split("/"))

    def uri(self, key: str) -> str:
        return str(self.path(key))

    def key_of(self, path: UPath) -> str:
        """The key of a path below the root (as UPathIOManager builds them)."""
        root, full = self.root.path.rstrip("/"), path.path
        if not full.startswith(root + "/"):
            raise ValueError(f"{path} is not below the storage root {self.root_uri}")
        return _clean(full[len(root) + 1:])

    def put(self, key: str, data: bytes) -> str:
        """Store atomically with its SHA-256; return the object's URI."""
        uri = self._write(key, data)
        self._write(sha256_key(key), sha256_hex(data).encode())
        return uri

    def get(self, key: str) -> bytes:
        """The object's bytes, verified against their recorded SHA-256.

        ObjectNotFoundError (naming the URI) when there is no object; ArtifactIntegrityError when
        the bytes are not the ones written. A torn write of the pair fails closed the same way.
        """
        data = self._read(key)
        try:
            recorded = self.sha256(key)
        except ObjectNotFoundError:
            recorded = ""
        actual = sha256_hex(data)
        if recorded != actual:
            what = f"its recorded SHA-256 is {recorded[:16]}" if recorded else "no SHA-256 was recorded for it"
            raise ArtifactIntegrityError(
                f"{self.uri(key)} has SHA-256 {actual[:16]} but {what}: the object was changed or replaced "
                "after it was written, so it is not loaded. Re-materialize the asset partition that wrote it")
        return data

    def sha256(self, key: str) -> str:
        """The SHA-256 recorded for ``key`` when it was written."""
        return self._read(sha256_key(key)).decode("ascii", "replace").strip()

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        """Remove the object and its hash; a missing object is not an error."""
        for path in (self.path(key), self.path(sha256_key(key))):
            try:
                path.unlink()
            except FileNotFoundError:
                pass

    def list(self, prefix: str) -> list[str]:
        """Keys of objects that start with ``prefix`` (sorted); hidden names (hashes, temporary
        files) are not objects. Only the folder that ``prefix`` names is walked."""
        prefix = prefix.replace("\\", "/").lstrip("/")
        folder = prefix.rpartition("/")[0]
        base = self.root.joinpath(*folder.split("/")) if folder else self.root
        try:
            found = base.fs.find(base.path, withdirs=False)
        except FileNotFoundError:
            return []
        root = self.root.path.rstrip("/") + "/"
        keys = (path[len(root):] for path in found if path.startswith(root))
        return sorted(key for key in keys
                      if key.startswith(prefix) and not any(part.startswith(".") for part in key.split("/")))

    def _write(self, key: str, data: bytes) -> str:
        path = self.path(key)
        if not self.is_local:
            content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
            path.fs.pipe_file(path.path, data, ContentType=content_type)
            return str(path)
        folder = os.path.dirname(path.path)
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, self.FILE_MODE)
            # Same folder, same filesystem: the rename is atomic, readers see old or new bytes.
            os.replace(tmp, path.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return str(path)

    def _read(self, key: str) -> bytes:
        path = self.path(key)
        try:
            if self.is_local:
                return path.read_bytes()
            # A range from 0 is one GET; an open() or unranged cat first asks for the size (a HEAD).
            return path.fs.cat_file(path.path, start=0)
        except (FileNotFoundError, IsADirectoryError) as err:
            raise ObjectNotFoundError(f"no stored object at {path}") from err


def store_from_uri(root: str, s3: S3Settings | None = None) -> ObjectStore:
    """The store under ``root``: a local folder, or ``s3://bucket/prefix`` reached with ``s3``."""
    return ObjectStore(storage_path(root, s3))
