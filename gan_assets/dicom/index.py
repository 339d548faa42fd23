"""The landing-zone index: every file of the zone, read once, with the month its header gives it.

An archive holds years of files; a month's ingest must not read them all. The index is a
Parquet table (``INDEX_SCHEMA``) with one row per listed file: its pseudonymous reference,
size, modification time, a keyed content fingerprint, and the header scan's outcome (the
manifest row: month, codes, status, reason). ``update_index`` lists the zone (one listing, no
reads), keeps the row of every file whose size and modification time (ETag on S3) are those
indexed, and scans only new or changed files. Deleted files drop out.

A file is *assigned* when its header dates it into a partition month; everything else is
*unassigned*, with a reason (``unassigned_rows``): undated or unreadable files (their scan
reason) and files dated outside the partitions (``outside_partitions``). Nothing is filed under
the month it happened to arrive in.

Each month's content has a fingerprint (``month_fingerprints``: the sorted file references
and content fingerprints of its files), which changes exactly when a file of the month is
added, replaced or deleted. The Dagster shell reports it as the month's data version.

The table's schema metadata records the scan policy it was built with (``policy``): rows
depend on the scan options (dates, burned-in policy, limits...), so a different policy
rebuilds the index. No path or header text is stored: only keyed references and codes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import time
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO, NamedTuple

import pyarrow as pa

from gan_assets.dicom.landing_zone import FileChangedError, FileEntry, LandingZone, SourceSpec
from gan_assets.dicom.pseudonym import content_ref, file_ref
from gan_assets.dicom.readahead import Fetched
from gan_assets.dicom.reasons import REASONS, reason_sentence
from gan_assets.dicom.scan import ARRIVAL, INT_COLUMNS, MANIFEST_COLUMNS, ScanOptions, rejected_row

INDEX_VERSION = "1"

_INT_COLUMNS = set(INT_COLUMNS)

MANIFEST_SCHEMA = pa.schema(
    [pa.field(name, pa.int64() if name in _INT_COLUMNS else pa.string(), nullable=False) for name in MANIFEST_COLUMNS],
    metadata={"description": "dicom_manifest: one row per file of the month; pseudonymous ids and codes only"},
)
INDEX_SCHEMA = pa.schema(
    [*MANIFEST_SCHEMA, pa.field("indexed_at_ns", pa.int64(), nullable=False)],
    metadata={"description": "landing_zone_index: one row per file of the zone; pseudonymous ids and codes only"},
)
# Schema metadata keys of a stored index.
META_VERSION = b"gan_assets.index_version"
META_POLICY = b"gan_assets.scan_policy"
META_OBSERVED = b"gan_assets.observed_months"
OUTSIDE_PARTITIONS = "outside_partitions"


def scan_policy(options: ScanOptions, key: bytes) -> str:
    """Fingerprint of what decides a row: the scan options and the pseudonym key (never stored)."""
    options_json = json.dumps(dataclasses.asdict(options), sort_keys=True, default=list)
    key_id = hashlib.sha256(b"gan-assets-key-id:" + key).hexdigest()[:16]
    return hashlib.sha256(f"{INDEX_VERSION}|{options_json}|{key_id}".encode()).hexdigest()[:32]


def empty_index() -> pa.Table:
    return INDEX_SCHEMA.empty_table()


def index_policy(table: pa.Table | None) -> str:
    metadata = (table.schema.metadata or {}) if table is not None else {}
    if metadata.get(META_VERSION, b"").decode() != INDEX_VERSION:
        return ""
    return metadata.get(META_POLICY, b"").decode()


def observed_months(table: pa.Table | None) -> dict[str, str]:
    """Month -> fingerprint last reported as that month's data version (kept with the index)."""
    raw = ((table.schema.metadata or {}) if table is not None else {}).get(META_OBSERVED, b"{}")
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def with_observed(table: pa.Table, observed: dict[str, str]) -> pa.Table:
    metadata = dict(table.schema.metadata or {})
    metadata[META_OBSERVED] = json.dumps(dict(sorted(observed.items()))).encode()
    return table.replace_schema_metadata(metadata)


def table_of_rows(rows: list[dict[str, Any]]) -> pa.Table:
    """An index table of scan rows that have no content fingerprint (a scan without the index)."""
    return _table([{**row, "content_hash": row.get("content_hash") or "", "indexed_at_ns": 0} for row in rows], "", {})


def _table(rows: list[dict[str, Any]], policy: str, observed: dict[str, str], kept: pa.Table | None = None) -> pa.Table:
    """The index of ``rows`` (and the ``kept`` rows of a previous index), ordered by file reference."""
    table = pa.Table.from_pylist(rows, schema=INDEX_SCHEMA)  # raises on a missing column or a wrong type
    if kept is not None:
        table = pa.concat_tables([kept.replace_schema_metadata(INDEX_SCHEMA.metadata), table])
    table = table.sort_by("file_ref")
    metadata = dict(INDEX_SCHEMA.metadata or {})
    metadata.update({META_VERSION: INDEX_VERSION.encode(), META_POLICY: policy.encode()})
    return with_observed(table.replace_schema_metadata(metadata), observed)


def check_index(table: pa.Table) -> pa.Table:
    """The stored index with the declared schema, or ValueError saying what differs."""
    if not isinstance(table, pa.Table):
        raise ValueError(f"landing_zone_index is a {type(table).__name__}, not a Parquet table")
    missing = [name for name in INDEX_SCHEMA.names if name not in table.schema.names]
    if missing:
        raise ValueError(f"landing_zone_index lacks column(s) {missing}; materialize landing_zone_index again")
    return table


# Local files up to this size are read once for both the header scan and the content hash.
ONE_READ_MAX_BYTES = 64 << 20


class _ReadZone:
    """The zone as scan_file sees it, its header served from what was already read.

    ``whole``: the read holds the whole file (a local file read once), so a full open is served
    from it too; else it holds the header (S3) and a full open reads the object.
    """

    def __init__(self, zone: LandingZone, fetched: Fetched[Any], whole: bool) -> None:
        self.spec, self._zone, self._fetched, self._whole = zone.spec, zone, fetched, whole

    def open_header(self, entry: FileEntry) -> io.BytesIO:
        value = self._fetched.get()  # raises what the read raised: the scan gives it its reason
        return io.BytesIO(value[0] if self._whole else value)

    def open_full(self, entry: FileEntry) -> BinaryIO:
        return self.open_header(entry) if self._whole else self._zone.open_full(entry)

    def content_digest(self, entry: FileEntry) -> str:
        return self._zone.content_digest(entry)


def _one_read(zone: LandingZone, entry: FileEntry, options: ScanOptions) -> bool:
    """Whether a local file is read once, whole, for both its header scan and its content hash."""
    return (not entry.problem and not zone.spec.is_s3
            and 0 < entry.size <= min(ONE_READ_MAX_BYTES, options.limits.max_file_bytes))


def _index_read(zone: LandingZone, task: tuple[FileEntry, ScanOptions]) -> Any:
    """The I/O half of a file's index task: the whole file and its digest (a local file read once),
    the header (S3: a ranged GET; the fingerprint is the listing's ETag), or None (read by the scan)."""
    entry, options = task
    if _one_read(zone, entry, options):
        return zone.read_verified(entry)
    if zone.spec.is_s3 and not entry.problem and entry.size <= options.limits.max_file_bytes:
        return zone.read_header(entry)
    return None


def _index_task(task: tuple[FileEntry, ScanOptions], fetched: Fetched[Any]) -> dict[str, Any]:
    """One file's index row: the header scan plus a keyed content fingerprint (worker side)."""
    from gan_assets.dicom import batch

    entry, options = task
    zone: LandingZone = batch._WORKER["zone"]
    key: bytes = batch._WORKER["key"]
    if _one_read(zone, entry, options):
        try:
            _, digest = fetched.get()
        except (FileChangedError, OSError) as err:
            row = _read_error_row(entry, key, err)
            row["content_hash"] = ""
            return row
        row = batch.scan_row(_ReadZone(zone, fetched, whole=True), entry, key, options)
        row["content_hash"] = content_ref(digest, key)
        return row
    if fetched.value is None and fetched.error is None:
        return _scan_then_hash(zone, key, task)
    return _scan_then_hash(_ReadZone(zone, fetched, whole=False), key, task)


def _scan_then_hash(zone: Any, key: bytes, task: tuple[FileEntry, ScanOptions]) -> dict[str, Any]:
    from gan_assets.dicom import batch

    entry, options = task
    row = batch.scan_row(zone, entry, key, options)
    digest = ""
    if not entry.problem and row["reason_code"] not in ("missing", "changed", "too_large", "io_error"):
        try:
            digest = zone.content_digest(entry)
        except (FileChangedError, OSError) as err:
            row = _read_error_row(entry, key, err)
    row["content_hash"] = content_ref(digest, key)
    return row


def _index_read_bytes(task: tuple[FileEntry, ScanOptions]) -> int:
    entry = task[0]
    return entry.size if entry.size <= ONE_READ_MAX_BYTES else 0


def _read_error_row(entry: FileEntry, key: bytes, err: Exception) -> dict[str, Any]:
    """The row of a file whose read failed: changed since listed, gone, or an I/O error (retried)."""
    code = "changed" if isinstance(err, FileChangedError) else "missing" if isinstance(err, FileNotFoundError) else "io_error"
    return rejected_row(entry, key, code)


@dataclass(frozen=True)
class _IndexFallback:
    key: bytes
    code: str

    def __call__(self, task: tuple[FileEntry, ScanOptions]) -> dict[str, Any]:
        row = rejected_row(task[0], self.key, self.code)
        row["content_hash"] = ""
        return row


# Outcomes that say nothing lasting about the file (it vanished or changed while read, the disk or
# the network failed, the worker died, a bug): such a file is read again on the next update. A
# ``timeout`` is not: a file that stalls a parser would cost decode_seconds on every update.
RETRIED = frozenset({"missing", "changed", "io_error", "worker_died", "internal_error"})


class IndexedFile(NamedTuple):
    """What the index holds about one file that a listing is compared with (and its row's position)."""

    position: int
    reason_code: str
    file_bytes: int
    file_mtime_ns: int
    content_hash: str
    month: str
    month_source: str


def indexed_files(table: pa.Table | None) -> dict[str, IndexedFile]:
    """file_ref -> the indexed file, read from the few columns a comparison needs (not whole rows)."""
    if table is None or table.num_rows == 0:
        return {}
    columns = table.select([name for name in IndexedFile._fields if name != "position"]).to_pydict()
    return {ref: IndexedFile(position, *values)
            for position, (ref, *values) in enumerate(zip(table.column("file_ref").to_pylist(), *columns.values()))}


def listed_as_indexed(indexed: IndexedFile, entry: FileEntry, key: bytes) -> bool:
    """Whether the listed file is the version the index describes: the same skip reason for an entry
    never read (a FIFO, a link out of the zone, a bad name), else the same size and modification
    time, and on S3 the same ETag."""
    if entry.problem:
        return indexed.reason_code == entry.problem
    if indexed.file_bytes != entry.size or indexed.file_mtime_ns != entry.mtime_ns:
        return False
    return not (entry.etag and indexed.content_hash
                and indexed.content_hash != content_ref(f"etag:{entry.etag}", key))


def _unchanged(indexed: IndexedFile, entry: FileEntry, key: bytes) -> bool:
    """Whether the listed file can keep its row without a read (a retried outcome is read again)."""
    if not entry.problem and indexed.reason_code in RETRIED:
        return False
    return listed_as_indexed(indexed, entry, key)


@dataclass
class IndexUpdate:
    """A new index and what changed since the previous one (counts and months, no paths)."""

    table: pa.Table
    files_listed: int
    new: int
    changed: int
    deleted: int
    unchanged: int
    rebuilt: bool  # the previous index was absent or built with another policy
    list_seconds: float
    scan_seconds: float
    seconds: float
    months_touched: list[str] = field(default_factory=list)  # months of new, changed or deleted files

    @property
    def files_read(self) -> int:
        return self.new + self.changed

    @property
    def seconds_per_file_read(self) -> float:
        return self.scan_seconds / self.files_read if self.files_read else 0.0


def update_index(spec: SourceSpec, previous: pa.Table | None, options: ScanOptions, *, key: bytes,
                 workers: int = 0, tune: bool = True, zone: LandingZone | None = None,
                 pool_threshold: int | None = None) -> IndexUpdate:
    """List the zone, keep what is indexed and unchanged, scan what is new or changed."""
    from gan_assets.dicom.batch import SCAN_POOL_MIN_FILES, run_parallel

    started = time.perf_counter()
    zone = zone or LandingZone(spec)
    entries = zone.list_files()
    list_seconds = time.perf_counter() - started
    policy = scan_policy(options, key)
    rebuilt = previous is None or index_policy(previous) != policy
    old = {} if rebuilt else indexed_files(previous)
    observed = observed_months(previous) if previous is not None else {}

    kept: list[int] = []  # positions in the previous table of rows kept as they are
    to_scan: list[FileEntry] = []
    listed_refs: set[str] = set()
    for entry in entries:
        ref = file_ref(entry.relative_path, key)
        listed_refs.add(ref)
        indexed = old.get(ref)
        if indexed is not None and _unchanged(indexed, entry, key):
            kept.append(indexed.position)
        else:
            to_scan.append(entry)

    scan_started = time.perf_counter()
    now_ns = time.time_ns()
    scanned = run_parallel(
        _index_task, [(entry, options) for entry in to_scan], spec=spec, key=key, workers=workers, tune=tune,
        pool_threshold=SCAN_POOL_MIN_FILES if pool_threshold is None else pool_threshold,
        timeout_s=options.limits.decode_seconds, on_timeout=_IndexFallback(key, "timeout"),
        on_died=_IndexFallback(key, "worker_died"), read=_index_read, read_size=_index_read_bytes)
    scan_seconds = time.perf_counter() - scan_started
    for row in scanned:
        row["indexed_at_ns"] = now_ns

    deleted = [indexed for ref, indexed in old.items() if ref not in listed_refs]
    replaced = [old[row["file_ref"]] for row in scanned if row["file_ref"] in old]
    # Months whose files were added, replaced or deleted (an undated file belongs to no month).
    touched = {row["month"] for row in scanned if _dated(row)}
    touched |= {indexed.month for indexed in deleted + replaced if indexed.month_source != ARRIVAL}
    # Kept rows are taken from the previous table as they are (columnar, no Python rows).
    kept_table = previous.take(kept).select(INDEX_SCHEMA.names).cast(INDEX_SCHEMA) if kept else None
    table = _table(scanned, policy, observed, kept=kept_table)
    return IndexUpdate(
        table=table, files_listed=len(entries), new=len(scanned) - len(replaced), changed=len(replaced),
        deleted=len(deleted),
        unchanged=len(kept), rebuilt=rebuilt, list_seconds=list_seconds, scan_seconds=scan_seconds,
        seconds=time.perf_counter() - started, months_touched=sorted(m for m in touched if m),
    )


def _dated(row: dict[str, Any]) -> bool:
    return row["month_source"] != ARRIVAL


def month_rows(table: pa.Table, month: str) -> list[dict[str, Any]]:
    """Manifest rows of one month (YYYY-MM): its dated files, ordered by file reference.

    A second ok file with an already-seen image id (SOPInstanceUID) is rejected as ``duplicate``.
    """
    import pyarrow.compute as pc

    selected = table.filter(pc.equal(table["month"], month)).select(list(MANIFEST_COLUMNS)).to_pylist()
    rows = sorted((row for row in selected if _dated(row)), key=lambda row: row["file_ref"])
    seen: set[str] = set()
    for row in rows:
        if row["status"] != "ok":
            continue
        if row["id"] in seen:
            row.update(status="rejected", reason_code="duplicate", reason=REASONS["duplicate"])
        seen.add(row["id"])
    return rows


def unassigned_rows(table: pa.Table, partition_months: Collection[str]) -> list[dict[str, Any]]:
    """Files no month's manifest holds, each with why: undated/unreadable (its scan reason) or dated
    outside the partitions (``outside_partitions``; the month is kept, so it is picked up once that
    month becomes a partition)."""
    out: list[dict[str, Any]] = []
    for row in table.select(["file_ref", "month", "month_source", "status", "reason_code", "file_bytes"]).to_pylist():
        if not _dated(row):
            code = row["reason_code"] or "no_usable_date"
            out.append({"file_ref": row["file_ref"], "month": "", "reason_code": code, "reason": reason_sentence(code)})
        elif row["month"] not in partition_months:
            out.append({"file_ref": row["file_ref"], "month": row["month"], "reason_code": OUTSIDE_PARTITIONS,
                        "reason": REASONS[OUTSIDE_PARTITIONS]})
    return out


def zone_summary(table: pa.Table, partition_months: Collection[str]) -> dict[str, Any]:
    """The zone as a report states it: files, unassigned files, and unassigned by reason code."""
    codes = Counter(row["reason_code"] for row in unassigned_rows(table, partition_months))
    return {"files": table.num_rows, "unassigned": sum(codes.values()), "unassigned_by_reason": dict(sorted(codes.items()))}


def month_fingerprints(table: pa.Table, months: Iterable[str] | None = None) -> dict[str, str]:
    """Month -> fingerprint of its dated files (references and content); changes with any add,
    replace or delete of one of them. Months without files are absent."""
    wanted = set(months) if months is not None else None
    parts: dict[str, list[str]] = {}
    for row in table.select(["file_ref", "content_hash", "file_bytes", "file_mtime_ns", "month", "month_source"]).to_pylist():
        if not _dated(row) or (wanted is not None and row["month"] not in wanted):
            continue
        content = row["content_hash"] or f"{row['file_bytes']}:{row['file_mtime_ns']}"
        parts.setdefault(row["month"], []).append(f"{row['file_ref']}={content}")
    return {month: hashlib.sha256("\n".join(sorted(items)).encode()).hexdigest()[:32] for month, items in sorted(parts.items())}


EMPTY_MONTH = "empty"


def months_to_report(table: pa.Table, partition_months: Collection[str]) -> dict[str, str]:
    """Partition months whose fingerprint differs from the one last reported (``EMPTY_MONTH`` for a
    month that had files and has none now)."""
    current = month_fingerprints(table, partition_months)
    observed = observed_months(table)
    changes = {month: fp for month, fp in current.items() if observed.get(month) != fp}
    for month, fp in observed.items():
        if month in partition_months and month not in current and fp != EMPTY_MONTH:
            changes[month] = EMPTY_MONTH
    return dict(sorted(changes.items()))


def summary_by_month(table: pa.Table) -> dict[str, dict[str, int]]:
    """Month -> {"files", "ok"} for dated files."""
    counts: dict[str, Counter] = {}
    for row in table.select(["month", "month_source", "status"]).to_pylist():
        if _dated(row):
            counter = counts.setdefault(row["month"], Counter())
            counter["files"] += 1
            counter["ok"] += int(row["status"] == "ok")
    return {month: {"files": c["files"], "ok": c["ok"]} for month, c in sorted(counts.items())}
