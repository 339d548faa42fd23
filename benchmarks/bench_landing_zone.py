"""Ingesting one new month of a long archive: the incremental landing-zone index vs a full re-scan.

    .venv/bin/python benchmarks/bench_landing_zone.py [--months 24] [--files-per-month 100]
        [--image-size 64] [--rounds 2] [--workers 0] [--storage local,s3]

An archive of ``--months`` demo months (``generate_landing_zone``: ~``--files-per-month`` good
CT slices a month plus its five bad files, small matrices so generation is quick) is written
once to a temporary folder. The index already covers every month but the last (built once with
``update_index`` on a zone holding only those months); then the last month's files arrive, and
we time "ingest the last month":

- ours (incremental): ``update_index(previous=index of the earlier months)`` (one listing, a
  header scan and content fingerprint of the new files only) + ``month_rows(table, month)`` +
  ``preprocess_month`` on its rows;
- baseline (``full re-scan``, ingest as it was before the index): ``scan_month(spec, month)``,
  which lists and header-reads every file of the archive, + the listing of the zone that
  preprocessed_images made again on its own before the index + the same ``preprocess_month``.

``ratio`` = baseline seconds / ours seconds (target >= 10). Both sides use the same ``--workers``
(default 0: one worker process per core, as the pipeline runs; pool start-up included on both
sides). Also printed: the breakdown of each side (listing, index scan, manifest rows,
preprocess), the per-file cost of the index update (scan seconds per file read, listing
seconds per file listed), a no-change update (nothing new: listing only), and the time of one
listing of the zone, which ``preprocess_month`` pays inside its preprocess on both sides.

Where the time goes (64 px, 100 files a month, 2 shared cores): the baseline's header scan of
the whole archive is what the index saves; both sides still pay the month's own decode, so the
ratio grows with the archive. The baseline runs its scan in a process pool over every file, so
it is the side that machine load moves most. On S3 the run also times the month's requests
alone (``request_floor``): moto answers one request at a time, so baseline / that floor is the
best ratio any client could reach against it. Figures: docs/scaling.md.

Storage: ``local`` (a folder) and ``s3`` (moto's S3 server, started as a separate process on
127.0.0.1 at a free port, so its request handling does not share this process's interpreter).
Rounds interleave the two sides; the best round of each counts. The JSON line's ``ratio`` is
the first storage's; every storage's figures are in ``per_storage``. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gan_assets.demo.data import generate_landing_zone
from gan_assets.dicom.batch import preprocess_month, resolve_workers, scan_month
from gan_assets.dicom.index import month_rows, update_index
from gan_assets.dicom.landing_zone import S3_READ_AHEAD_THREADS, LandingZone, SourceSpec
from gan_assets.dicom.pseudonym import file_ref
from gan_assets.dicom.preprocess import PreprocessOptions
from gan_assets.dicom.scan import ScanOptions
from gan_assets.storage import S3Settings

KEY = b"bench-landing-zone"
TARGET_RATIO = 10.0


@dataclass(frozen=True)
class Timing:
    seconds: float
    parts: dict[str, float]  # where the time went
    images: int
    manifest_rows: int


def months_from(first: str, count: int) -> list[str]:
    year, month = (int(part) for part in first.split("-"))
    out = []
    for _ in range(count):
        out.append(f"{year:04d}-{month:02d}")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def regular_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def incremental(spec: SourceSpec, previous: Any, month: str, scan: ScanOptions, prep: PreprocessOptions,
                workers: int) -> Timing:
    started = time.perf_counter()
    update = update_index(spec, previous, scan, key=KEY, workers=workers)
    assert not update.rebuilt and update.changed == 0 and update.deleted == 0, update
    rows_started = time.perf_counter()
    rows = month_rows(update.table, month)
    rows_seconds = time.perf_counter() - rows_started
    result = preprocess_month(spec, rows, prep, key=KEY, workers=workers)
    total = time.perf_counter() - started
    parts = {"list": update.list_seconds, "index_scan": update.scan_seconds,
             "index_other": update.seconds - update.list_seconds - update.scan_seconds,
             "month_rows": rows_seconds, "preprocess": result.seconds}
    parts["files_read"] = update.files_read
    parts["files_listed"] = update.files_listed
    return Timing(total, parts, int(result.images.shape[0]), len(rows))


def full_rescan(spec: SourceSpec, month: str, scan: ScanOptions, prep: PreprocessOptions, workers: int) -> Timing:
    started = time.perf_counter()
    scanned = scan_month(spec, month, scan, key=KEY, workers=workers)
    # Before the index, preprocessed_images listed the zone again itself (and keyed every path);
    # preprocess_month keys the listing it reuses on both sides, so only the listing is added here.
    relisted = time.perf_counter()
    LandingZone(spec).list_files()
    relisted = time.perf_counter() - relisted
    result = preprocess_month(spec, scanned.rows, prep, key=KEY, workers=workers)
    total = time.perf_counter() - started
    parts = {"scan_month": scanned.seconds, "relist": relisted, "preprocess": result.seconds,
             "files_listed": scanned.files_listed}
    return Timing(total, parts, int(result.images.shape[0]), len(scanned.rows))


def request_floor(spec: SourceSpec, arrival: Path, index: Any, month: str, rounds: int) -> float:
    """Seconds for the requests any incremental ingest of the month makes, and nothing else: one
    listing, a GET per arrived file (its header dates it) and a GET per file the month decodes,
    as many in flight as ingest's read-ahead. On moto the server's own time bounds this, so
    baseline / floor is the best ratio any client could reach there."""
    arrived = {p.relative_to(arrival).as_posix() for p in regular_files(arrival)}
    decoded = {row["file_ref"] for row in month_rows(index, month) if row["status"] == "ok"}
    best = float("inf")
    zone = LandingZone(spec)
    _ = zone.client  # made once, outside the timing (ingest pays it; the floor need not)
    for _ in range(rounds):
        started = time.perf_counter()
        entries = zone.list_files()
        with ThreadPoolExecutor(S3_READ_AHEAD_THREADS) as pool:
            list(pool.map(zone.read_header, [e for e in entries if e.relative_path in arrived]))
            list(pool.map(zone.read_verified, [e for e in entries if file_ref(e.relative_path, KEY) in decoded]))
        best = min(best, time.perf_counter() - started)
    return best


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    moto = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"http://127.0.0.1:{port}"
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto_server did not start within 30 s")


def upload(zone: LandingZone, root: Path) -> int:
    files = regular_files(root)
    for path in files:
        zone.write_bytes(path.relative_to(root).as_posix(), path.read_bytes())
    return len(files)


def bench_storage(storage: str, history: Path, arrival: Path, workdir: Path, month: str, args: argparse.Namespace,
                  scan: ScanOptions, prep: PreprocessOptions) -> dict[str, Any]:
    moto: subprocess.Popen[bytes] | None = None
    try:
        if storage == "local":
            root = workdir / "zone"
            shutil.copytree(history, root, symlinks=True)
            spec = SourceSpec(str(root))
            zone = LandingZone(spec)
        else:
            moto, endpoint = start_moto()
            spec = SourceSpec("s3://bench/zone", S3Settings(endpoint_url=endpoint))
            zone = LandingZone(spec)
            zone.client.create_bucket(Bucket="bench")
            started = time.perf_counter()
            n = upload(zone, history)
            print(f"[{storage}] uploaded {n} files of the earlier months in {time.perf_counter() - started:.1f} s",
                  flush=True)

        started = time.perf_counter()
        before = update_index(spec, None, scan, key=KEY, workers=args.workers)
        print(f"[{storage}] index of the earlier months: {before.files_listed} files in {before.seconds:.1f} s",
              flush=True)
        assert month_rows(before.table, month) == []

        if storage == "local":
            shutil.copytree(arrival, workdir / "zone", symlinks=True, dirs_exist_ok=True)
            arrived = len(regular_files(arrival))
        else:
            arrived = upload(zone, arrival)

        best_inc: Timing | None = None
        best_full: Timing | None = None
        for round_index in range(args.rounds):
            # Alternate which side goes first: page cache and load drift hit both sides alike.
            order = ("inc", "full") if round_index % 2 == 0 else ("full", "inc")
            for side in order:
                if side == "inc":
                    t = incremental(spec, before.table, month, scan, prep, args.workers)
                    best_inc = t if best_inc is None or t.seconds < best_inc.seconds else best_inc
                else:
                    t = full_rescan(spec, month, scan, prep, args.workers)
                    best_full = t if best_full is None or t.seconds < best_full.seconds else best_full
                print(f"[{storage}] round {round_index + 1} {side}: {t.seconds:.2f} s", flush=True)
        assert best_inc is not None and best_full is not None
        assert best_inc.images == best_full.images and best_inc.manifest_rows == best_full.manifest_rows, (
            best_inc, best_full)

        # A no-change update: the index already holds every file (listing and comparison only).
        after = update_index(spec, before.table, scan, key=KEY, workers=args.workers).table
        nochange = min((update_index(spec, after, scan, key=KEY, workers=args.workers)
                        for _ in range(args.rounds)), key=lambda u: u.seconds)
        assert nochange.files_read == 0, nochange
        # preprocess_month lists the zone itself (to map file references back to entries): an
        # archive-sized cost inside the month's preprocess, on both sides.
        relist = []
        for _ in range(args.rounds):
            relist_started = time.perf_counter()
            LandingZone(spec).list_files()
            relist.append(time.perf_counter() - relist_started)
        floor = request_floor(spec, arrival, after, month, args.rounds) if storage == "s3" else None
        inc = best_inc.parts
        return {
            "ours_s": round(best_inc.seconds, 3), "baseline_s": round(best_full.seconds, 3),
            "ratio": round(best_full.seconds / best_inc.seconds, 2),
            "files_in_archive": int(inc["files_listed"]), "files_arrived": arrived,
            "manifest_rows": best_inc.manifest_rows, "images": best_inc.images,
            "ours_parts_s": {k: round(v, 3) for k, v in inc.items() if k not in ("files_read", "files_listed")},
            "baseline_parts_s": {k: round(v, 3) for k, v in best_full.parts.items() if k != "files_listed"},
            "index_files_read": int(inc["files_read"]),
            "index_scan_s_per_file_read": round(inc["index_scan"] / max(inc["files_read"], 1), 5),
            "list_s_per_file_listed": round(inc["list"] / max(inc["files_listed"], 1), 6),
            "preprocess_zone_listing_s": round(min(relist), 3),
            "nochange_update_s": round(nochange.seconds, 3), "nochange_list_s": round(nochange.list_seconds, 3),
            "initial_index_s": round(before.seconds, 2),
            **({"request_floor_s": round(floor, 3), "ceiling_ratio": round(best_full.seconds / floor, 2)}
               if floor is not None else {}),
        }
    finally:
        if moto is not None:
            moto.terminate()
            moto.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--files-per-month", type=int, default=100)
    parser.add_argument("--image-size", type=int, default=64, help="matrix size of the files and of the output")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="worker processes on BOTH sides (0 = one per core)")
    parser.add_argument("--storage", default="local,s3", help="comma-separated: local, s3")
    args = parser.parse_args()
    storages = [s.strip() for s in args.storage.split(",") if s.strip()]
    if not storages or any(s not in ("local", "s3") for s in storages):
        parser.error(f"--storage takes local and/or s3, got {args.storage!r}")
    if args.months < 2:
        parser.error("--months must be >= 2 (earlier months plus the arriving one)")

    # Before any worker pool starts: the fork server keeps the environment it started with, so
    # credentials set later would never reach the S3 workers.
    if "s3" in storages:
        for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                            ("AWS_DEFAULT_REGION", "us-east-1")):
            os.environ.setdefault(name, value)
    months = months_from("2024-01", args.months)
    month = months[-1]
    scan = ScanOptions()
    prep = PreprocessOptions(image_size=args.image_size)
    load_before = os.getloadavg()
    started = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-lz-") as tmp:
        history, arrival = Path(tmp) / "history", Path(tmp) / "arrival"
        gen = time.perf_counter()
        generate_landing_zone(history, seed=0, files_per_month=args.files_per_month, months=months[:-1],
                              sizes=(args.image_size,))
        # The arriving month: the same plan over every month, less the files the earlier months
        # hold (the demo plan of a prefix of months is a prefix of the plan).
        generate_landing_zone(arrival, seed=0, files_per_month=args.files_per_month, months=months,
                              sizes=(args.image_size,))
        earlier = {p.relative_to(history) for p in regular_files(history)}
        for path in regular_files(arrival):
            if path.relative_to(arrival) in earlier:
                path.unlink()
        assert regular_files(arrival), "no file of the arriving month was generated"
        print(f"generated {len(regular_files(history))} + {len(regular_files(arrival))} files "
              f"({args.months} months) in {time.perf_counter() - gen:.1f} s", flush=True)
        for storage in storages:
            workdir = Path(tmp) / storage
            workdir.mkdir()
            results[storage] = bench_storage(storage, history, arrival, workdir, month, args, scan, prep)

    print()
    print(f"ingest month {month} of {args.months} ({args.files_per_month} files/month, workers="
          f"{resolve_workers(args.workers)}, best of {args.rounds}):")
    print(f"{'storage':8} {'incremental s':>14} {'full re-scan s':>15} {'ratio':>7} {'no-change s':>12}")
    for storage, r in results.items():
        print(f"{storage:8} {r['ours_s']:14.2f} {r['baseline_s']:15.2f} {r['ratio']:7.2f} {r['nochange_update_s']:12.3f}")
    for storage, r in results.items():
        print(f"{storage}: incremental = " + ", ".join(f"{k} {v:.3f}" for k, v in r["ours_parts_s"].items())
              + " s; full re-scan = " + ", ".join(f"{k} {v:.3f}" for k, v in r["baseline_parts_s"].items()) + " s")
        print(f"{storage}: index update read {r['index_files_read']} of {r['files_in_archive']} files, "
              f"{r['index_scan_s_per_file_read'] * 1e3:.2f} ms per file read, listing "
              f"{r['list_s_per_file_listed'] * 1e6:.1f} us per file listed; no-change update "
              f"{r['nochange_update_s']:.3f} s (listing {r['nochange_list_s']:.3f} s); preprocess_month's "
              f"own listing of the zone {r['preprocess_zone_listing_s']:.3f} s; "
              f"{r['manifest_rows']} manifest rows, {r['images']} images")
        if "request_floor_s" in r:
            print(f"{storage}: the month's requests alone (listing, a GET per arrived file, a GET per decoded file, "
                  f"{S3_READ_AHEAD_THREADS} in flight, no parsing) take {r['request_floor_s']:.3f} s: the best "
                  f"ratio any client reaches on this server is x{r['ceiling_ratio']:.2f}")
    first = results[storages[0]]
    print(json.dumps({
        "benchmark": "landing_zone", "ours": first["ours_s"], "baseline": first["baseline_s"], "unit": "s",
        "ratio": first["ratio"], "storage": storages[0],
        "ours_name": "update_index(previous) + month_rows + preprocess_month",
        "baseline_name": "full re-scan: scan_month (lists and header-reads the whole archive) + a second listing + preprocess_month",
        "target_ratio": TARGET_RATIO, "months": args.months, "files_per_month": args.files_per_month,
        "image_size": args.image_size, "workers": resolve_workers(args.workers), "rounds": args.rounds,
        "per_storage": results, "seconds": round(time.perf_counter() - started, 1),
        "loadavg_before": [round(x, 2) for x in load_before], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }))


if __name__ == "__main__":
    main()
