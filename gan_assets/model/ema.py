"""Exponential moving average of the generator's weights (the copy evaluation and generation use)."""

from __future__ import annotations

import copy

import torch
from torch import nn

# Decay ramps up as min(decay, (1 + n) / (10 + n)) over the first updates, so that a short run's
# average is not dominated by the random initial weights (0.999 ** 300 still weighs them 74%).
WARMUP_OFFSET = 10


class ModelEMA:
    """A frozen copy of ``model`` whose parameters follow ``ema = lerp(ema, param, 1 - decay)``.

    Buffers (batch-norm running statistics) are not averaged; they are copied from the live model
    when the state is read, as in the usual GAN EMA (StyleGAN, BigGAN).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.updates = 0
        self.source = model
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self._ema_params = list(self.module.parameters())
        self._src_params = list(model.parameters())

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (WARMUP_OFFSET + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """One EMA step (a couple of multi-tensor kernels, no host sync)."""
        weight = 1.0 - self.current_decay()
        self.updates += 1
        torch._foreach_lerp_(self._ema_params, self._src_params, weight)

    @torch.no_grad()
    def sync_buffers(self) -> None:
        for ema_buffer, buffer in zip(self.module.buffers(), self.source.buffers(), strict=True):
            ema_buffer.copy_(buffer)

    def state_dict_cpu(self) -> dict[str, torch.Tensor]:
        self.sync_buffers()
        return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in self.module.state_dict().items()}
