"""Degradation models: determinism, statistics, and the settings' task tables."""

from __future__ import annotations

import numpy as np
import pytest

from unildiff.data import degradations
from unildiff.data.settings import CDD11_TASKS, SETTINGS, cdd11_task, get_setting, get_task
from unildiff.errors import ConfigError

FUNCTIONS = [
    degradations.gaussian_noise,
    degradations.rain_streaks,
    degradations.haze,
    degradations.motion_blur,
    degradations.low_light,
    degradations.snow,
    degradations.jpeg,
]


def _image(seed: int = 0, size: int = 48) -> np.ndarray:
    """A smooth textured test image, [0, 1], (H, W, 3)."""
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = 0.5 + 0.3 * np.sin(6 * rows + np.array([0.0, 1.0, 2.0])[:, None, None]) * np.cos(5 * cols)
    noise = np.random.default_rng(seed).uniform(-0.1, 0.1, size=(3, size, size))
    return np.clip(base + noise, 0, 1).transpose(1, 2, 0).astype(np.float32)


@pytest.mark.parametrize("function", FUNCTIONS, ids=lambda function: function.__name__)
def test_degradation_is_deterministic_and_keeps_range(function) -> None:
    image = _image()
    first = function(image, np.random.default_rng(7))
    second = function(image, np.random.default_rng(7))
    other = function(image, np.random.default_rng(8))
    assert first.shape == image.shape and first.dtype == np.float32
    assert 0.0 <= first.min() and first.max() <= 1.0
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, image), "the degradation changed nothing"
    if function is not degradations.jpeg:  # the codec draws nothing from the generator
        assert not np.array_equal(first, other), "a different seed gave the same output"


@pytest.mark.parametrize("setting", ["aio5", "cdd11"])
def test_every_task_recipe_is_deterministic(setting: str) -> None:
    image = _image(1)
    for task in SETTINGS[setting].train_tasks:
        np.testing.assert_array_equal(
            task.degrade(image, np.random.default_rng(3)), task.degrade(image, np.random.default_rng(3))
        )


@pytest.mark.parametrize("sigma", [15.0, 25.0, 50.0])
def test_noise_std_matches_sigma_before_clipping(sigma: float) -> None:
    image = np.full((128, 128, 3), 0.5, dtype=np.float32)
    noisy = degradations.gaussian_noise(image, np.random.default_rng(0), sigma=sigma, clip=False)
    residual = noisy - image
    assert abs(residual.mean()) < 0.01
    assert residual.std() == pytest.approx(sigma / 255.0, rel=0.03)


def test_haze_lowers_contrast_monotonically_with_density() -> None:
    image = _image(2, size=64)
    depth = degradations.depth_proxy(64, 64, np.random.default_rng(0))
    contrasts = [
        degradations.haze(image, np.random.default_rng(0), beta=beta, airlight=0.9, depth=depth).std()
        for beta in (0.0, 0.5, 1.0, 2.0, 3.0)
    ]
    assert all(later < earlier for earlier, later in zip(contrasts, contrasts[1:], strict=False)), contrasts


def test_low_light_lowers_mean_luminance() -> None:
    image = _image(3)
    dark = degradations.low_light(image, np.random.default_rng(0), gamma=2.0, scale=0.3, noise_sigma=5.0)
    luminance = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    assert (dark @ luminance).mean() < 0.5 * (image @ luminance).mean()


def test_motion_kernel_is_normalised() -> None:
    kernel = degradations.motion_kernel(11, np.random.default_rng(0))
    assert kernel.shape == (11, 11) and kernel.sum() == pytest.approx(1.0) and kernel.min() >= 0


def test_cdd11_composites_follow_fixed_order_and_join_prompts() -> None:
    task = cdd11_task("low_haze_snow")
    assert [step.name for step in task.steps] == ["low_light", "haze", "snow"]
    assert task.prompt == "enhance low light, remove haze, remove snow"
    assert task.degradations == "low_light+haze+snow"
    assert len(CDD11_TASKS) == 11


def test_aio5_tests_noise_at_sigma_25_only() -> None:
    setting = get_setting("aio5")
    assert [task.name for task in setting.test_tasks if task.name.startswith("denoise")] == ["denoise_25"]
    assert {"deblur", "lowlight"} <= {task.name for task in setting.train_tasks}


def test_unknown_setting_and_task_list_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="aio3, aio5, cdd11, custom"):
        get_setting("aio7")
    with pytest.raises(ConfigError, match="denoise_15"):
        get_task(get_setting("aio3"), "desnow")
    with pytest.raises(ConfigError, match="low_haze_rain"):
        cdd11_task("rain_low")
