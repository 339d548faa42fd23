"""CPU training fast paths for the DCGAN convolutions that oneDNN runs slowly.

Plain PyTorch, used by CPU training only: :func:`use_cpu_fast_paths` swaps a network's torch
convolutions for the subclasses below (same parameters, same state-dict keys, same results to
float rounding). On CPU, while autograd records, the layers oneDNN runs slowly (one-channel
edges, 8 x 8 <-> 4 x 4, 1 x 1 <-> 4 x 4) run as matrix products over patch rows, with
hand-written backward passes that compute only the gradients autograd asks for. Everything else
(CUDA, inference, 16 x 16 and larger maps) is torch's own layer; the models are built, stored and
sampled with torch's classes.

The patch-row form is channels-last by nature: the layers are told the network's layout so they
hand out activations and gradients in it, and no layer reorders its neighbours' tensors.

``train.StepOptions.cpu_fast_paths`` is the switch (off on CPU while torch's own layers measure
faster); ``benchmarks/bench_train.py`` prints fast paths / torch's layers for the same step, and
``docs/scaling.md`` keeps the figures. To drop the fast paths: delete this file and its tests
(the fast-path tests in ``test_model.py``), the import in ``train.py`` and, in
``GanTrainer._for_step``, the call (return ``network``); ``cpu_fast_paths`` can then go too.
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


def _even(x: torch.Tensor) -> bool:
    """Both sides even: the patch-row form of a stride-2 layer assumes it."""
    return x.shape[-2] % 2 == 0 and x.shape[-1] % 2 == 0


def patch_rows(x: torch.Tensor) -> torch.Tensor:
    """im2col of a 4 x 4 stride-2 padding-1 convolution, one row per output pixel.

    ``x`` (N x C x H x W, any layout) -> (N * H/2 * W/2) x (16 * C), columns ordered (ky, kx, c).
    Gathered from a padded channels-last copy, so every patch row is 4 runs of 4C contiguous
    floats: faster than ``F.unfold`` plus the transpose a single matrix product needs.
    """
    n, c, h, w = x.shape
    padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1))  # N x (H+2) x (W+2) x C, contiguous
    s = padded.stride()
    patches = padded.as_strided((n, h // 2, w // 2, 4, 4, c), (s[0], 2 * s[1], 2 * s[2], s[1], s[2], s[3]))
    return patches.reshape(n * (h // 2) * (w // 2), 16 * c)


def fold_patch_rows(rows: torch.Tensor, n: int, c: int, h: int, w: int,
                    memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """The adjoint of :func:`patch_rows` (col2im): sums every patch row back onto N x C x H x W.

    With ky = 2p + q, the tap (i, ky) lands on padded row 2(i + p) + q: four shifted, strided
    additions (one per (p, p')) over a padded channels-last buffer, then one copy to ``memory_format``.
    """
    ho, wo = h // 2, w // 2
    padded = rows.new_zeros(n, ho + 1, 2, wo + 1, 2, c)  # padded row 2R + q, column 2S + q'
    taps = rows.view(n, ho, wo, 2, 2, 2, 2, c)  # n, i, j, p, q, p', q', c
    for p in (0, 1):
        for p_ in (0, 1):
            padded[:, p:p + ho, :, p_:p_ + wo, :, :] += taps[:, :, :, p, :, p_, :, :].permute(0, 1, 3, 2, 4, 5)
    return padded.view(n, h + 2, w + 2, c)[:, 1:h + 1, 1:w + 1, :].permute(0, 3, 1, 2).contiguous(memory_format=memory_format)


def _pixels_to_nchw(pixels: torch.Tensor, n: int, h: int, w: int,
                    memory_format: torch.memory_format) -> torch.Tensor:
    """(N * H * W) x C rows (channels-last order) -> N x C x H x W in ``memory_format`` (may be a view)."""
    return pixels.view(n, h, w, -1).permute(0, 3, 1, 2).contiguous(memory_format=memory_format)


def _mm_to_nchw(a: torch.Tensor, b: torch.Tensor, n: int, h: int, w: int,
                memory_format: torch.memory_format) -> torch.Tensor:
    """``a @ b`` (one row per output pixel) as a new N x C x H x W tensor in ``memory_format``.

    Channels-last: the product is written straight into the output's storage. A custom
    Function's output must not be a view (the next layer's in-place LeakyReLU/ReLU would be refused).
    """
    channels = b.shape[1]
    if memory_format == torch.channels_last:
        out = torch.empty((n, channels, h, w), dtype=a.dtype, device=a.device, memory_format=torch.channels_last)
        torch.mm(a, b, out=out.permute(0, 2, 3, 1).view(n * h * w, channels))
        return out
    return _pixels_to_nchw(a @ b, n, h, w, memory_format)


class _PatchConv(torch.autograd.Function):
    """4 x 4 stride-2 convolution (O x C x 4 x 4 weight) as patch rows x weight: one matrix product.

    Backward: grad_W = grad^T @ rows and grad_x = fold(grad @ W), each only when autograd asks
    for it (D's real and detached-fake passes need only the weight's, G's step only the input's).
    Used where oneDNN is slow: one input channel (D's first layer) and 8 x 8 -> 4 x 4
    (16 output pixels per image).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:  # type: ignore[override]
        n, c, h, w = x.shape
        out_ch = weight.shape[0]
        rows = patch_rows(x)
        matrix = weight.permute(0, 2, 3, 1).reshape(out_ch, 16 * c)  # columns (ky, kx, c), as the rows
        ctx.save_for_backward(rows if ctx.needs_input_grad[1] else None, matrix)
        ctx.input_shape, ctx.memory_format = (n, c, h, w), memory_format
        return _mm_to_nchw(rows, matrix.t(), n, h // 2, w // 2, memory_format)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:  # type: ignore[override]
        rows, matrix = ctx.saved_tensors
        n, c, h, w = ctx.input_shape
        out_ch = grad.shape[1]
        grad_rows = grad.permute(0, 2, 3, 1).reshape(-1, out_ch)  # one row per output pixel (a view when channels-last)
        grad_x = grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = _pixels_to_nchw(grad_rows.t() @ rows, out_ch, 4, 4, ctx.memory_format)
        if ctx.needs_input_grad[0]:
            grad_x = fold_patch_rows(grad_rows @ matrix, n, c, h, w, ctx.memory_format)
        return grad_x, grad_w, None


class _PatchConvTranspose(torch.autograd.Function):
    """4 x 4 stride-2 transposed convolution (C x O x 4 x 4 weight): x @ W gives every output
    pixel's taps, :func:`fold_patch_rows` sums them; backward runs :func:`patch_rows` on the
    gradient. Used where oneDNN is slow: one output channel (G's last layer) and 4 x 4 -> 8 x 8.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:  # type: ignore[override]
        n, c, h, w = x.shape
        out_ch = weight.shape[1]
        pixels = x.permute(0, 2, 3, 1).reshape(-1, c)  # one row per input pixel (a view when channels-last)
        matrix = weight.permute(0, 2, 3, 1).reshape(c, 16 * out_ch)  # columns (ky, kx, o)
        ctx.save_for_backward(pixels if ctx.needs_input_grad[1] else None, matrix)
        ctx.input_shape, ctx.memory_format = (n, c, h, w), memory_format
        return fold_patch_rows(pixels @ matrix, n, out_ch, 2 * h, 2 * w, memory_format)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:  # type: ignore[override]
        pixels, matrix = ctx.saved_tensors
        n, c, h, w = ctx.input_shape
        rows = patch_rows(grad)  # (N * H * W) x (16 * O)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = _pixels_to_nchw(rows @ matrix.t(), n, h, w, ctx.memory_format)
        if ctx.needs_input_grad[1]:
            grad_w = _pixels_to_nchw(pixels.t() @ rows, c, 4, 4, ctx.memory_format)
        return grad_x, grad_w, None


class Conv2d(nn.Conv2d):
    """nn.Conv2d with CPU fast paths for DCGAN's layers; parameters and state-dict keys are nn.Conv2d's.

    - 1 -> C channels, 4 x 4 stride 2 (D's first layer), and 8 x 8 -> 4 x 4, 4 x 4 stride 2:
      :class:`_PatchConv`;
    - 4 x 4 valid convolution to 1 x 1 (D's last layer): a linear layer.
    Larger maps with many channels are oneDNN's: there it beats every matrix-product form measured.
    """

    memory_format: torch.memory_format = torch.contiguous_format
    """Layout of the activations and gradients the fast paths produce (see set_memory_format)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _cpu_autograd(x, self.weight):
            if _is_4x4(self, 2, 1) and _even(x) and (self.in_channels == 1 or x.shape[-2:] == (8, 8)):
                return _PatchConv.apply(x, self.weight, self.memory_format)
            if x.shape[-2:] == (4, 4) and _is_4x4(self, 1, 0):
                n = x.shape[0]
                out = F.linear(x.permute(0, 2, 3, 1).reshape(n, -1), self.weight.permute(0, 2, 3, 1).reshape(self.out_channels, -1))
                return out.view(n, self.out_channels, 1, 1)
        return super().forward(x)


class ConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d with CPU fast paths for DCGAN's layers; parameters and keys are nn's.

    - 1 x 1 -> 4 x 4 (G's first layer, from the latent vector): one matrix product;
    - 4 x 4 -> 8 x 8 and C -> 1 channel (G's last layer), 4 x 4 stride 2: :class:`_PatchConvTranspose`.
    """

    memory_format: torch.memory_format = torch.contiguous_format
    """Layout of the activations and gradients the fast paths produce (see set_memory_format)."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if output_size is None and _cpu_autograd(x, self.weight):
            if x.shape[-2:] == (1, 1) and _is_4x4(self, 1, 0):
                n, in_ch = x.shape[:2]
                pixels = x.reshape(n, in_ch) @ self.weight.permute(0, 2, 3, 1).reshape(in_ch, -1)  # N x (4 * 4 * out)
                return _pixels_to_nchw(pixels, n, 4, 4, self.memory_format)
            if _is_4x4(self, 2, 1) and (self.out_channels == 1 or x.shape[-2:] == (4, 4)):
                return _PatchConvTranspose.apply(x, self.weight, self.memory_format)
        return super().forward(x, output_size)


def set_memory_format(module: nn.Module, memory_format: torch.memory_format) -> nn.Module:
    """Put ``module``'s 4-D parameters in ``memory_format`` and make its fast-path layers produce it.

    A one-channel image (D's input) or a 1 x 1 latent map (G's input) looks the same in both
    layouts, so the first layers cannot infer the layout from their input: this tells them.
    """
    module.to(memory_format=memory_format)
    for layer in module.modules():
        if isinstance(layer, (Conv2d, ConvTranspose2d)):
            layer.memory_format = memory_format
    return module


def use_cpu_fast_paths(module: nn.Module, memory_format: torch.memory_format) -> nn.Module:
    """Swap ``module``'s torch convolutions for the fast-path classes, in ``memory_format``.

    Only the class changes (the subclasses add no state), so parameters, optimiser state and the
    stored state dict are the same objects and keys as before.
    """
    for layer in module.modules():
        if type(layer) is nn.Conv2d:
            layer.__class__ = Conv2d
        elif type(layer) is nn.ConvTranspose2d:
            layer.__class__ = ConvTranspose2d
    return set_memory_format(module, memory_format)
