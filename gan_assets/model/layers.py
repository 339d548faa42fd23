"""Conv2d / ConvTranspose2d with CPU fast paths for the DCGAN layers that oneDNN runs slowly.

Plain PyTorch. The classes are torch's (same parameters, same state-dict keys, same results to
float rounding); on CPU, while autograd records, four layer shapes run as matrix products with
hand-written backward passes that compute only the gradients autograd asks for. Everything else
(CUDA, inference, other shapes) is torch's own layer. ``benchmarks/bench_train.py`` measures the
whole step; the per-layer figures below are forward + backward, batch 64, one AVX2 core.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
            columns = torch.bmm(weight.reshape(out_ch, -1).t().expand(n, -1, -1), grad)  # N x 16 x L
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
        columns = torch.bmm(weight.reshape(in_ch, -1).t().expand(n, -1, -1), x.reshape(n, in_ch, h * w))  # N x 16 x L
        return F.fold(columns, (2 * h, 2 * w), 4, padding=1, stride=2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        n, in_ch = x.shape[:2]
        columns = F.unfold(grad, 4, padding=1, stride=2)  # N x 16 x L
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.bmm(weight.reshape(in_ch, -1).expand(n, -1, -1), columns).view_as(x)
        if ctx.needs_input_grad[1]:
            grad_w = torch.bmm(x.reshape(n, in_ch, -1), columns.transpose(1, 2)).sum(0).view_as(weight)
        return grad_x, grad_w


def patch_rows(x: torch.Tensor) -> torch.Tensor:
    """im2col of a 4 x 4 stride-2 padding-1 convolution, one row per output pixel.

    NCHW ``x`` (N x C x H x W) -> (N * H/2 * W/2) x (16 * C), columns ordered (ky, kx, c). Gathered
    from a padded channels-last copy, so every patch row is 4 runs of 4C contiguous floats:
    4-5x faster than ``F.unfold`` plus the transpose a single matrix product needs.
    """
    n, c, h, w = x.shape
    padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1))  # N x (H+2) x (W+2) x C, contiguous
    s = padded.stride()
    patches = padded.as_strided((n, h // 2, w // 2, 4, 4, c), (s[0], 2 * s[1], 2 * s[2], s[1], s[2], s[3]))
    return patches.reshape(n * (h // 2) * (w // 2), 16 * c)


def fold_patch_rows(rows: torch.Tensor, n: int, c: int, h: int, w: int) -> torch.Tensor:
    """The adjoint of :func:`patch_rows` (col2im): sums every patch row back onto N x C x H x W.

    With ky = 2p + q, the tap (i, ky) lands on padded row 2(i + p) + q: four shifted, strided
    additions (one per (p, p')) over a padded channels-last buffer, then one copy to NCHW.
    """
    ho, wo = h // 2, w // 2
    padded = rows.new_zeros(n, ho + 1, 2, wo + 1, 2, c)  # padded row 2R + q, column 2S + q'
    taps = rows.view(n, ho, wo, 2, 2, 2, 2, c)  # n, i, j, p, q, p', q', c
    for p in (0, 1):
        for p_ in (0, 1):
            padded[:, p:p + ho, :, p_:p_ + wo, :, :] += taps[:, :, :, p, :, p_, :, :].permute(0, 1, 3, 2, 4, 5)
    return padded.view(n, h + 2, w + 2, c)[:, 1:h + 1, 1:w + 1, :].permute(0, 3, 1, 2).contiguous()


class _PatchConv(torch.autograd.Function):
    """4 x 4 stride-2 convolution (O x C x 4 x 4 weight) as patch rows x weight: one matrix product.

    For the 8 x 8 -> 4 x 4 layer oneDNN's kernels are slow (16 output pixels per image); this is
    about 1.35x faster forward + backward. Backward: grad_W = grad^T @ rows, grad_x = fold(grad @ W),
    each only when autograd asks for it.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        n, c, h, w = x.shape
        out_ch = weight.shape[0]
        rows = patch_rows(x)
        matrix = weight.permute(0, 2, 3, 1).reshape(out_ch, 16 * c)  # columns (ky, kx, c), as the rows
        ctx.save_for_backward(rows if ctx.needs_input_grad[1] else None, matrix)
        ctx.input_shape = (n, c, h, w)
        return (rows @ matrix.t()).view(n, h // 2, w // 2, out_ch).permute(0, 3, 1, 2).contiguous()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:  # type: ignore[override]
        rows, matrix = ctx.saved_tensors
        n, c, h, w = ctx.input_shape
        out_ch = grad.shape[1]
        grad_rows = grad.permute(0, 2, 3, 1).reshape(-1, out_ch)  # one row per output pixel
        grad_x = grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = (grad_rows.t() @ rows).view(out_ch, 4, 4, c).permute(0, 3, 1, 2)
        if ctx.needs_input_grad[0]:
            grad_x = fold_patch_rows(grad_rows @ matrix, n, c, h, w)
        return grad_x, grad_w


class _PatchConvTranspose(torch.autograd.Function):
    """4 x 4 stride-2 transposed convolution (C x O x 4 x 4 weight): x @ W gives every output
    pixel's taps, :func:`fold_patch_rows` sums them; backward runs :func:`patch_rows` on the
    gradient. About 1.15x faster than unfold/fold with a batched product, 1.3x oneDNN, at 4 -> 8.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        n, c, h, w = x.shape
        out_ch = weight.shape[1]
        pixels = x.permute(0, 2, 3, 1).reshape(-1, c)  # one row per input pixel
        matrix = weight.permute(0, 2, 3, 1).reshape(c, 16 * out_ch)  # columns (ky, kx, o)
        ctx.save_for_backward(pixels if ctx.needs_input_grad[1] else None, matrix)
        ctx.input_shape = (n, c, h, w)
        return fold_patch_rows(pixels @ matrix, n, out_ch, 2 * h, 2 * w)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:  # type: ignore[override]
        pixels, matrix = ctx.saved_tensors
        n, c, h, w = ctx.input_shape
        out_ch = grad.shape[1]
        rows = patch_rows(grad)  # (N * H * W) x (16 * O)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = (rows @ matrix.t()).view(n, h, w, c).permute(0, 3, 1, 2).contiguous()
        if ctx.needs_input_grad[1]:
            grad_w = (pixels.t() @ rows).view(c, 4, 4, out_ch).permute(0, 3, 1, 2)
        return grad_x, grad_w


class Conv2d(nn.Conv2d):
    """nn.Conv2d with CPU fast paths for DCGAN's layers; parameters and state-dict keys are nn.Conv2d's.

    - 1 -> C channels, 4 x 4 stride 2 (D's first layer): :class:`_OneChannelDown`, 2-3x faster;
    - 8 x 8 -> 4 x 4, 4 x 4 stride 2 (D's last block): :class:`_PatchConv`, about 1.35x;
    - 4 x 4 valid convolution to 1 x 1 (D's last layer): a linear layer.
    Larger maps (16 x 16 and up, many channels) are oneDNN's: there it is 1.4-1.7x faster than
    any matrix-product form measured.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _cpu_autograd(x, self.weight):
            if self.in_channels == 1 and _is_4x4(self, 2, 1):
                return _OneChannelDown.apply(x, self.weight)
            if x.shape[-2:] == (8, 8) and _is_4x4(self, 2, 1):
                return _PatchConv.apply(x, self.weight)
            if x.shape[-2:] == (4, 4) and _is_4x4(self, 1, 0):
                return F.linear(x.flatten(1), self.weight.flatten(1)).view(x.shape[0], self.out_channels, 1, 1)
        return super().forward(x)


class ConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d with CPU fast paths for DCGAN's layers; parameters and keys are nn's.

    - 1 x 1 -> 4 x 4 (G's first layer, from the latent vector): one matrix product;
    - 4 x 4 -> 8 x 8, 4 x 4 stride 2: :class:`_PatchConvTranspose`, about 1.3x;
    - C -> 1 channel, 4 x 4 stride 2 (G's last layer): :class:`_OneChannelUp`, about 2x.
    """

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if output_size is None and _cpu_autograd(x, self.weight):
            n, in_ch = x.shape[:2]
            if x.shape[-2:] == (1, 1) and _is_4x4(self, 1, 0):
                return (x.reshape(n, in_ch) @ self.weight.reshape(in_ch, -1)).view(n, self.out_channels, 4, 4)
            if x.shape[-2:] == (4, 4) and _is_4x4(self, 2, 1):
                return _PatchConvTranspose.apply(x, self.weight)
            if self.out_channels == 1 and _is_4x4(self, 2, 1):
                return _OneChannelUp.apply(x, self.weight)
        return super().forward(x, output_size)
