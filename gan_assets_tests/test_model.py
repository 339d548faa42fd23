"""The DCGAN modules and the training core (plain PyTorch): shapes, determinism, learning, divergence."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from gan_assets.model.artifact import sample_images
from gan_assets.model.augment import DiffAugment, rand_cutout, rand_translation
from gan_assets.model.dcgan import build_discriminator, build_generator
from gan_assets.model.device import DeviceError, resolve_device
from gan_assets.model.ema import ModelEMA
from gan_assets.model.previews import fixed_noise_grid_png
from gan_assets.model.train import (
    DivergenceError,
    GanTrainer,
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
