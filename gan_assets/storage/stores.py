"""Object stores with one key layout: ``{root}/{asset_key path}/{partition}.{ext}``.

``LocalObjectStore`` is a folder (the embedded default); ``S3ObjectStore`` is a bucket and
prefix reached through a boto3 S3 client (AWS, MinIO or any S3-compatible endpoint).
Writes are atomic: a local write goes to a temporary file in the same folder and is renamed;
an S3 write is a single PUT (multipart above the transfer threshold, committed at once).
"""

from __future__ import annotations

import io
import os
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any


class ObjectNotFoundError(FileNotFoundError):
    """No object at the key; the message names the URI."""


class ObjectStore(ABC):
    """Bytes under string keys (``a/b/c.ext``); ``uri`` names an object for people and metadata."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> str:
        """Store atomically; return the object's URI."""

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Keys that start with ``prefix`` (sorted)."""

    @abstractmethod
    def uri(self, key: str) -> str: ...

    @property
    @abstractmethod
    def root_uri(self) -> str: ...


def _clean(key: str) -> str:
    key = key.replace("\\", "/").strip("/")
    if not key or any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"invalid storage key {key!r}")
    return key


class LocalObjectStore(ObjectStore):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()

    @property
    def root_uri(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / _clean(key)

    def uri(self, key: str) -> str:
        return str(self._path(key))

    def put(self, key: str, data: bytes) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return str(path)

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError as err:
            raise ObjectNotFoundError(f"no stored object at {path}") from err

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str) -> list[str]:
        prefix = prefix.replace("\\", "/").lstrip("/")
        folder, _, stem = prefix.rpartition("/")
        base = self.root / folder if folder else self.root
        if not base.is_dir():
            return []
        keys = []
        for path in base.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)


class S3ObjectStore(ObjectStore):
    # Above this size boto3's managed transfer switches to multipart upload.
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

    def put(self, key: str, data: bytes) -> str:
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_threshold=self.MULTIPART_THRESHOLD)
        self.client.upload_fileobj(io.BytesIO(data), self.bucket, self._key(key), Config=config)
        return self.uri(key)

    def get(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except self.client.exceptions.NoSuchKey as err:
            raise ObjectNotFoundError(f"no stored object at {self.uri(key)}") from err

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def list(self, prefix: str) -> list[str]:
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
        return S3ObjectStore(s3_client, bucket, prefix)
    return LocalObjectStore(root)
