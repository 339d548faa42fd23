"""Object stores with one key layout: ``{root}/{asset_key path}/{partition}.{ext}``.

``LocalObjectStore`` is a folder (the embedded default); ``S3ObjectStore`` is a bucket and
prefix reached through a boto3 S3 client (AWS, MinIO or any S3-compatible endpoint).
Writes are atomic: a local write goes to a temporary file in the same folder and is renamed;
an S3 write is a single PUT, or above ``MULTIPART_THRESHOLD`` a multipart upload through
boto3's managed transfer, which S3 only makes visible once every part has been committed.
"""

from __future__ import annotations

import hashlib
import io
import mimetypes
import os
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any


class ObjectNotFoundError(FileNotFoundError):
    """No object at the key; the message names the URI."""


SHA256_SUFFIX = ".sha256"


def sha256_key(key: str) -> str:
    """Where the SHA-256 of ``key`` is recorded: a hidden ``.{name}.sha256`` beside it."""
    folder, _, name = key.replace("\\", "/").strip("/").rpartition("/")
    return f"{folder}/.{name}{SHA256_SUFFIX}" if folder else f".{name}{SHA256_SUFFIX}"


class ArtifactIntegrityError(ValueError):
    """A stored object's bytes differ from the SHA-256 recorded when it was written."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ObjectStore(ABC):
    """Bytes under string keys (``a/b/c.ext``); ``uri`` names an object for people and metadata.

    Every object is tamper-evident: ``put`` records the SHA-256 of the bytes in a hidden sidecar
    (``a/.b.ext.sha256`` for ``a/b.ext``) and ``get`` refuses bytes that differ from it. The hash sits beside the object
    rather than only in the event log because objects written outside any materialization
    (attempt history, feature caches, the promoted-model record) have no event to hold it; a torn
    write of the pair fails closed, with the same error, never loading unrecorded bytes.
    """

    def put(self, key: str, data: bytes) -> str:
        """Store atomically with its SHA-256; return the object's URI."""
        uri = self._write(key, data)
        self._write(sha256_key(key), sha256_hex(data).encode())
        return uri

    def get(self, key: str) -> bytes:
        """The object's bytes, verified against their recorded SHA-256.

        ObjectNotFoundError (naming the URI) when there is no object; ArtifactIntegrityError when
        the bytes are not the ones written.
        """
        data = self._read(key)
        try:
            recorded = self._read(sha256_key(key)).decode("ascii", "replace").strip()
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

    def list(self, prefix: str) -> list[str]:
        """Keys of objects (not their hash sidecars) that start with ``prefix`` (sorted)."""
        return [key for key in self._list(prefix)
                if not (key.rpartition("/")[2].startswith(".") and key.endswith(SHA256_SUFFIX))]

    def delete(self, key: str) -> None:
        """Remove the object and its hash; a missing object is not an error."""
        self._delete(key)
        self._delete(sha256_key(key))

    @abstractmethod
    def _write(self, key: str, data: bytes) -> str:
        """Store bytes atomically; return the object's URI."""

    @abstractmethod
    def _read(self, key: str) -> bytes:
        """The raw bytes; ObjectNotFoundError when there is no object."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def _delete(self, key: str) -> None: ...

    @abstractmethod
    def _list(self, prefix: str) -> list[str]:
        """Every key that starts with ``prefix`` (sorted)."""

    @abstractmethod
    def modified(self, key: str) -> float:
        """Last-modified time (seconds since the epoch) of an existing object."""

    @abstractmethod
    def uri(self, key: str) -> str: ...

    @property
    @abstractmethod
    def root_uri(self) -> str: ...


def _clean(key: str) -> str:
    cleaned = key.replace("\\", "/").strip("/")
    if not cleaned or any(part in ("", ".", "..") for part in cleaned.split("/")):
        raise ValueError(f"invalid storage key {key!r}: empty, '.' or '..' path segments are not allowed")
    return cleaned


class LocalObjectStore(ObjectStore):
    """A folder; temporary files are dot-files beside their target, never listed."""

    # mkstemp creates 0600 files; artifacts are meant to be read by the UI and other users.
    FILE_MODE = 0o644

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()

    @property
    def root_uri(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / _clean(key)

    def uri(self, key: str) -> str:
        return str(self._path(key))

    def _write(self, key: str, data: bytes) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, self.FILE_MODE)
            # Same folder, same filesystem: the rename is atomic, readers see old or new bytes.
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return str(path)

    def _read(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError) as err:
            raise ObjectNotFoundError(f"no stored object at {path}") from err

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def modified(self, key: str) -> float:
        path = self._path(key)
        try:
            return path.stat().st_mtime_ns / 1e9
        except FileNotFoundError as err:
            raise ObjectNotFoundError(f"no stored object at {path}") from err

    def _list(self, prefix: str) -> list[str]:
        prefix = prefix.replace("\\", "/").lstrip("/")
        folder, _, stem = prefix.rpartition("/")
        base = self.root / folder if folder else self.root
        if not base.is_dir():
            return []
        keys = []
        # Only entries of `base` whose name starts with the stem can match: no walk of the
        # whole asset folder for one partition's lookup.
        for entry in base.iterdir():
            if not entry.name.startswith(stem) or entry.name.startswith("."):
                continue
            candidates = entry.rglob("*") if entry.is_dir() else [entry]
            for path in candidates:
                if path.is_file() and not path.name.startswith("."):
                    key = path.relative_to(self.root).as_posix()
                    if key.startswith(prefix):
                        keys.append(key)
        return sorted(keys)


class S3ObjectStore(ObjectStore):
    """A bucket and key prefix, through a boto3 S3 client (any endpoint)."""

    # Above this size boto3's managed transfer switches to a (parallel) multipart upload.
    MULTIPART_THRESHOLD = 64 * 1024 * 1024

    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    @property
    def root_uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _key(self, key: str) -> str:
        key = _clean(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    @staticmethod
    def _not_found(err: Exception) -> bool:
        response = getattr(err, "response", None) or {}
        return response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")

    def _write(self, key: str, data: bytes) -> str:
        from boto3.s3.transfer import TransferConfig

        threshold = self.MULTIPART_THRESHOLD
        # S3 parts must be >= 5 MiB (but the last); chunks as large as the threshold keep the
        # part count low for big checkpoints.
        config = TransferConfig(multipart_threshold=threshold, multipart_chunksize=max(threshold, 5 * 1024 * 1024))
        content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
        self.client.upload_fileobj(
            io.BytesIO(data), self.bucket, self._key(key), Config=config, ExtraArgs={"ContentType": content_type}
        )
        return self.uri(key)

    def _read(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as err:
            if self._not_found(err):
                raise ObjectNotFoundError(f"no stored object at {self.uri(key)}") from err
            raise

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as err:
            if self._not_found(err):
                return False
            raise
        return True

    def modified(self, key: str) -> float:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as err:
            if self._not_found(err):
                raise ObjectNotFoundError(f"no stored object at {self.uri(key)}") from err
            raise
        return head["LastModified"].timestamp()

    def _delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def _list(self, prefix: str) -> list[str]:
        full = self._key(prefix) if prefix.strip("/") else (self.prefix + "/" if self.prefix else "")
        if prefix.endswith("/") and not full.endswith("/"):
            full += "/"
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            keys.extend(item["Key"][strip:] for item in page.get("Contents", []))
        return sorted(keys)


def store_from_uri(root: str, s3_client: Any = None) -> ObjectStore:
    """``s3://bucket/prefix`` -> S3ObjectStore (needs a client); anything else -> a local folder."""
    if root.startswith("s3://"):
        if s3_client is None:
            raise ValueError(f"storage root {root} is on S3 but no S3 client was given")
        bucket, _, prefix = root[len("s3://"):].partition("/")
        if not bucket:
            raise ValueError(f"storage root {root!r} names no bucket; use s3://bucket/prefix")
        return S3ObjectStore(s3_client, bucket, prefix)
    if root.startswith("file://"):
        root = root[len("file://"):]
    return LocalObjectStore(root)
