"""One month of images on S3: one packed .npz object (ours) vs one PNG object per image (seed).

Both run against the same moto S3 server (ThreadedMotoServer on 127.0.0.1, a free port),
started by this script, over real HTTP through boto3. Each repetition writes the month and
reads it back (encode + upload, download + decode); repetitions alternate which layout goes
first and the medians are reported.

    ours      ArrayBundle {"images": uint8 [N,64,64], "ids": str [N]} -> one .npz through
              gan_assets.storage.ObjectStore over s3fs (the IO manager's store)
    baseline  the seed's layout: N separate PNG objects, one put_object / get_object each
              (sequential, as the seed wrote them); a thread-pooled variant is reported too

Run: .venv/bin/python benchmarks/bench_storage.py [--images 1000] [--size 64] [--repeats 3]
The last line of output is the JSON summary (ratio = baseline_seconds / ours_seconds).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import socket
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import numpy as np
from PIL import Image

from gan_assets.storage import ArrayBundle, ObjectStore, S3Settings, decode, encode, store_from_uri
from gan_assets.storage.images import encoding_attrs

PARTITION = "2026-03-01"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def phantom_month(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """CT-like uint8 phantoms (a body ellipse with a few organs, mild noise) and their ids."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1:1:complex(size), -1:1:complex(size)].astype(np.float32)
    images = np.zeros((n, size, size), dtype=np.float32)
    for i in range(n):
        image = np.where((xx / 0.85) ** 2 + (yy / 0.7) ** 2 <= 1, 0.35, 0.0).astype(np.float32)
        for _ in range(int(rng.integers(2, 6))):
            cx, cy = rng.uniform(-0.5, 0.5, 2)
            ax, ay = rng.uniform(0.05, 0.3, 2)
            image[((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1] = rng.uniform(0.1, 1.0)
        images[i] = image
    images += rng.normal(0, 0.02, images.shape).astype(np.float32)
    packed = np.clip(np.rint(images * 255), 0, 255).astype(np.uint8)
    ids = np.array([f"{PARTITION}-{i:05d}" for i in range(n)], dtype=np.str_)
    return packed, ids


def ours_write(store: ObjectStore, images: np.ndarray, ids: np.ndarray) -> None:
    bundle = ArrayBundle(arrays={"images": images, "ids": ids}, attrs={**encoding_attrs(), "partition": PARTITION})
    ext, data = encode(bundle)
    store.put(f"preprocessed_images/{PARTITION}.{ext}", data)


def ours_read(store: ObjectStore) -> tuple[np.ndarray, np.ndarray]:
    key = f"preprocessed_images/{PARTITION}.npz"
    bundle = decode("npz", store.get(key), where=store.uri(key))
    return bundle["images"], bundle["ids"]


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _key(bucket_prefix: str, image_id: str) -> str:
    return f"{bucket_prefix}/preprocessed_images/{PARTITION}/{image_id}.png"


def baseline_write(client: Any, bucket: str, images: np.ndarray, ids: np.ndarray, threads: int = 1) -> None:
    def put(i: int) -> None:
        client.put_object(Bucket=bucket, Key=_key("seed", str(ids[i])), Body=_png(images[i]))

    _run(put, len(ids), threads)


def baseline_read(client: Any, bucket: str, ids: np.ndarray, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    out: list[np.ndarray | None] = [None] * len(ids)

    def get(i: int) -> None:
        body = client.get_object(Bucket=bucket, Key=_key("seed", str(ids[i])))["Body"].read()
        out[i] = np.asarray(Image.open(io.BytesIO(body)))

    _run(get, len(ids), threads)
    return np.stack(out), ids  # the seed listed ids from the keys; we already know them


def _run(task: Callable[[int], None], n: int, threads: int) -> None:
    if threads == 1:
        for i in range(n):
            task(i)
        return
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(task, range(n)))


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8, help="workers of the thread-pooled baseline (0: skip it)")
    args = parser.parse_args()

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket="bench")
        store = store_from_uri("s3://bench/ours", S3Settings(endpoint_url=endpoint, region_name="us-east-1"))
        images, ids = phantom_month(args.images, args.size)

        results: dict[str, dict[str, list[float]]] = {
            name: {"write": [], "read": []} for name in ("ours", "baseline", "baseline_threaded")
        }

        def run_ours() -> None:
            t_write, _ = timed(lambda: ours_write(store, images, ids))
            t_read, (back, back_ids) = timed(lambda: ours_read(store))
            assert np.array_equal(back, images) and np.array_equal(back_ids, ids)
            results["ours"]["write"].append(t_write)
            results["ours"]["read"].append(t_read)

        def run_baseline(threads: int, name: str) -> None:
            t_write, _ = timed(lambda: baseline_write(client, "bench", images, ids, threads))
            t_read, (back, _) = timed(lambda: baseline_read(client, "bench", ids, threads))
            assert np.array_equal(back, images)
            results[name]["write"].append(t_write)
            results[name]["read"].append(t_read)

        for repeat in range(args.repeats):
            order = [run_ours, lambda: run_baseline(1, "baseline")]
            if args.threads > 0:
                order.append(lambda: run_baseline(args.threads, "baseline_threaded"))
            if repeat % 2:
                order.reverse()  # interleave: neither layout always runs on a warmer server
            for run in order:
                run()

        packed_bytes = len(store.get(f"preprocessed_images/{PARTITION}.npz"))
        png_bytes = sum(len(_png(image)) for image in images)
    finally:
        server.stop()

    medians = {
        name: {phase: statistics.median(times) for phase, times in phases.items()}
        for name, phases in results.items()
        if phases["write"]
    }
    totals = {name: m["write"] + m["read"] for name, m in medians.items()}
    print(f"{args.images} images of {args.size}x{args.size}, moto S3 on {endpoint}, {args.repeats} repeats (medians)")
    for name, m in medians.items():
        print(f"  {name:18s} write {m['write']:7.3f} s   read {m['read']:7.3f} s   total {totals[name]:7.3f} s")
    print(f"  stored bytes: one .npz {packed_bytes:,}; {args.images} PNGs {png_bytes:,}")
    print(f"  speed-up vs sequential per-image PNG: {totals['baseline'] / totals['ours']:.1f}x")
    extra: dict[str, Any] = {}
    if "baseline_threaded" in totals:
        print(f"  speed-up vs {args.threads}-thread per-image PNG: {totals['baseline_threaded'] / totals['ours']:.1f}x")
        extra = {
            "baseline_threaded": round(totals["baseline_threaded"], 4),
            "ratio_vs_threaded": round(totals["baseline_threaded"] / totals["ours"], 2),
        }
    print(json.dumps({
        "benchmark": "storage_month_write_read_s3",
        "ours": round(totals["ours"], 4),
        "baseline": round(totals["baseline"], 4),
        "unit": "seconds",
        "ratio": round(totals["baseline"] / totals["ours"], 2),
        "baseline_name": "seed layout: one PNG object per image, sequential put_object/get_object",
        **extra,
        "ours_write": round(medians["ours"]["write"], 4),
        "ours_read": round(medians["ours"]["read"], 4),
        "baseline_write": round(medians["baseline"]["write"], 4),
        "baseline_read": round(medians["baseline"]["read"], 4),
        "images": args.images,
        "image_size": args.size,
        "repeats": args.repeats,
        "stored_bytes_ours": packed_bytes,
        "stored_bytes_baseline": png_bytes,
    }))


if __name__ == "__main__":
    main()
