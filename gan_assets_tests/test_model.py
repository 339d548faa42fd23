"""The DCGAN modules and the training core (plain PyTorch): shapes, determinism, learning, divergence."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from gan_assets.model.artifact import sample_images
from gan_assets.model.augment import DiffAugment, rand_cutout, rand_translation
from gan_assets.model import layers
from gan_assets.model.dcgan import build_discriminator, build_generator
from gan_assets.model.device import DeviceError, resolve_device
from gan_assets.model.ema import ModelEMA
from gan_assets.model.previews import fixed_noise_grid_png
from gan_assets.model.train import (
    DivergenceError,
    GanTrainer,
    StepOptions,
    batch_schedule,
    compact_history,
    images_to_tensor,
    train_gan,
)
from gan_assets_tests.factories import tiny_train_config

TINY = tiny_train_config()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def two_halves(n: int = 64, size: int = 32, seed: int = 0) -> np.ndarray:
    """A fixed simple data set: left half bright, right half dark, a little noise."""
    rng = np.random.default_rng(seed)
    images = np.full((n, size, size), -0.8, np.float32)
    images[:, :, : size // 2] = 0.8
    images += rng.normal(0, 0.05, images.shape).astype(np.float32)
    return np.clip(images, -1, 1)


@pytest.mark.parametrize("size", [32, 64, 128, 256])
@pytest.mark.parametrize("spectral_norm", [False, True])
def test_shapes_for_every_image_size(size: int, spectral_norm: bool) -> None:
    config = TINY.replace(image_size=size, generator_width=2, discriminator_width=2, spectral_norm=spectral_norm)
    generator, discriminator = build_generator(config), build_discriminator(config)
    assert (generator.image_size, generator.latent_dim) == (size, 16)
    fake = generator(torch.randn(3, 16))
    assert fake.shape == (3, 1, size, size)
    assert float(fake.detach().abs().max()) <= 1.0  # tanh output
    assert discriminator(fake).shape == (3,)
    # one block per doubling: 4 -> size in log2(size) - 2 transposed convolutions (+ the 1 -> 4 one)
    convs = [m for m in generator.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(convs) == int(np.log2(size)) - 1


def test_same_seed_same_weights_and_different_seed_differs() -> None:
    images = two_halves(24)
    first = train_gan(images, TINY)
    second = train_gan(images, TINY)
    assert first.generator_state.keys() == second.generator_state.keys()
    for key, tensor in first.generator_state.items():
        assert torch.equal(tensor, second.generator_state[key]), key
    assert first.loss_history == second.loss_history
    other = train_gan(images, TINY.replace(seed=1))
    assert any(not torch.equal(t, other.generator_state[k]) for k, t in first.generator_state.items())


def test_result_shape_and_progress_log(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test_model.progress")
    with caplog.at_level(logging.INFO, logger="test_model.progress"):
        result = train_gan(two_halves(16), TINY, logger=logger)
    assert result.steps == 4 and result.images_seen == 4 * TINY.batch_size
    assert result.device == "cpu" and result.images_per_second > 0 and result.wall_seconds > 0
    assert result.loss_history["step"] == [1, 2, 3, 4]
    assert len(result.loss_history["loss_d"]) == len(result.loss_history["loss_g"]) == 4
    assert result.final_loss_d == result.loss_history["loss_d"][-1]
    assert result.parameter_counts["generator"] == sum(t.numel() for k, t in result.generator_state.items()
                                                       if k.endswith(("weight", "bias")))
    assert all(t.device.type == "cpu" for t in result.generator_state.values())
    progress = [r.getMessage() for r in caplog.records if "img/s" in r.getMessage()]
    assert len(progress) == 2  # log_every=2 over 4 steps
    assert progress[0].startswith("step 2/4") and "loss_d=" in progress[0] and "ETA" in progress[0]


def test_tiny_run_learns_the_data() -> None:
    """Samples of a fixed simple image set move toward it: mean image, and its left/right structure."""
    images = two_halves(64)
    config = TINY.replace(generator_width=16, discriminator_width=16, batch_size=16, steps=60,
                          lr_g=1e-3, lr_d=1e-3, loss="hinge", ema=False, log_every=1000)
    target = images.mean(0)
    untrained = build_generator(config)
    untrained.load_state_dict(GanTrainer(config, "cpu").generator_state())
    before = sample_images(untrained.eval(), 64, seed=5)
    result = train_gan(images, config)
    trained = build_generator(config)
    trained.load_state_dict(result.generator_state)
    after = sample_images(trained.eval(), 64, seed=5)
    distance_before = float(np.abs(before.mean(0) - target).mean())
    distance_after = float(np.abs(after.mean(0) - target).mean())
    assert distance_after < 0.8 * distance_before, (distance_before, distance_after)
    # the bright/dark split of the data appears in the samples
    contrast = float(after[:, :, :16].mean() - after[:, :, 16:].mean())
    assert contrast > 0.2, contrast


def test_nan_in_a_batch_stops_training_at_that_step() -> None:
    images = two_halves(16)
    poisoned_index = 5
    images[poisoned_index, 3, 3] = np.nan
    config = TINY.replace(steps=6)
    schedule = batch_schedule(len(images), config.batch_size, config.steps, config.seed)
    first_bad_step = 1 + int(np.nonzero((schedule == poisoned_index).any(dim=1).numpy())[0][0])
    trainer = GanTrainer(config, "cpu")
    data = torch.from_numpy(images).unsqueeze(1)  # bypasses train_gan's input validation on purpose
    with pytest.raises(DivergenceError, match=f"diverged at step {first_bad_step}: loss_d=nan") as info:
        trainer.fit(data, schedule)
    assert info.value.step == first_bad_step
    assert trainer.steps_done == first_bad_step  # stopped there, not at the end


def test_bad_input_images_are_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="N x 32 x 32"):
        images_to_tensor(np.zeros((4, 64, 64), np.float32), 32)
    with pytest.raises(ValueError, match="0 images"):
        images_to_tensor(np.zeros((0, 32, 32), np.float32), 32)
    with pytest.raises(ValueError, match="NaN"):
        images_to_tensor(np.full((2, 32, 32), np.inf, np.float32), 32)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        images_to_tensor(np.full((2, 32, 32), 3.0, np.float32), 32)
    with pytest.raises(ValueError, match="unpack"):
        images_to_tensor(np.zeros((2, 32, 32), np.uint8), 32)
    with pytest.raises(ValueError, match="divisible"):
        GanTrainer(TINY.replace(batch_size=7), "cpu", world_size=2, rank=0)


@pytest.mark.parametrize("changes", [
    {"loss": "hinge", "spectral_norm": True, "diffaugment": "translation,cutout"},
    {"loss": "bce", "spectral_norm": True},
    {"diffaugment": "cutout", "ema": False, "lr_g": 1e-3, "lr_d": 5e-5, "beta1": 0.0, "beta2": 0.99},
])
def test_option_combinations_train(changes: dict[str, object]) -> None:
    config = TINY.replace(steps=2, **changes)
    result = train_gan(two_halves(16), config)
    assert np.isfinite([result.final_loss_d, result.final_loss_g]).all()
    generator = build_generator(config)
    generator.load_state_dict(result.generator_state)  # strict: the stored keys are G's


def test_ema_is_what_is_stored_and_plain_g_without_it() -> None:
    images = torch.from_numpy(two_halves(16)).unsqueeze(1)
    schedule = batch_schedule(16, 8, 3, 0)
    with_ema = GanTrainer(TINY.replace(ema=True), "cpu")
    with_ema.fit(images, schedule)
    stored, live = with_ema.generator_state(), with_ema.generator.state_dict()
    assert any(not torch.equal(stored[k], live[k]) for k in stored if k.endswith("weight"))
    # buffers (batch-norm statistics) come from the live G
    assert all(torch.equal(stored[k], live[k]) for k in stored if "running" in k)
    plain = GanTrainer(TINY.replace(ema=False), "cpu")
    plain.fit(images, schedule)
    live = plain.generator.state_dict()
    assert all(torch.equal(t, live[k]) for k, t in plain.generator_state().items())


def test_ema_average_follows_the_formula() -> None:
    model = torch.nn.Linear(2, 2)
    ema = ModelEMA(model, decay=0.9)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    decay = ema.current_decay()  # warm-up: min(0.9, 1/10) on the first update
    assert decay == pytest.approx(0.1)
    ema.update()
    expected = decay * start + (1 - decay) * model.weight.detach()
    assert torch.allclose(ema.module.weight, expected)
    assert not ema.module.weight.requires_grad


def test_separate_learning_rates_reach_the_optimisers() -> None:
    trainer = GanTrainer(TINY.replace(lr_g=3e-4, lr_d=1e-4, beta1=0.1, beta2=0.9), "cpu")
    assert trainer.opt_g.param_groups[0]["lr"] == 3e-4 and trainer.opt_d.param_groups[0]["lr"] == 1e-4
    assert trainer.opt_g.param_groups[0]["betas"] == (0.1, 0.9)


def test_diffaugment_is_differentiable_and_keeps_shapes() -> None:
    x = torch.randn(6, 1, 32, 32, requires_grad=True)
    generator = torch.Generator().manual_seed(0)
    out = DiffAugment(("translation", "cutout"), generator)(x)
    assert out.shape == x.shape
    out.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="unknown DiffAugment"):
        DiffAugment(("flip",))


def test_translation_shifts_content_and_cutout_erases_a_square() -> None:
    x = torch.zeros(64, 1, 32, 32)
    x[:, :, 16, 16] = 1.0  # one bright pixel per image
    moved = rand_translation(x, torch.Generator().manual_seed(1))
    positions = moved.flatten(1).argmax(1)
    rows, cols = positions // 32, positions % 32
    assert int((moved.flatten(1).sum(1) == 1).sum()) == 64  # shifts up to 4 px keep the pixel inside
    assert (rows - 16).abs().max() <= 4 and (cols - 16).abs().max() <= 4
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 5  # images draw their own shifts
    ones = torch.ones(64, 1, 32, 32)
    erased = (rand_cutout(ones, torch.Generator().manual_seed(2)) == 0).flatten(1).sum(1)
    assert int(erased.max()) == 16 * 16 and int(erased.min()) >= 8 * 8  # clipped at borders


def test_compact_history_averages_long_runs() -> None:
    history = torch.arange(10, dtype=torch.float32).repeat(2, 1).T  # steps x 2
    compact = compact_history(history, max_points=5)
    assert compact["step"] == [2, 4, 6, 8, 10]
    assert compact["loss_d"] == [0.5, 2.5, 4.5, 6.5, 8.5]


def test_the_fixed_noise_grid_is_deterministic() -> None:
    generator = build_generator(TINY)
    first, second = fixed_noise_grid_png(generator, seed=3), fixed_noise_grid_png(generator, seed=3)
    assert first == second and first != fixed_noise_grid_png(generator, seed=4)
    assert generator.training  # the helper restores the mode it found


def test_device_auto_and_missing_cuda() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device(None).type == resolve_device(" auto ").type == expected
    if not torch.cuda.is_available():
        # The error names the setting to change, whichever stage asked.
        with pytest.raises(DeviceError, match=r"fid_extractor\.device='cuda:0' asks for CUDA but torch sees no GPU"):
            resolve_device("cuda:0", "fid_extractor.device")


def test_the_cpu_fast_paths_switch_changes_the_layers_not_the_step() -> None:
    """cpu_fast_paths swaps in model/layers.py for a training step only; off, torch's layers run."""
    config = TINY.replace(image_size=32)
    real = torch.rand(config.batch_size, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    steps = {}
    for on in (True, False):
        trainer = GanTrainer(config, "cpu", options=StepOptions(channels_last=True, cpu_fast_paths=on))
        convolutions = [m for m in trainer.discriminator.modules() if isinstance(m, torch.nn.Conv2d)]
        assert convolutions and all((type(m) is layers.Conv2d) == on for m in convolutions)
        steps[on] = (trainer.train_step(real.contiguous(memory_format=torch.channels_last)), trainer.generator_state())
    torch.testing.assert_close(steps[True][0], steps[False][0], atol=1e-4, rtol=1e-4)
    assert steps[True][1].keys() == steps[False][1].keys()  # the stored weights do not depend on the switch
    # Built, stored and sampled networks are torch's own classes: only a training step swaps them.
    assert {type(m) for m in build_generator(config).modules()} >= {torch.nn.ConvTranspose2d}
    assert not any(type(m).__module__ == layers.__name__ for m in build_discriminator(config).modules())


FAST_PATH_LAYERS = [
    # (our layer, input shape): every CPU fast path of layers.Conv2d / layers.ConvTranspose2d
    ("conv 8x8 -> 4x4", lambda: layers.Conv2d(6, 5, 4, 2, 1, bias=False), (3, 6, 8, 8)),
    ("conv 1 channel in", lambda: layers.Conv2d(1, 5, 4, 2, 1, bias=False), (3, 1, 16, 16)),
    ("conv 4x4 -> 1x1", lambda: layers.Conv2d(6, 1, 4, 1, 0, bias=False), (3, 6, 4, 4)),
    ("convT 1x1 -> 4x4", lambda: layers.ConvTranspose2d(7, 5, 4, 1, 0, bias=False), (3, 7, 1, 1)),
    ("convT 4x4 -> 8x8", lambda: layers.ConvTranspose2d(6, 5, 4, 2, 1, bias=False), (3, 6, 4, 4)),
    ("convT 1 channel out", lambda: layers.ConvTranspose2d(6, 1, 4, 2, 1, bias=False), (3, 6, 8, 8)),
]


@pytest.mark.parametrize("name,make,shape", FAST_PATH_LAYERS, ids=[name for name, _, _ in FAST_PATH_LAYERS])
@pytest.mark.parametrize("grads", ["input+weight", "weight only", "input only"])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "channels_last"])
def test_cpu_fast_path_layers_match_stock_convolutions(
    name: str, make, shape: tuple[int, ...], grads: str, memory_format: torch.memory_format
) -> None:
    """Each CPU fast path computes what torch's layer computes: output, and every gradient autograd asks for.

    "weight only" is D's real / detached-fake pass (the image needs no gradient), "input only"
    G's step through a frozen D. Activations and gradients come out in the network's layout.
    """
    torch.manual_seed(0)
    ours = layers.set_memory_format(make(), memory_format)
    stock_type = torch.nn.ConvTranspose2d if isinstance(ours, torch.nn.ConvTranspose2d) else torch.nn.Conv2d
    stock = stock_type(ours.in_channels, ours.out_channels, 4, ours.stride, ours.padding, bias=False)
    stock.load_state_dict(ours.state_dict())
    for layer in (ours, stock):
        layer.weight.requires_grad_(grads != "input only")
    x = torch.randn(*shape).contiguous(memory_format=memory_format)
    x_ours, x_stock = x.clone().requires_grad_(grads != "weight only"), x.clone().requires_grad_(grads != "weight only")
    out_ours, out_stock = ours(x_ours), stock(x_stock)
    # the fast path really ran
    assert "Convolution" not in type(out_ours.grad_fn).__name__, type(out_ours.grad_fn).__name__
    assert out_ours.shape == out_stock.shape
    assert out_ours.is_contiguous(memory_format=memory_format)
    torch.testing.assert_close(out_ours, out_stock, atol=1e-5, rtol=1e-5)
    upstream = torch.randn_like(out_stock).contiguous(memory_format=memory_format)
    out_ours.backward(upstream)
    out_stock.backward(upstream)
    if grads == "weight only":
        assert x_ours.grad is None
    else:
        assert x_ours.grad.is_contiguous(memory_format=memory_format)
        torch.testing.assert_close(x_ours.grad, x_stock.grad, atol=1e-5, rtol=1e-5)
    if grads == "input only":
        assert ours.weight.grad is None
    else:
        assert ours.weight.grad.is_contiguous(memory_format=memory_format)  # as the parameter: no copy in Adam
        torch.testing.assert_close(ours.weight.grad, stock.weight.grad, atol=1e-4, rtol=1e-5)
    with torch.no_grad():  # inference (generation, previews) runs torch's own layers
        torch.testing.assert_close(ours(x), stock(x), atol=1e-5, rtol=1e-5)


def test_odd_sized_maps_run_torchs_layer() -> None:
    """The patch-row form assumes even sides; anything else is torch's convolution, same result."""
    conv = layers.Conv2d(1, 3, 4, 2, 1, bias=False)
    x = torch.randn(2, 1, 9, 9, requires_grad=True)
    out = conv(x)
    assert "Convolution" in type(out.grad_fn).__name__
    torch.testing.assert_close(out, torch.nn.functional.conv2d(x, conv.weight, stride=2, padding=1))


def test_fast_path_output_takes_an_inplace_activation() -> None:
    """D's LeakyReLU(inplace=True) follows the patch-row conv: its output must not be a view."""
    conv = layers.set_memory_format(layers.Conv2d(4, 6, 4, 2, 1, bias=False), torch.channels_last)
    x = torch.randn(2, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    out = torch.nn.functional.leaky_relu(conv(x), 0.2, inplace=True)
    out.sum().backward()
    assert conv.weight.grad is not None


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_cpu_fast_path_networks_match_stock_layers(spectral_norm: bool) -> None:
    """Whole networks with the fast paths compute what the same networks with torch's layers do."""
    from gan_assets.model.layers import Conv2d, ConvTranspose2d

    # and inside a whole discriminator, with or without spectral norm
    config = TINY.replace(spectral_norm=spectral_norm)
    discriminator = build_discriminator(config).eval()
    generator = build_generator(config)
    x = torch.randn(4, 1, 32, 32, requires_grad=True)
    z = torch.randn(4, config.latent_dim)
    fast_d, fast_g = discriminator(x), generator(z)
    fast_grad = torch.autograd.grad(fast_d.sum() + fast_g.square().sum(), [x, *generator.parameters()])
    for layer in [*discriminator.modules(), *generator.modules()]:
        if isinstance(layer, ConvTranspose2d):
            layer.__class__ = torch.nn.ConvTranspose2d
        elif isinstance(layer, Conv2d):
            layer.__class__ = torch.nn.Conv2d
    stock_d, stock_g = discriminator(x), generator(z)
    stock_grad = torch.autograd.grad(stock_d.sum() + stock_g.square().sum(), [x, *generator.parameters()])
    torch.testing.assert_close(fast_d, stock_d, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast_g, stock_g, atol=1e-5, rtol=1e-5)
    for fast, stock in zip(fast_grad, stock_grad):
        # float32 sums in another order: compare on the gradient's own scale (with spectral norm
        # and an unconverged power iteration, D's input gradient reaches ~5e3)
        torch.testing.assert_close(fast, stock, atol=1e-6 * float(stock.abs().max()) + 1e-6, rtol=1e-4)


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (3, 5, 16, 12), (1, 1, 4, 4)])
def test_patch_rows_are_im2col_and_fold_is_its_adjoint(shape: tuple[int, int, int, int]) -> None:
    """patch_rows is F.unfold in (pixel, (ky, kx, c)) order; fold_patch_rows is F.fold of the same order."""
    n, c, h, w = shape
    x = torch.randn(*shape, dtype=torch.float64)
    unfolded = torch.nn.functional.unfold(x, 4, padding=1, stride=2)  # N x (c, ky, kx) x L
    expected = unfolded.view(n, c, 16, -1).permute(0, 3, 2, 1).reshape(-1, 16 * c)
    torch.testing.assert_close(layers.patch_rows(x), expected)
    rows = torch.randn(n * (h // 2) * (w // 2), 16 * c, dtype=torch.float64)
    columns = rows.view(n, -1, 16, c).permute(0, 3, 2, 1).reshape(n, 16 * c, -1)
    expected_fold = torch.nn.functional.fold(columns, (h, w), 4, padding=1, stride=2)
    torch.testing.assert_close(layers.fold_patch_rows(rows, n, c, h, w), expected_fold)
