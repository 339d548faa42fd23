"""The control image sets: deterministic, the right sizes, and each one what its name says."""

from __future__ import annotations

import numpy as np
import pytest

from gan_assets.metrics.controls import NEGATIVE_CONTROLS, build_controls, split_reference


def _real(count: int = 20, side: int = 16) -> np.ndarray:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:side, 0:side] / side
    # A bright top half over a dark bottom half: not symmetric under an upside-down flip.
    base = np.where(yy < 0.5, 0.6, -0.6) + 0.2 * xx
    return np.clip(base[None] + 0.05 * rng.standard_normal((count, side, side)), -1, 1).astype(np.float32)


def test_split_is_disjoint_complete_and_seeded() -> None:
    split = split_reference(11, seed=4)
    both = np.concatenate([split.reference_index, split.held_out_index])
    assert sorted(both.tolist()) == list(range(11))
    assert len(split.held_out_index) == 5 and len(split.reference_index) == 6
    again = split_reference(11, seed=4)
    assert np.array_equal(again.held_out_index, split.held_out_index)
    with pytest.raises(ValueError, match="at least 4"):
        split_reference(3)


def test_every_control_has_the_held_out_count_and_range() -> None:
    real = _real()
    held = real[:8]
    controls = build_controls(real, held, seed=0)
    assert [c.name for c in controls] == [*NEGATIVE_CONTROLS, "held_out_real"]
    assert [c.kind for c in controls].count("positive") == 1
    for control in controls:
        assert control.images.shape == held.shape, control.name
        assert control.images.dtype == np.float32
        assert np.all(np.isfinite(control.images)) and control.images.min() >= -1 and control.images.max() <= 1


def test_controls_are_what_their_names_say() -> None:
    real = _real()
    held = real[:8]
    by_name = {c.name: c.images for c in build_controls(real, held, seed=0)}
    np.testing.assert_array_equal(by_name["held_out_real"], held)
    np.testing.assert_array_equal(by_name["inverted"], -held)
    np.testing.assert_array_equal(by_name["flipped_vertical"], held[:, ::-1, :])
    assert abs(float(by_name["constant"].mean()) - float(real.mean())) < 1e-3
    assert float(by_name["constant"].std()) < 5e-3
    assert abs(float(by_name["uniform_noise"].mean())) < 0.05 and by_name["uniform_noise"].std() > 0.5
    # The blur removes detail: neighbouring pixels differ far less than in the source.
    def detail(images: np.ndarray) -> float:
        return float(np.abs(np.diff(images, axis=1)).mean() + np.abs(np.diff(images, axis=2)).mean())

    assert detail(by_name["blurred"]) < 0.5 * detail(held)
    # Same seed, same controls.
    again = {c.name: c.images for c in build_controls(real, held, seed=0)}
    for name, images in by_name.items():
        np.testing.assert_array_equal(images, again[name])
