"""DCGAN generator and discriminator for one-channel images of side 32, 64, 128 or 256.

Follows pytorch/examples' dcgan/main.py: N(0, 0.02) conv init, N(1, 0.02) batch-norm init,
transposed convolutions 4x4 stride 2, LeakyReLU(0.2) in D. One up/down block per doubling;
feature widths double towards 4 x 4 and are capped at 8x the base width (as the reference has
at 64 x 64). D returns logits: the sigmoid is fused into the loss (BCE-with-logits or hinge).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gan_assets.model.config import TrainConfig

CHANNELS = 1
MAX_WIDTH_MULTIPLIER = 8


def _depth(image_size: int) -> int:
    """Number of stride-2 blocks between 4 x 4 and image_size x image_size."""
    depth = int(math.log2(image_size)) - 2
    if 2 ** (depth + 2) != image_size or depth < 1:
        raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
    return depth


def _multiplier(level: int) -> int:
    """Width multiplier of the feature map ``level`` doublings above 4 x 4 (level 0 = 4 x 4)."""
    return min(2 ** level, MAX_WIDTH_MULTIPLIER)


def _is_4x4(module: nn.Conv2d | nn.ConvTranspose2d, stride: int, padding: int) -> bool:
    return (module.kernel_size == (4, 4) and module.stride == (stride, stride) and module.padding == (padding, padding)
            and module.dilation == (1, 1) and module.groups == 1 and module.bias is None)


def _cpu_autograd(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """A CPU forward that autograd records (the custom backward passes below matter only then)."""
    return x.device.type == "cpu" and x.dim() == 4 and torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)


class _OneChannelDown(torch.autograd.Function):
    """D's first layer, 1 -> C channels, 4 x 4 stride 2: oneDNN forward, matrix-product backward.

    oneDNN's backward kernels for a one-channel input run at a few GFLOP/s on CPU; the weight
    gradient (C x 16, summed over every output pixel) and the input gradient (col2im of
    W^T @ grad) are small batched matrix products instead: 2-3x faster. Only the gradients
    autograd asks for are computed (D's real and detached-fake passes need only the weight's,
    G's step only the input's).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, stride=2, padding=1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        n, out_ch = grad.shape[:2]
        grad = grad.reshape(n, out_ch, -1)  # N x C x L
        grad_x = grad_w = None
        if ctx.needs_input_grad[1]:
            columns = F.unfold(x, 4, padding=1, stride=2)  # N x 16 x L
            grad_w = torch.bmm(grad, columns.transpose(1, 2)).sum(0).view_as(weight)
        if ctx.needs_input_grad[0]:
            columns = torch.matmul(weight.reshape(out_ch, -1).t(), grad)  # N x 16 x L
            grad_x = F.fold(columns, x.shape[-2:], 4, padding=1, stride=2)
        return grad_x, grad_w


class _OneChannelUp(torch.autograd.Function):
    """G's last layer, C -> 1 channel, transposed 4 x 4 stride 2, as matrix products and col2im.

    Forward: the 16 taps of every input pixel (W^T @ x) folded onto the output; backward: the
    output gradient unfolded (im2col) and multiplied back. About 2x oneDNN's transposed
    convolution for a one-channel output on CPU.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        n, in_ch, h, w = x.shape
        columns = torch.matmul(weight.reshape(in_ch, -1).t(), x.reshape(n, in_ch, h * w))  # N x 16 x L
        return F.fold(columns, (2 * h, 2 * w), 4, padding=1, stride=2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        n, in_ch = x.shape[:2]
        columns = F.unfold(grad, 4, padding=1, stride=2)  # N x 16 x L
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.matmul(weight.reshape(in_ch, -1), columns).view_as(x)
        if ctx.needs_input_grad[1]:
            grad_w = torch.bmm(x.reshape(n, in_ch, -1), columns.transpose(1, 2)).sum(0).view_as(weight)
        return grad_x, grad_w


class Conv2d(nn.Conv2d):
    """nn.Conv2d with CPU fast paths for DCGAN's layers; parameters and state-dict keys are nn.Conv2d's.

    Measured on one AVX2 core, batch 64, forward + backward (benchmarks/bench_train.py covers the step):
    - 1 -> C channels, 4 x 4 stride 2 (D's first layer): :class:`_OneChannelDown`, 2-3x faster;
    - 8 x 8 -> 4 x 4 stride 2 while its weight trains: unfold + one matrix product, 1.15-1.3x
      (oneDNN's kernels are slow for 16 output pixels per image); with a frozen weight (G's step)
      oneDNN's input-gradient kernel is the faster one and runs;
    - 4 x 4 valid convolution to 1 x 1 (D's last layer): a linear layer.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _cpu_autograd(x, self.weight):
            if self.in_channels == 1 and _is_4x4(self, 2, 1):
                return _OneChannelDown.apply(x, self.weight)
            if x.shape[-2:] == (8, 8) and _is_4x4(self, 2, 1) and self.weight.requires_grad:
                columns = F.unfold(x, 4, padding=1, stride=2)  # N x (in * 16) x 16
                out = self.weight.reshape(self.out_channels, -1) @ columns  # N x out x 16
                return out.view(x.shape[0], self.out_channels, 4, 4)
            if x.shape[-2:] == (4, 4) and _is_4x4(self, 1, 0):
                return F.linear(x.flatten(1), self.weight.flatten(1)).view(x.shape[0], self.out_channels, 1, 1)
        return super().forward(x)


class ConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d with CPU fast paths for DCGAN's layers; parameters and keys are nn's.

    - 1 x 1 -> 4 x 4 (G's first layer, from the latent vector): one matrix product;
    - 4 x 4 -> 8 x 8 stride 2: matmul + fold (col2im), about 1.25x forward + backward;
    - C -> 1 channel stride 2 (G's last layer): :class:`_OneChannelUp`, about 2x.
    """

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if output_size is None and _cpu_autograd(x, self.weight):
            n, in_ch = x.shape[:2]
            if x.shape[-2:] == (1, 1) and _is_4x4(self, 1, 0):
                return (x.reshape(n, in_ch) @ self.weight.reshape(in_ch, -1)).view(n, self.out_channels, 4, 4)
            if x.shape[-2:] == (4, 4) and _is_4x4(self, 2, 1) and self.weight.requires_grad:
                columns = self.weight.reshape(in_ch, -1).t() @ x.reshape(n, in_ch, 16)  # N x (out * 16) x 16
                return F.fold(columns, (8, 8), 4, padding=1, stride=2)
            if self.out_channels == 1 and _is_4x4(self, 2, 1):
                return _OneChannelUp.apply(x, self.weight)
        return super().forward(x, output_size)


def weights_init(module: nn.Module) -> None:
    """The reference DCGAN init: conv weights ~ N(0, 0.02), batch-norm scale ~ N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    def __init__(self, image_size: int, latent_dim: int, width: int) -> None:
        super().__init__()
        depth = _depth(image_size)
        self.image_size, self.latent_dim = image_size, latent_dim
        top = width * _multiplier(depth - 1)
        layers: list[nn.Module] = [
            ConvTranspose2d(latent_dim, top, 4, 1, 0, bias=False),
            nn.BatchNorm2d(top),
            nn.ReLU(True),
            # (width * mult) x 4 x 4
        ]
        in_ch = top
        for level in range(depth - 1, 0, -1):
            out_ch = width * _multiplier(level - 1)
            layers += [ConvTranspose2d(in_ch, out_ch, 4, 2, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(True)]
            # out_ch x (image_size / 2**level) x (image_size / 2**level)
            in_ch = out_ch
        layers += [ConvTranspose2d(in_ch, CHANNELS, 4, 2, 1, bias=False), nn.Tanh()]
        # 1 x image_size x image_size, in [-1, 1]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.view(z.shape[0], self.latent_dim, 1, 1))


class Discriminator(nn.Module):
    def __init__(self, image_size: int, width: int, spectral_norm: bool = False) -> None:
        super().__init__()
        depth = _depth(image_size)
        sn = nn.utils.spectral_norm if spectral_norm else (lambda m: m)
        layers: list[nn.Module] = [sn(Conv2d(CHANNELS, width, 4, 2, 1, bias=False)), nn.LeakyReLU(0.2, inplace=True)]
        # width x (image_size / 2) x (image_size / 2)
        in_ch = width
        for level in range(1, depth):
            out_ch = width * _multiplier(level)
            layers.append(sn(Conv2d(in_ch, out_ch, 4, 2, 1, bias=False)))
            if not spectral_norm:  # spectral norm replaces batch norm as D's regulariser
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            # out_ch x (image_size / 2**(level+1)) x (image_size / 2**(level+1))
            in_ch = out_ch
        layers.append(sn(Conv2d(in_ch, 1, 4, 1, 0, bias=False)))
        # 1 x 1 x 1: one logit per image
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).flatten()


def build_generator(config: TrainConfig) -> Generator:
    generator = Generator(config.image_size, config.latent_dim, config.generator_width)
    generator.apply(weights_init)
    return generator


def build_discriminator(config: TrainConfig) -> Discriminator:
    discriminator = Discriminator(config.image_size, config.discriminator_width, config.spectral_norm)
    discriminator.apply(weights_init)
    return discriminator


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
