"""GAN training core: one lean DCGAN step, a step-budgeted loop, divergence checks, progress logs.

Plain PyTorch, no Dagster. ``train_gan`` is the entry point the asset (and the distributed
launcher) call; ``GanTrainer`` is the step machine underneath, also used by the benchmarks.

Compared with pytorch/examples' DCGAN loop the step does the same alternating updates
(D on real + detached fake, then G through the updated D) with less work:
- D's logits go straight into a fused loss (softplus form of BCE-with-logits, or hinge): no
  Sigmoid + BCELoss pair, no label tensors;
- D's real half is back-propagated before G runs, so its activations are freed early;
- during G's step D's weights do not require gradients, so D's backward computes only the
  input gradients G needs (the reference also computes D's weight gradients, then discards them);
- Adam runs its fused multi-tensor kernel; gradients are dropped with ``set_to_none``;
- with spectral norm (D has no batch norm) real and fake share one D forward;
- on CUDA: bf16 autocast, channels_last, cuDNN autotuning, and the whole step (both
  updates) captured once in a CUDA graph and replayed, which removes per-kernel launch cost.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gan_assets.model.augment import DiffAugment
from gan_assets.model.config import TrainConfig
from gan_assets.model.dcgan import build_discriminator, build_generator, parameter_count
from gan_assets.model.device import resolve_device
from gan_assets.model.ema import ModelEMA

LOG = logging.getLogger(__name__)

# Loss history keeps at most this many points (windows of k steps are averaged beyond it).
MAX_HISTORY_POINTS = 2000
# On CUDA the losses are checked for NaN/inf every this many steps (a host sync); on CPU every step.
CUDA_CHECK_EVERY = 16
# Eager steps run before the CUDA graph is captured (cuDNN autotuning, compile, allocator warm-up).
CUDA_GRAPH_WARMUP_STEPS = 3


class DivergenceError(RuntimeError):
    """A loss became NaN or infinite; the message names the step and the losses."""

    def __init__(self, step: int, loss_d: float, loss_g: float, hint: str = "") -> None:
        self.step, self.loss_d, self.loss_g = step, loss_d, loss_g
        super().__init__(
            f"training diverged at step {step}: loss_d={loss_d!r}, loss_g={loss_g!r}; "
            + (hint or "lower lr_g / lr_d, try loss='hinge' with spectral_norm=True, or check the input images")
        )


@dataclass
class TrainResult:
    generator_state: dict[str, torch.Tensor]
    """EMA (or plain, with ema=False) generator state dict, on CPU."""
    loss_history: dict[str, list[float]]
    """{"step": [...], "loss_d": [...], "loss_g": [...]}: every step, or k-step means for long runs."""
    steps: int
    images_seen: int
    wall_seconds: float
    images_per_second: float
    device: str
    final_loss_d: float
    final_loss_g: float
    parameter_counts: dict[str, int]
    timings: dict[str, float] = field(default_factory=dict)
    """setup_seconds, train_seconds (loop incl. warm-up/capture), total_seconds."""


@dataclass(frozen=True)
class StepOptions:
    """How the step executes (not what it computes); defaults follow the device (see ``for_device``)."""

    channels_last: bool = False
    autocast_dtype: torch.dtype | None = None
    cuda_graph: bool = False
    compile: bool = False
    fused_adam: bool = True

    @classmethod
    def for_device(cls, device: torch.device, *, distributed: bool = False) -> "StepOptions":
        if device.type == "cuda":
            # bf16 + channels_last + graph replay was the fastest measured (benchmarks/gpu_check.py,
            # figures in docs/scaling.md): eager steps are launch-bound at these sizes, and
            # torch.compile on top was no faster (at 128 px it must drop channels_last to avoid an
            # Inductor stride assert), so it stays off.
            # Graph capture of a DDP-wrapped step is fragile (bucket hooks, NCCL on side streams):
            # distributed runs stay eager.
            return cls(channels_last=True, autocast_dtype=torch.bfloat16, cuda_graph=not distributed,
                       compile=False)
        # CPU (fp32): channels_last measured faster than NCHW (oneDNN's channels-last kernels skip
        # the reorders its NCHW backward does; benchmarks/bench_train.py --variants).
        return cls(channels_last=True)


def derive_seed(seed: int, *labels: object) -> int:
    """A 63-bit seed for one random stream (noise, augmentation, batches) of one rank."""
    digest = hashlib.sha256(repr((int(seed), *labels)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def batch_schedule(n_images: int, batch_size: int, steps: int, seed: int) -> torch.Tensor:
    """Indices of every global batch (steps x batch_size): shuffled epochs, concatenated.

    Every rank computes the same schedule from the shared seed and takes its own slice.
    """
    if n_images < 1:
        raise ValueError("no training images: the training window holds 0 images")
    generator = torch.Generator().manual_seed(derive_seed(seed, "batches"))
    total = steps * batch_size
    epochs = math.ceil(total / n_images)
    order = torch.cat([torch.randperm(n_images, generator=generator) for _ in range(epochs)])
    return order[:total].view(steps, batch_size)


def images_to_tensor(images: np.ndarray, image_size: int) -> torch.Tensor:
    """Validate float images N x H x W in [-1, 1] and return them as a float32 N x 1 x H x W tensor."""
    array = np.asarray(images)
    if array.ndim != 3 or array.shape[1:] != (image_size, image_size):
        raise ValueError(
            f"training images must be N x {image_size} x {image_size} (gan_config.image_size={image_size}), "
            f"got shape {array.shape}; re-run preprocessing at this size or change image_size"
        )
    if len(array) == 0:
        raise ValueError("no training images: the training window holds 0 images")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"training images must be floats in [-1, 1], got dtype {array.dtype}; unpack uint8 with unpack_images")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise ValueError("training images contain NaN or inf values; re-run preprocessing")
    low, high = float(array.min()), float(array.max())
    if low < -1.0 - 1e-3 or high > 1.0 + 1e-3:
        raise ValueError(f"training images must lie in [-1, 1], got range [{low:.3g}, {high:.3g}]")
    return torch.from_numpy(np.ascontiguousarray(array)).unsqueeze(1)


def _adam(params: list[nn.Parameter], lr: float, config: TrainConfig, fused: bool, capturable: bool) -> torch.optim.Adam:
    betas = (config.beta1, config.beta2)
    if fused:
        try:
            return torch.optim.Adam(params, lr=lr, betas=betas, fused=True, capturable=capturable)
        except (RuntimeError, ValueError):  # a device without the fused kernel: use foreach
            pass
    return torch.optim.Adam(params, lr=lr, betas=betas, foreach=True, capturable=capturable)


class GanTrainer:
    """Models, optimisers and the training step for one rank.

    ``wrap_model`` (e.g. DistributedDataParallel) receives G and D after they are on the device.
    """

    def __init__(
        self,
        config: TrainConfig,
        device: torch.device | str,
        *,
        rank: int = 0,
        world_size: int = 1,
        wrap_model: Callable[[nn.Module], nn.Module] | None = None,
        options: StepOptions | None = None,
    ) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} and world_size={world_size} are inconsistent")
        if config.batch_size % world_size:
            raise ValueError(
                f"gan_config.batch_size={config.batch_size} must be divisible by the {world_size} workers"
            )
        self.config, self.rank, self.world_size = config, rank, world_size
        self.device = torch.device(device)
        self.local_batch = config.batch_size // world_size
        self.options = options or StepOptions.for_device(self.device, distributed=wrap_model is not None or world_size > 1)
        if self.options.cuda_graph and self.device.type != "cuda":
            raise ValueError("cuda_graph needs a CUDA device")
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: autotune the conv algorithms once

        # Same weights on every rank, without disturbing the caller's global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(config.seed, "weights"))
            generator = build_generator(config)
            discriminator = build_discriminator(config)
        memory_format = torch.channels_last if self.options.channels_last else torch.contiguous_format
        self.generator = self._for_step(generator, memory_format)
        self.discriminator = self._for_step(discriminator, memory_format)
        self.ema = ModelEMA(self.generator, config.ema_decay) if config.ema else None
        self.parameter_counts = {"generator": parameter_count(generator), "discriminator": parameter_count(discriminator)}

        self.G: nn.Module = wrap_model(self.generator) if wrap_model else self.generator
        self.D: nn.Module = wrap_model(self.discriminator) if wrap_model else self.discriminator
        self._d_params = [p for p in self.discriminator.parameters()]
        capturable = self.options.cuda_graph
        self.opt_g = _adam(list(self.G.parameters()), config.lr_g, config, self.options.fused_adam, capturable)
        self.opt_d = _adam(list(self.D.parameters()), config.lr_d, config, self.options.fused_adam, capturable)
        if self.options.compile:
            self.G = torch.compile(self.G)
            self.D = torch.compile(self.D)

        # Random streams: per rank, from the seed. Captured graphs can only use the device's
        # default generator, so that one is seeded instead when graphs are on.
        if self.options.cuda_graph:
            torch.cuda.manual_seed(derive_seed(config.seed, "cuda-default", rank))
            self.rng: torch.Generator | None = None
        else:
            self.rng = torch.Generator(self.device).manual_seed(derive_seed(config.seed, "noise+augment", rank))
        self.augment = DiffAugment(config.augment_policies, self.rng)
        # Without batch norm in D, one forward over real+fake computes exactly the two forwards.
        self._joint_d_forward = not any(isinstance(m, nn.BatchNorm2d) for m in self.discriminator.modules())
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static_real: torch.Tensor | None = None
        self._static_losses: torch.Tensor | None = None
        self.steps_done = 0

    def _for_step(self, network: nn.Module, memory_format: torch.memory_format) -> nn.Module:
        """``network`` on the step's device and layout."""
        return network.to(self.device, memory_format=memory_format)

    def _autocast(self) -> contextlib.AbstractContextManager[None]:
        if self.options.autocast_dtype is None:
            return contextlib.nullcontext()
        # cache_enabled=False: cached casts must not outlive a CUDA graph capture.
        return torch.autocast(self.device.type, dtype=self.options.autocast_dtype, cache_enabled=False)

    def _d_loss_real(self, d_real: torch.Tensor) -> torch.Tensor:
        if self.config.loss == "hinge":
            return F.relu(1.0 - d_real).mean()
        return F.softplus(-d_real).mean()  # BCE-with-logits against label 1, as one fused op

    def _d_loss_fake(self, d_fake: torch.Tensor) -> torch.Tensor:
        if self.config.loss == "hinge":
            return F.relu(1.0 + d_fake).mean()
        return F.softplus(d_fake).mean()  # BCE-with-logits against label 0

    def _g_loss(self, d_fake: torch.Tensor) -> torch.Tensor:
        if self.config.loss == "hinge":
            return -d_fake.mean()
        return F.softplus(-d_fake).mean()  # non-saturating loss, as the reference (label = real)

    def _no_sync(self, module: nn.Module) -> contextlib.AbstractContextManager[None]:
        # G's loss backward must not all-reduce D's (absent) gradients under DDP.
        no_sync = getattr(module, "no_sync", None)
        return no_sync() if callable(no_sync) else contextlib.nullcontext()

    def _step_body(self, real: torch.Tensor) -> torch.Tensor:
        """One alternating update of D then G; returns the detached losses [loss_d, loss_g]."""
        noise = torch.randn(real.shape[0], self.config.latent_dim, 1, 1, device=self.device, generator=self.rng)
        augment = self.augment
        self.opt_d.zero_grad(set_to_none=True)
        if self._joint_d_forward:
            with self._autocast():
                fake = self.G(noise)
                both = torch.cat([real.to(fake.dtype), fake.detach()])
                d_real, d_fake = self.D(augment(both) if augment else both).float().chunk(2)
            loss_d = self._d_loss_real(d_real) + self._d_loss_fake(d_fake)
            loss_d.backward()
        else:
            # The real half is back-propagated before G and the fake half run (the reference's
            # order): its activations are freed first, which lowers peak memory by one D graph
            # at no extra compute. Under DDP the gradients are all-reduced once, after the fake half.
            with self._no_sync(self.D):
                with self._autocast():
                    d_real = self.D(augment(real) if augment else real).float()
                loss_real = self._d_loss_real(d_real)
                loss_real.backward()
            with self._autocast():
                fake = self.G(noise)
                detached = fake.detach()
                d_fake = self.D(augment(detached) if augment else detached).float()
            loss_fake = self._d_loss_fake(d_fake)
            loss_fake.backward()
            loss_d = loss_real.detach() + loss_fake.detach()
        self.opt_d.step()

        for p in self._d_params:
            p.requires_grad_(False)
        try:
            with self._no_sync(self.D):
                with self._autocast():
                    d_fake_for_g = self.D(augment(fake) if augment else fake).float()
                loss_g = self._g_loss(d_fake_for_g)
                self.opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
        finally:
            for p in self._d_params:
                p.requires_grad_(True)
        self.opt_g.step()
        return torch.stack([loss_d.detach(), loss_g.detach()])

    def train_step(self, real: torch.Tensor) -> torch.Tensor:
        """One step on a local batch (local_batch x 1 x H x W on the device); returns [loss_d, loss_g]."""
        if self.options.cuda_graph:
            losses = self._graph_step(real)
        else:
            losses = self._step_body(real)
        if self.ema is not None:
            self.ema.update()
        self.steps_done += 1
        return losses

    def _graph_step(self, real: torch.Tensor) -> torch.Tensor:
        if self._graph is None and self.steps_done < CUDA_GRAPH_WARMUP_STEPS:
            # Warm-up steps are real training steps, run eagerly on a side stream (as capture requires).
            stream = torch.cuda.Stream(self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream):
                losses = self._step_body(real)
            torch.cuda.current_stream(self.device).wait_stream(stream)
            return losses
        if self._graph is None:
            self._static_real = real.clone()
            torch.cuda.synchronize(self.device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._static_losses = self._step_body(self._static_real)
            self._graph = graph
        elif real is not self._static_real:
            assert self._static_real is not None
            self._static_real.copy_(real)
        self._graph.replay()
        assert self._static_losses is not None
        return self._static_losses

    def generator_state(self) -> dict[str, torch.Tensor]:
        """The weights to store: the EMA copy, or G itself when ema=False (CPU tensors)."""
        if self.ema is not None:
            return self.ema.state_dict_cpu()
        return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in self.generator.state_dict().items()}

    def fit(
        self,
        data: torch.Tensor,
        schedule: torch.Tensor,
        *,
        logger: logging.Logger | None = None,
        log_every: int | None = None,
    ) -> "FitStats":
        """Train over ``schedule`` (steps x local_batch indices into ``data``, N x 1 x H x W)."""
        log = logger or LOG
        steps = int(schedule.shape[0])
        log_every = max(1, log_every or self.config.log_every)
        data = data.to(self.device, non_blocking=True)
        schedule = schedule.to(self.device, non_blocking=True)
        check_every = 1 if self.device.type == "cpu" else CUDA_CHECK_EVERY
        history = torch.zeros(steps, 2, device=self.device)
        real = torch.empty(self.local_batch, *data.shape[1:], device=self.device, dtype=data.dtype)
        checked = 0
        start = time.perf_counter()
        for step in range(steps):
            # After capture the batch is gathered straight into the graph's input buffer.
            target = self._static_real if self._static_real is not None else real
            torch.index_select(data, 0, schedule[step], out=target)
            real = target
            history[step] = self.train_step(real)
            last = step + 1 == steps
            if (step + 1) % check_every == 0 or (step + 1) % log_every == 0 or last:
                self._check_finite(history, checked, step + 1)
                checked = step + 1
            if (step + 1) % log_every == 0 or last:
                elapsed = time.perf_counter() - start
                rate = (step + 1) * self.config.batch_size / max(elapsed, 1e-9)
                eta = (steps - step - 1) * elapsed / (step + 1)
                loss_d, loss_g = history[step].tolist()
                if self.rank == 0:
                    log.info(
                        "step %d/%d (%.0f%%) loss_d=%.4f loss_g=%.4f %.1f img/s ETA %.1fs",
                        step + 1, steps, 100.0 * (step + 1) / steps, loss_d, loss_g, rate, eta,
                    )
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - start
        return FitStats(history=history.cpu(), seconds=seconds)

    def _check_finite(self, history: torch.Tensor, begin: int, end: int) -> None:
        window = history[begin:end]
        finite = torch.isfinite(window).all(dim=1)
        if bool(finite.all()):
            return
        first = int((~finite).nonzero()[0, 0])
        loss_d, loss_g = window[first].tolist()
        raise DivergenceError(begin + first + 1, loss_d, loss_g)


@dataclass
class FitStats:
    history: torch.Tensor  # steps x 2 (loss_d, loss_g), CPU
    seconds: float


def compact_history(history: torch.Tensor, max_points: int = MAX_HISTORY_POINTS) -> dict[str, list[float]]:
    """Per-step losses, or means over windows of k steps when there are more than max_points steps."""
    steps = int(history.shape[0])
    k = max(1, math.ceil(steps / max_points))
    step_numbers: list[float] = []
    loss_d: list[float] = []
    loss_g: list[float] = []
    for begin in range(0, steps, k):
        window = history[begin:begin + k].double()
        step_numbers.append(min(begin + k, steps))
        loss_d.append(float(window[:, 0].mean()))
        loss_g.append(float(window[:, 1].mean()))
    return {"step": step_numbers, "loss_d": loss_d, "loss_g": loss_g}


def train_gan(
    images: np.ndarray,
    config: TrainConfig,
    *,
    logger: logging.Logger | None = None,
    rank: int = 0,
    world_size: int = 1,
    wrap_model: Callable[[nn.Module], nn.Module] | None = None,
    device: str | None = None,
) -> TrainResult:
    """Train a DCGAN on ``images`` (float32 N x H x W in [-1, 1]) for ``config.steps`` steps.

    With ``world_size > 1`` every rank draws the same global batches from the shared seed and
    trains on its slice (``batch_size // world_size`` images); ``wrap_model`` (e.g. DDP) wraps G
    and D. Raises DivergenceError when a loss becomes NaN or infinite.
    """
    log = logger or LOG
    t0 = time.perf_counter()
    torch_device = resolve_device(device or config.device, "gan_config.device")
    data = images_to_tensor(images, config.image_size)
    trainer = GanTrainer(config, torch_device, rank=rank, world_size=world_size, wrap_model=wrap_model)
    schedule = batch_schedule(len(data), config.batch_size, config.steps, config.seed)
    local = schedule[:, rank * trainer.local_batch:(rank + 1) * trainer.local_batch]
    if rank == 0:
        log.info(
            "training %d steps on %d images (%dx%d) on %s, batch %d x %d worker(s), options %s",
            config.steps, len(data), config.image_size, config.image_size, torch_device,
            trainer.local_batch, world_size, trainer.options,
        )
    setup_seconds = time.perf_counter() - t0
    stats = trainer.fit(data, local, logger=log, log_every=config.log_every)
    state = trainer.generator_state()
    total = time.perf_counter() - t0
    images_seen = config.steps * config.batch_size
    final_d, final_g = (float(v) for v in stats.history[-1])
    return TrainResult(
        generator_state=state,
        loss_history=compact_history(stats.history),
        steps=config.steps,
        images_seen=images_seen,
        wall_seconds=total,
        images_per_second=images_seen / max(stats.seconds, 1e-9),
        device=str(torch_device),
        final_loss_d=final_d,
        final_loss_g=final_g,
        parameter_counts=dict(trainer.parameter_counts),
        timings={"setup_seconds": setup_seconds, "train_seconds": stats.seconds, "total_seconds": total},
    )
