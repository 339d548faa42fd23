"""Training throughput behind docs/scaling.md: one GPU per image size, and DDP workers on CPU.

    python deploy/measure_scaling.py [--steps 60] [--cpu-workers 1,2,4] [--sizes 64,128,256]

Needs only torch and numpy (gan_assets.model, no Dagster), so it runs on a bare GPU host.
Prints one line per measurement and ends with one JSON line of all of them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

import numpy as np
import torch

from gan_assets.model.config import ConfigError, TrainConfig
from gan_assets.model.distributed import train_distributed
from gan_assets.model.train import train_gan

QUIET = logging.getLogger("measure_scaling.quiet")
QUIET.setLevel(logging.WARNING)


def _images(n: int, size: int) -> np.ndarray:
    return np.tanh(np.random.default_rng(0).standard_normal((n, size, size))).astype(np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--sizes", default="64,128,256")
    parser.add_argument("--cpu-workers", default="1,2,4")
    parser.add_argument("--cpu-size", type=int, default=64)
    args = parser.parse_args()
    out: dict[str, float | str] = {"torch": torch.__version__, "cpus": float(torch.get_num_threads())}
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
        for size in (int(s) for s in args.sizes.split(",")):
            config = TrainConfig(image_size=size, batch_size=64, steps=args.steps, log_every=10**6, device="cuda")
            result = train_gan(_images(1024, size), config, logger=QUIET)
            out[f"gpu_img_per_s_{size}"] = round(result.images_per_second, 1)
            print(f"GPU {size}px batch 64: {result.images_per_second:.0f} img/s "
                  f"(setup {result.timings['setup_seconds']:.1f}s)", flush=True)
        try:  # one GPU: asking for two GPU workers must fail with a clear message
            train_distributed(_images(64, 64), TrainConfig(num_workers=2, device="cuda", steps=1))
            out["gpu_two_workers_error"] = "none"
        except ConfigError as err:
            out["gpu_two_workers_error"] = str(err)
    size = args.cpu_size
    for workers in (int(w) for w in args.cpu_workers.split(",")):
        config = TrainConfig(image_size=size, batch_size=64, steps=max(8, args.steps // 4), log_every=10**6,
                             device="cpu", num_workers=workers)
        started = time.perf_counter()
        if workers == 1:
            result = train_gan(_images(512, size), config, logger=QUIET)
        else:
            result = train_distributed(_images(512, size), config, logger=QUIET)
        wall = time.perf_counter() - started
        out[f"cpu_img_per_s_{size}_w{workers}"] = round(result.images_per_second, 1)
        out[f"cpu_wall_s_{size}_w{workers}"] = round(wall, 1)
        print(f"CPU {size}px batch 64, {workers} worker(s): {result.images_per_second:.0f} img/s, "
              f"wall {wall:.1f}s for {config.steps} steps", flush=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
