"""Listing and reading the landing zone: a local folder or an ``s3://bucket/prefix``.

``SourceSpec`` is a small picklable value so worker processes can open their own client. S3
zones are listed through the storage core's filesystem layer (s3fs, with the same ``S3Settings``
as the artifact storage: ETag, LastModified and size) and read with GETs conditional on the
listed ETag (a boto3 client from the same settings: s3fs offers no If-Match, and its one event
loop serves every thread, where ingest reads ahead with several), so what is scanned and decoded
is the version listed; a header is a ranged GET. Local
zones are walked with ``os.scandir`` and ``lstat``, not fsspec, because the rules below need each
entry's own link status and resolved path, which fsspec's local ``find`` does not check (and it
is no faster: 6-7 µs a file against 5 µs here, for 2,520 files).
Hidden files (a name starting with ``.``, e.g. partial uploads) are not part of the zone.

Only regular files inside the zone are read. Listing never follows a link that leaves the zone
and never opens anything: a FIFO, device, socket, a link to outside the zone, a dangling link,
a file deleted while the zone is listed or a name that is not UTF-8 is still listed (so it is
counted) with a ``problem`` code, and becomes one rejected manifest row. Opening re-checks the
file with ``fstat`` on a non-blocking descriptor, so a file swapped for a FIFO after listing
cannot hang a worker, and a file whose size or modification time changed is ``changed``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import stat as stat_module
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from gan_assets.storage.stores import S3Settings, storage_path

# Enough for nearly every DICOM header; a longer header is fetched whole.
S3_HEADER_BYTES = 256 * 1024
# Read-ahead threads of in-process ingest (see read_ahead_threads; figures in docs/scaling.md).
S3_READ_AHEAD_THREADS = 8
LOCAL_READ_AHEAD_THREADS = 1
LOCAL_READ_AHEAD_MIN_BYTES = 128 << 10
# How long a listing of the zone may be reused by the same process (see recent_listing).
LISTING_REUSE_SECONDS = 300.0


@dataclass(frozen=True)
class SourceSpec:
    """Where the landing zone is: a folder, or s3://bucket/prefix reached with ``s3``'s settings."""

    location: str
    s3: S3Settings | None = None

    @property
    def is_s3(self) -> bool:
        return self.location.startswith("s3://")


@dataclass(frozen=True)
class FileEntry:
    """One file of the zone: path relative to the zone root, size and arrival (mtime) in UTC.

    ``problem`` is a reject code when the entry must not be read (``not_regular_file``,
    ``outside_zone``, ``missing``, ``bad_name``); ``mtime_ns`` identifies the version listed.
    """

    relative_path: str
    size: int
    modified: dt.datetime
    problem: str = ""
    mtime_ns: int = 0
    etag: str = ""  # S3 only: the object's ETag from the listing (a content hash, free to read)


# The latest listing of each zone in this process: {spec: (time.monotonic(), entries)}.
_RECENT_LISTINGS: dict[SourceSpec, tuple[float, list[FileEntry]]] = {}


class FileChangedError(Exception):
    """The file is not the one listed (size or modification time differ, or not a regular file)."""


def _entry_from_stat(rel: str, st: os.stat_result) -> FileEntry:
    modified = dt.datetime.fromtimestamp(st.st_mtime, tz=dt.timezone.utc)
    return FileEntry(rel, int(st.st_size), modified, mtime_ns=int(st.st_mtime_ns))


def _bad_name(rel: str) -> bool:
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:  # os.walk hands undecodable bytes back as surrogates
        return True
    return False


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
            self.fs = storage_path(f"s3://{bucket}", spec.s3).fs
        else:
            self.root = Path(spec.location).expanduser().resolve()

    @property
    def client(self) -> Any:
        """A boto3 client with the zone's S3 settings, for the conditional GET s3fs does not offer."""
        if self._client is None:
            self._client = (self.spec.s3 or S3Settings()).client()
        return self._client

    def _s3_path(self, relative_path: str) -> str:
        return f"{self.bucket}/{self._key(relative_path)}"

    def list_files(self) -> list[FileEntry]:
        """Every non-hidden file, sorted by relative path (a deterministic order)."""
        entries: list[FileEntry] = []
        if self.spec.is_s3:
            base = f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket
            for path, info in self.fs.find(base, detail=True).items():
                rel = path[len(base) + 1:]
                if not rel or rel.endswith("/") or any(p.startswith(".") for p in rel.split("/")):
                    continue
                modified = info["LastModified"].astimezone(dt.timezone.utc)
                entries.append(FileEntry(rel, int(info["size"]), modified,
                                         mtime_ns=int(modified.timestamp() * 1_000_000) * 1000,
                                         etag=str(info.get("ETag", "")).strip('"')))
        else:
            if not self.root.is_dir():
                # The location is not echoed: zone paths can hold patient ids, and this reaches the event log.
                raise FileNotFoundError(
                    "the landing zone folder named by dicom_source.location does not exist; create demo data with "
                    "`python -m gan_assets.demo data` or point the dicom_source resource at your data")
            entries = self._list_local()
        entries.sort(key=lambda e: e.relative_path)
        _RECENT_LISTINGS[self.spec] = (time.monotonic(), entries)
        return entries

    def recent_listing(self, max_age_s: float = LISTING_REUSE_SECONDS) -> list[FileEntry]:
        """This process's latest listing of the zone if younger than ``max_age_s``, else a new one.

        A Dagster run lists the zone for the index and decodes the month moments later in the same
        process; listing an archive again (on S3 a LIST per 1,000 keys) buys nothing, because every
        open checks the file against its listed size, time and content, so a file changed or gone
        since is rejected as ``changed`` or ``missing`` all the same.
        """
        listed = _RECENT_LISTINGS.get(self.spec)
        if listed is not None and time.monotonic() - listed[0] <= max_age_s:
            return listed[1]
        return self.list_files()

    def _list_local(self) -> list[FileEntry]:
        """Every non-hidden entry below the root, by ``os.scandir`` (links are listed, never followed).

        A plain regular file with a UTF-8 name costs one ``lstat`` and string joins; anything else
        (a link, a FIFO, a device, a name that is not UTF-8, an entry gone since the folder was
        read) goes through :meth:`_local_entry`'s checks. A folder that cannot be read is passed
        over, as ``os.walk`` does.
        """
        entries: list[FileEntry] = []
        folders = [(str(self.root), "")]
        while folders:
            folder, prefix = folders.pop()
            try:
                listing = os.scandir(folder)
            except OSError:
                continue
            with listing:
                for item in listing:
                    if item.name.startswith("."):
                        continue
                    rel = prefix + item.name
                    try:
                        if item.is_dir(follow_symlinks=False):
                            folders.append((item.path, rel + "/"))
                            continue
                        if item.is_file(follow_symlinks=False) and not _bad_name(rel):
                            st = item.stat(follow_symlinks=False)
                            if stat_module.S_ISREG(st.st_mode):
                                entries.append(_entry_from_stat(rel, st))
                                continue
                    except OSError:
                        pass
                    entries.append(self._local_entry(Path(item.path)))
        return entries

    def _local_entry(self, path: Path) -> FileEntry:
        rel = path.relative_to(self.root).as_posix()
        try:
            link = path.lstat()
        except OSError:  # deleted between listing and stat: counted in the month of the listing
            return FileEntry(rel, 0, dt.datetime.now(dt.timezone.utc), problem="missing")
        # A skipped entry is still filed under the month it arrived (its own modification time).
        arrived = dt.datetime.fromtimestamp(link.st_mtime, tz=dt.timezone.utc)
        if _bad_name(rel):
            return FileEntry(rel, 0, arrived, problem="bad_name")
        if stat_module.S_ISLNK(link.st_mode):
            target = Path(os.path.realpath(path))
            if not self._inside(target):
                return FileEntry(rel, 0, arrived, problem="outside_zone")
            try:
                st = target.stat()
            except OSError:  # a dangling link, or a link loop
                return FileEntry(rel, 0, arrived, problem="missing")
        else:
            st = link
        if not stat_module.S_ISREG(st.st_mode):
            return FileEntry(rel, 0, arrived, problem="not_regular_file")
        return _entry_from_stat(rel, st)

    def _inside(self, target: Path) -> bool:
        return target == self.root or self.root in target.parents

    def local_path(self, relative_path: str) -> Path:
        return self.root / relative_path

    def _open_local(self, entry: FileEntry) -> BinaryIO:
        """Open without blocking or following a link out of the zone; verify it is the listed file."""
        path = self.local_path(entry.relative_path)
        if not self._inside(Path(os.path.realpath(path))):
            raise FileChangedError("the file now resolves outside the landing zone")
        # O_NONBLOCK: a FIFO swapped in after listing must not block open(); fstat then refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        try:
            st = os.fstat(fd)
            if not stat_module.S_ISREG(st.st_mode):
                raise FileChangedError("the file is no longer a regular file")
            if entry.mtime_ns and (int(st.st_size) != entry.size or int(st.st_mtime_ns) != entry.mtime_ns):
                raise FileChangedError("size or modification time differ from the listing")
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise

    def open_header(self, entry: FileEntry) -> BinaryIO:
        """A binary file positioned at 0 holding at least the header (whole file locally)."""
        if not self.spec.is_s3:
            return self._open_local(entry)
        return io.BytesIO(self.read_header(entry))

    def read_header(self, entry: FileEntry) -> bytes:
        """S3: the object's first S3_HEADER_BYTES (the whole of a smaller one), in one GET
        conditional on the listed ETag, so the header scanned is the version the index records."""
        return self._get_listed(entry, None if entry.size <= S3_HEADER_BYTES else S3_HEADER_BYTES)[0]

    def read_ahead_threads(self, typical_bytes: int) -> int:
        """Threads that read a month's next files while ingest parses in-process (``typical_bytes``:
        the files' mean size). On S3 several GETs wait on the network at once. Locally one thread
        reads and hashes beside the parsing, which pays from LOCAL_READ_AHEAD_MIN_BYTES a file;
        below it, handing small files between threads costs more than it hides."""
        if self.spec.is_s3:
            _ = self.client  # built here, once: boto3 clients are not built thread-safely
            return S3_READ_AHEAD_THREADS
        return LOCAL_READ_AHEAD_THREADS if typical_bytes >= LOCAL_READ_AHEAD_MIN_BYTES else 0

    def open_full(self, entry: FileEntry) -> BinaryIO:
        if not self.spec.is_s3:
            return self._open_local(entry)
        data = self.read_bytes(entry)
        if len(data) != entry.size:
            raise FileChangedError("the object's size differs from the listing")
        return io.BytesIO(data)

    def read_verified(self, entry: FileEntry) -> tuple[bytes, str]:
        """The whole file and its content digest (as ``content_digest`` gives it), in one read.

        On S3 the GET is conditional on the listed ETag, so an object replaced since the listing
        raises FileChangedError instead of being read.
        """
        if not self.spec.is_s3:
            with self._open_local(entry) as handle:
                data = handle.read()
            return data, f"sha256:{hashlib.sha256(data).hexdigest()}"
        data, etag = self._get_listed(entry)
        if len(data) != entry.size:
            raise FileChangedError("the object's size differs from the listing")
        return data, f"etag:{etag}"

    def _get_listed(self, entry: FileEntry, first_bytes: int | None = None) -> tuple[bytes, str]:
        """S3: one GET of the object as listed (conditional on its ETag), or of its first bytes.

        Errors come back as the local ones: gone -> FileNotFoundError, replaced since listed ->
        FileChangedError, refused -> PermissionError, anything else from the server -> OSError
        (an io_error, read again on the next update). The boto3 client is thread-safe, and each
        read-ahead thread waits on its own connection.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        extra: dict[str, str] = {"IfMatch": f'"{entry.etag}"'} if entry.etag else {}
        if first_bytes is not None:
            extra["Range"] = f"bytes=0-{first_bytes - 1}"
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(entry.relative_path), **extra)
            data = response["Body"].read()
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", ""))
            if code in ("PreconditionFailed", "412"):
                raise FileChangedError("the object's ETag differs from the listing") from None
            if code in ("NoSuchKey", "404"):
                raise FileNotFoundError("the object is gone") from None
            if code in ("AccessDenied", "403"):
                raise PermissionError("reading the object was refused") from None
            raise OSError(f"S3 answered {code or 'an error'}") from None
        except BotoCoreError as err:  # connection, timeout, incomplete read
            raise OSError(type(err).__name__) from None
        return data, str(response.get("ETag", entry.etag)).strip('"')

    def read_bytes(self, entry: FileEntry) -> bytes:
        if not self.spec.is_s3:
            with self._open_local(entry) as handle:
                return handle.read()
        return self._get_listed(entry)[0]

    def content_digest(self, entry: FileEntry) -> str:
        """A digest of the file's content: SHA-256 of the bytes locally, the ETag on S3 (no extra GET).

        Locally the file is read through the same checks as decoding (regular file, inside the
        zone, the listed size and modification time), in 1 MiB blocks.
        """
        if self.spec.is_s3:
            return f"etag:{entry.etag}" if entry.etag else ""
        digest = hashlib.sha256()
        with self._open_local(entry) as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return f"sha256:{digest.hexdigest()}"

    def write_bytes(self, relative_path: str, data: bytes) -> None:
        """Store one file of the zone (demo data and tests; ingest itself only reads)."""
        if not self.spec.is_s3:
            path = self.local_path(relative_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            return
        self.fs.pipe_file(self._s3_path(relative_path), data)

    def _key(self, relative_path: str) -> str:
        return f"{self.prefix}/{relative_path}" if self.prefix else relative_path

    def describe(self, entry: FileEntry) -> str:
        """Where a file is, for operators only (never written to artifacts or logs)."""
        if self.spec.is_s3:
            return f"s3://{self.bucket}/{self._key(entry.relative_path)}"
        return str(self.local_path(entry.relative_path))
