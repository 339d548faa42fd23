"""Listing and reading the landing zone: a local folder or an ``s3://bucket/prefix``.

``SourceSpec`` is a small picklable value so worker processes can open their own client.
Hidden files (a name starting with ``.``, e.g. partial uploads) are not part of the zone.
"""

from __future__ import annotations

import datetime as dt
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

# Enough for nearly every DICOM header; a longer header is fetched whole.
S3_HEADER_BYTES = 256 * 1024


@dataclass(frozen=True)
class SourceSpec:
    """Where the landing zone is: a folder, or s3://bucket/prefix with an optional endpoint."""

    location: str
    endpoint_url: str | None = None
    region_name: str | None = None

    @property
    def is_s3(self) -> bool:
        return self.location.startswith("s3://")


@dataclass(frozen=True)
class FileEntry:
    """One file of the zone: path relative to the zone root, size and arrival (mtime) in UTC."""

    relative_path: str
    size: int
    modified: dt.datetime


class LandingZone:
    """Lists and reads files of one landing zone (one instance per process)."""

    def __init__(self, spec: SourceSpec, client: Any | None = None) -> None:
        self.spec = spec
        self._client = client
        if spec.is_s3:
            bucket, _, prefix = spec.location[len("s3://"):].partition("/")
            if not bucket:
                raise ValueError(f"dicom_source location {spec.location!r} has no bucket; use s3://bucket/prefix")
            self.bucket, self.prefix = bucket, prefix.strip("/")
        else:
            self.root = Path(spec.location).expanduser().resolve()

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("s3", endpoint_url=self.spec.endpoint_url, region_name=self.spec.region_name)
        return self._client

    def list_files(self) -> list[FileEntry]:
        """Every non-hidden file, sorted by relative path (a deterministic order)."""
        entries: list[FileEntry] = []
        if self.spec.is_s3:
            paginator = self.client.get_paginator("list_objects_v2")
            start = f"{self.prefix}/" if self.prefix else ""
            for page in paginator.paginate(Bucket=self.bucket, Prefix=start):
                for obj in page.get("Contents", []):
                    rel = obj["Key"][len(start):]
                    if not rel or rel.endswith("/") or any(p.startswith(".") for p in rel.split("/")):
                        continue
                    modified = obj["LastModified"].astimezone(dt.timezone.utc)
                    entries.append(FileEntry(rel, int(obj["Size"]), modified))
        else:
            if not self.root.is_dir():
                raise FileNotFoundError(
                    f"landing zone folder {self.root} does not exist; create demo data with "
                    "`python -m gan_assets.demo data` or point the dicom_source resource at your data")
            for dirpath, dirnames, filenames in os.walk(self.root):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                for name in filenames:
                    if name.startswith("."):
                        continue
                    path = Path(dirpath) / name
                    stat = path.stat()
                    rel = path.relative_to(self.root).as_posix()
                    modified = dt.datetime.fromtimestamp(stat.st_mtime, tz=dt.timezone.utc)
                    entries.append(FileEntry(rel, int(stat.st_size), modified))
        entries.sort(key=lambda e: e.relative_path)
        return entries

    def local_path(self, relative_path: str) -> Path:
        return self.root / relative_path

    def open_header(self, entry: FileEntry) -> BinaryIO:
        """A binary file positioned at 0 holding at least the header (whole file locally)."""
        if not self.spec.is_s3:
            return open(self.local_path(entry.relative_path), "rb")
        if entry.size <= S3_HEADER_BYTES:
            return io.BytesIO(self.read_bytes(entry))
        response = self.client.get_object(Bucket=self.bucket, Key=self._key(entry.relative_path),
                                          Range=f"bytes=0-{S3_HEADER_BYTES - 1}")
        return io.BytesIO(response["Body"].read())

    def open_full(self, entry: FileEntry) -> BinaryIO:
        if not self.spec.is_s3:
            return open(self.local_path(entry.relative_path), "rb")
        return io.BytesIO(self.read_bytes(entry))

    def read_bytes(self, entry: FileEntry) -> bytes:
        if not self.spec.is_s3:
            return self.local_path(entry.relative_path).read_bytes()
        return self.client.get_object(Bucket=self.bucket, Key=self._key(entry.relative_path))["Body"].read()

    def write_bytes(self, relative_path: str, data: bytes) -> None:
        """Store one file of the zone (demo data and tests; ingest itself only reads)."""
        if not self.spec.is_s3:
            path = self.local_path(relative_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            return
        self.client.put_object(Bucket=self.bucket, Key=self._key(relative_path), Body=data)

    def _key(self, relative_path: str) -> str:
        return f"{self.prefix}/{relative_path}" if self.prefix else relative_path

    def describe(self, entry: FileEntry) -> str:
        """Where a file is, for operators only (never written to artifacts or logs)."""
        if self.spec.is_s3:
            return f"s3://{self.bucket}/{self._key(entry.relative_path)}"
        return str(self.local_path(entry.relative_path))
