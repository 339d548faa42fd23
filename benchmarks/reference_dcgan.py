"""The baseline of the training benchmarks: pytorch/examples' dcgan/main.py training step.

Written the way the reference writes it -- D ends in nn.Sigmoid and the loss is nn.BCELoss with
label tensors; errD_real.backward() and errD_fake.backward() are separate; G's step runs D
forward on the non-detached fake and back-propagates through all of D (D's weight gradients
included); ``.item()`` reads D(x), D(G(z)) every iteration for the progress print; Adam with
defaults (lr 2e-4, betas (0.5, 0.999)). Same architecture and init as ours (gan_assets.model.dcgan),
so a ratio measures the step's design, not the network.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from gan_assets.model.config import TrainConfig
from gan_assets.model.dcgan import build_discriminator, build_generator


class ReferenceDCGAN:
    def __init__(self, config: TrainConfig, device: torch.device | str, *, autocast_dtype: torch.dtype | None = None,
                 channels_last: bool = False) -> None:
        self.device = torch.device(device)
        self.config = config
        torch.manual_seed(config.seed)
        fmt = torch.channels_last if channels_last else torch.preserve_format
        self.netG = build_generator(config).to(self.device, memory_format=fmt)
        self.netD = nn.Sequential(build_discriminator(config), nn.Sigmoid()).to(self.device, memory_format=fmt)
        self.criterion = nn.BCELoss()
        self.optimizerD = torch.optim.Adam(self.netD.parameters(), lr=config.lr_d, betas=(config.beta1, 0.999))
        self.optimizerG = torch.optim.Adam(self.netG.parameters(), lr=config.lr_g, betas=(config.beta1, 0.999))
        self.autocast_dtype = autocast_dtype
        self.real_label, self.fake_label = 1.0, 0.0
        self.stats: tuple[float, float, float, float, float] | None = None

    def _autocast(self) -> contextlib.AbstractContextManager[None]:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def step(self, real_cpu: torch.Tensor) -> None:
        netD, netG, criterion = self.netD, self.netG, self.criterion
        nz = self.config.latent_dim
        device = self.device
        # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
        netD.zero_grad()
        real = real_cpu.to(device)
        batch_size = real.size(0)
        label = torch.full((batch_size,), self.real_label, dtype=real.dtype, device=device)
        with self._autocast():
            output = netD(real)
        # BCELoss is not autocast-safe: the reference's loss runs in fp32 in the mixed modes.
        errD_real = criterion(output.float(), label)
        errD_real.backward()
        D_x = output.mean().item()

        noise = torch.randn(batch_size, nz, 1, 1, device=device)
        with self._autocast():
            fake = netG(noise)
        label.fill_(self.fake_label)
        with self._autocast():
            output = netD(fake.detach())
        errD_fake = criterion(output.float(), label)
        errD_fake.backward()
        D_G_z1 = output.mean().item()
        errD = errD_real + errD_fake
        self.optimizerD.step()

        # (2) Update G network: maximize log(D(G(z)))
        netG.zero_grad()
        label.fill_(self.real_label)
        with self._autocast():
            output = netD(fake)
        errG = criterion(output.float(), label)
        errG.backward()
        D_G_z2 = output.mean().item()
        self.optimizerG.step()
        self.stats = (errD.item(), errG.item(), D_x, D_G_z1, D_G_z2)
