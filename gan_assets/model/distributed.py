"""Data-parallel GAN training over several processes with torch.distributed (DDP).

``train_distributed(images, config)`` starts ``config.num_workers`` processes, each running
:func:`gan_assets.model.train.train_gan` on its slice of every global batch with G and D
wrapped in ``DistributedDataParallel`` (gloo on CPU; NCCL on CUDA, one GPU per rank), and
returns rank 0's :class:`TrainResult`: the same contract as single-process training (one
state dict, the same fields), with the loss history averaged over ranks so that it is the
loss of the global batch.

Why ``torch.multiprocessing`` (spawn) and not ``torchrun``: the Dagster step stays the one
process in control. It starts the workers, relays rank 0's progress lines to ``context.log``
while they run, receives the result as a return value, and fails the step with the worker's
error (a DivergenceError stays a DivergenceError). Nothing else has to be deployed: the same
code runs in a run worker on a multi-GPU host (ECS task or k8s pod with N GPUs). ``torchrun``
fits training that spans several hosts; that would be launched under dagster-pipes on an
external cluster, and it is the next step beyond one host (docs/scaling.md).

Data and results cross process boundaries as files in a private temporary directory, never
as pickles of big arrays: the images as one ``.npy`` (workers memory-map it), the weights as
a safetensors file (no pickle), the rest as JSON. The
rendezvous is a file store in the same directory, so no TCP port has to be free.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import queue
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from gan_assets.model.config import ConfigError, TrainConfig
from gan_assets.model.device import resolve_device
from gan_assets.model.train import DivergenceError, TrainResult, images_to_tensor, train_gan

LOG = logging.getLogger(__name__)

# A collective that waits this long means a rank is gone; fail instead of hanging the run.
COLLECTIVE_TIMEOUT = timedelta(minutes=10)
# How often the launcher wakes up to relay worker log lines while it waits.
POLL_SECONDS = 0.2


class LoggerLike(Protocol):
    def info(self, msg: str, *args: Any) -> Any: ...


@dataclass
class RankOutput:
    """What one rank hands back: its TrainResult and digests of its final parameters."""

    result: TrainResult
    parameter_digests: dict[str, str]
    """sha256 over the bytes of every parameter of G and D: equal digests = identical weights."""


@dataclass(frozen=True)
class _Plan:
    world_size: int
    backend: str
    device_type: str
    workdir: str
    images_path: str
    config: dict[str, Any]
    collect: tuple[int, ...]
    threads_per_rank: int


class _QueueLog:
    """A logger for rank 0 that sends formatted lines to the launcher (small strings only)."""

    def __init__(self, sink: Any) -> None:
        self._sink = sink

    def _put(self, level: int, msg: str, args: tuple[Any, ...]) -> None:
        self._sink.put((level, msg % args if args else msg))

    def debug(self, msg: str, *args: Any) -> None:
        self._put(logging.DEBUG, msg, args)

    def info(self, msg: str, *args: Any) -> None:
        self._put(logging.INFO, msg, args)

    def warning(self, msg: str, *args: Any) -> None:
        self._put(logging.WARNING, msg, args)

    def error(self, msg: str, *args: Any) -> None:
        self._put(logging.ERROR, msg, args)


def plan_backend(config: TrainConfig) -> tuple[str, str]:
    """(backend, device type) for ``config``: NCCL with one GPU per rank, else gloo on CPU."""
    device = resolve_device(config.device, "gan_config.device")
    if device.type != "cuda":
        return "gloo", "cpu"
    if device.index is not None:
        raise ConfigError(
            f"gan_config.device={config.device!r} pins one GPU but num_workers={config.num_workers} "
            "needs one GPU per worker; use device='cuda' or 'auto'"
        )
    available = torch.cuda.device_count()
    if config.num_workers > available:
        raise ConfigError(
            f"gan_config.num_workers={config.num_workers} needs one GPU per worker but torch sees "
            f"{available}; lower num_workers or run on a host with more GPUs"
        )
    return "nccl", "cuda"


def train_distributed(
    images: np.ndarray, config: TrainConfig, *, logger: LoggerLike | None = None
) -> TrainResult:
    """Train on ``config.num_workers`` DDP processes; returns rank 0's result (global-batch losses)."""
    return run_data_parallel(images, config, logger=logger, collect=(0,))[0].result


def run_data_parallel(
    images: np.ndarray,
    config: TrainConfig,
    *,
    logger: LoggerLike | None = None,
    collect: Iterable[int] = (0,),
) -> dict[int, RankOutput]:
    """Run the DDP workers and return the outputs of the ranks in ``collect`` (tests ask for all)."""
    log = logger or LOG
    world_size = int(config.num_workers)
    if world_size < 2:
        raise ConfigError(f"gan_config.num_workers={world_size}: distributed training needs at least 2 workers")
    if config.batch_size % world_size:
        raise ConfigError(
            f"gan_config.batch_size={config.batch_size} must be divisible by num_workers={world_size} "
            "(each worker trains on an equal slice of every global batch)"
        )
    ranks = tuple(sorted(set(int(r) for r in collect)))
    if not ranks or ranks[0] < 0 or ranks[-1] >= world_size:
        raise ValueError(f"collect={ranks} must name ranks in [0, {world_size})")
    backend, device_type = plan_backend(config)
    # Bad images fail here, with train_gan's message, before any process starts.
    checked = images_to_tensor(images, config.image_size).squeeze(1).numpy()

    started = time.perf_counter()
    workdir = tempfile.mkdtemp(prefix="gan-ddp-")
    try:
        images_path = os.path.join(workdir, "images.npy")
        np.save(images_path, checked, allow_pickle=False)
        plan = _Plan(
            world_size=world_size, backend=backend, device_type=device_type, workdir=workdir,
            images_path=images_path, config=config.to_dict(), collect=ranks,
            # Share the cores the launcher may use instead of oversubscribing them N times.
            threads_per_rank=max(1, torch.get_num_threads() // world_size),
        )
        ctx = mp.get_context("spawn")
        log_queue = ctx.SimpleQueue()
        log.info(f"starting {world_size} {backend} workers for data-parallel training")
        processes = mp.start_processes(
            _worker, args=(plan, log_queue), nprocs=world_size, join=False, start_method="spawn"
        )
        try:
            while not processes.join(timeout=POLL_SECONDS):
                _relay(log_queue, log)
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as err:
            _relay(log_queue, log)
            _raise_worker_error(workdir, err)
        _relay(log_queue, log)
        outputs = {rank: _load_output(workdir, rank) for rank in ranks}
        launch = time.perf_counter() - started - outputs[ranks[0]].result.timings.get("total_seconds", 0.0)
        for output in outputs.values():
            output.result.timings["launch_seconds"] = max(0.0, launch)
            output.result.timings["workers"] = float(world_size)
        return outputs
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _relay(log_queue: Any, log: LoggerLike) -> None:
    while True:
        try:
            if log_queue.empty():
                return
            level, text = log_queue.get()
        except (EOFError, OSError, queue.Empty):
            return
        method = {logging.WARNING: "warning", logging.ERROR: "error", logging.DEBUG: "debug"}.get(level, "info")
        getattr(log, method, log.info)(f"[rank 0] {text}")


def _raise_worker_error(workdir: str, err: Exception) -> None:
    """Re-raise a worker's failure in the launcher, keeping DivergenceError's type and fields."""
    for path in sorted(Path(workdir).glob("error-rank*.json")):
        info = json.loads(path.read_text())
        if info.get("type") == "DivergenceError":
            raise DivergenceError(info["step"], info["loss_d"], info["loss_g"]) from err
    raise RuntimeError(f"distributed training failed in a worker process: {err}") from err


def _parameter_digest(module: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, param in module.named_parameters():
        digest.update(name.encode())
        digest.update(param.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()


def _worker(rank: int, plan: _Plan, log_queue: Any) -> None:
    """One rank: join the group, train its slice with G and D under DDP, write its output."""
    torch.set_num_threads(plan.threads_per_rank)
    if plan.device_type == "cuda":
        torch.cuda.set_device(rank)
        device = f"cuda:{rank}"
    else:
        device = "cpu"
    dist.init_process_group(
        plan.backend, init_method=f"file://{os.path.join(plan.workdir, 'rendezvous')}",
        rank=rank, world_size=plan.world_size, timeout=COLLECTIVE_TIMEOUT,
    )
    try:
        config = TrainConfig.from_dict(plan.config)
        # Copy-on-write map: pages are shared until touched, and the array is writable for torch.
        images = np.load(plan.images_path, mmap_mode="c", allow_pickle=False)
        wrapped: dict[str, nn.Module] = {}

        def wrap(module: nn.Module) -> nn.Module:
            # G is wrapped first, then D (train.GanTrainer's order); kept for the digests below.
            # broadcast_buffers=False: D runs forward twice (real, fake) before one backward, and
            # DDP's per-forward broadcast rewrites the batch-norm running statistics in place that
            # the CPU backward saved ("modified by an inplace operation"). Running statistics do not
            # enter training-mode outputs, so each rank keeps its own and rank 0's are stored.
            ddp = DistributedDataParallel(
                module, device_ids=[rank] if plan.device_type == "cuda" else None, broadcast_buffers=False,
            )
            wrapped["generator" if "generator" not in wrapped else "discriminator"] = ddp.module
            return ddp

        logger = _QueueLog(log_queue) if rank == 0 else logging.getLogger(f"{__name__}.rank{rank}")
        try:
            result = train_gan(images, config, logger=logger, rank=rank, world_size=plan.world_size,
                               wrap_model=wrap, device=device)
        except DivergenceError as err:
            # Every rank sees the same (all-reduced) weights, so they diverge together.
            _write_json(Path(plan.workdir) / f"error-rank{rank}.json",
                        {"type": "DivergenceError", "step": err.step, "loss_d": err.loss_d, "loss_g": err.loss_g})
            raise
        result = _global_losses(result, device)
        if rank in plan.collect:
            digests = {name: _parameter_digest(module) for name, module in wrapped.items()}
            _write_output(Path(plan.workdir), rank, RankOutput(result, digests))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _global_losses(result: TrainResult, device: str) -> TrainResult:
    """Each rank logged the loss of its slice; the mean over ranks is the global-batch loss."""
    history = result.loss_history
    values = torch.tensor(
        [*history["loss_d"], *history["loss_g"], result.final_loss_d, result.final_loss_g],
        dtype=torch.float64, device=device,
    )
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    values = (values / dist.get_world_size()).cpu().tolist()
    n = len(history["loss_d"])
    return dataclasses.replace(
        result,
        loss_history={"step": list(history["step"]), "loss_d": values[:n], "loss_g": values[n:2 * n]},
        final_loss_d=values[2 * n],
        final_loss_g=values[2 * n + 1],
    )


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, sort_keys=True))
    tmp.replace(path)


def _write_output(workdir: Path, rank: int, output: RankOutput) -> None:
    fields = {f.name: getattr(output.result, f.name) for f in dataclasses.fields(output.result)}
    state = fields.pop("generator_state")
    from safetensors.torch import save_file

    save_file({name: tensor.detach().cpu().contiguous().clone() for name, tensor in state.items()},
              str(workdir / f"rank{rank}.safetensors"))
    _write_json(workdir / f"rank{rank}.json", {"result": fields, "parameter_digests": output.parameter_digests})


def _load_output(workdir: str, rank: int) -> RankOutput:
    base = Path(workdir)
    meta = json.loads((base / f"rank{rank}.json").read_text())
    from safetensors.torch import load_file

    state = load_file(str(base / f"rank{rank}.safetensors"), device="cpu")
    return RankOutput(result=TrainResult(generator_state=state, **meta["result"]),
                      parameter_digests=meta["parameter_digests"])
