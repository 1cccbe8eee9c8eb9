"""Degradation settings (supplement §2.1): their tasks, each task's prompt and synthetic recipe.

- ``aio3``: Gaussian noise σ ∈ {15, 25, 50}, rain, haze.
- ``aio5``: aio3 plus motion blur and low light; at test, noise σ = 25 only.
- ``cdd11``: low light (L), haze (H), rain (R), snow (S) and their 2- and 3-fold composites, applied in
  the fixed order L → H → R → S.
- ``custom``: pairs read from a folder; a single task ``custom``.
- ``single``: one task of :data:`SINGLE_TASKS`, named by ``data.task`` (the paper's single-task models).
- ``autodir``: AutoDIR's six tasks (supplement §2.3): aio5 plus raindrop removal (real pairs only).
- ``udc``: under-display-camera pairs (T-OLED, P-OLED; supplement §2.1), real pairs for zero-shot
  evaluation, with the empty prompt (the model was never told about this degradation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from unildiff.data import degradations
from unildiff.errors import ConfigError

DegradationFunction = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Step:
    """One degradation with its parameter ranges; each range is sampled uniformly per image.

    Attributes:
        name: name recorded in the manifest's ``degradations`` column.
        function: a function of :mod:`unildiff.data.degradations`.
        ranges: ``param -> (low, high)``; integer bounds sample integers (inclusive).
    """

    name: str
    function: DegradationFunction
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Degrade ``image`` ([0, 1], (H, W, 3)) with parameters drawn from ``rng``."""
        params = {}
        for key, (low, high) in sorted(self.ranges.items()):
            if isinstance(low, int) and isinstance(high, int):
                params[key] = int(rng.integers(low, high + 1))
            else:
                params[key] = float(rng.uniform(low, high))
        return self.function(image, rng, **params)


def _noise(sigma: int) -> Step:
    return Step(
        f"gaussian_noise_{sigma}", degradations.gaussian_noise, {"sigma": (float(sigma), float(sigma))}
    )


RAIN = Step(
    "rain",
    degradations.rain_streaks,
    {"density": (0.004, 0.012), "length": (7, 15), "angle_degrees": (-25.0, 25.0), "intensity": (0.5, 0.9)},
)
HAZE = Step("haze", degradations.haze, {"beta": (0.6, 1.8), "airlight": (0.75, 1.0)})
BLUR = Step("motion_blur", degradations.motion_blur, {"kernel_size": (7, 15)})
LOW = Step(
    "low_light",
    degradations.low_light,
    {"gamma": (1.5, 2.5), "scale": (0.15, 0.45), "noise_sigma": (2.0, 8.0)},
)
SNOW = Step(
    "snow",
    degradations.snow,
    {
        "density": (0.003, 0.01),
        "flake_size": (0.6, 1.6),
        "streak_length": (3, 9),
        "angle_degrees": (-30.0, 30.0),
    },
)


@dataclass(frozen=True)
class Task:
    """A restoration task: its name, text prompt and synthetic degradation recipe (applied in order)."""

    name: str
    prompt: str
    steps: tuple[Step, ...]

    @property
    def synthetic(self) -> bool:
        """Whether the task has a synthetic recipe (the built-in photos can make its pairs)."""
        return bool(self.steps)

    @property
    def degradations(self) -> str:
        """The ``+``-joined step names, as written in the manifest."""
        return "+".join(step.name for step in self.steps) or "none"

    def degrade(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Apply every step in order to ``image`` ([0, 1], (H, W, 3)); returns the same range and layout."""
        for step in self.steps:
            image = step.apply(image, rng)
        return image


PROMPTS = {
    "noise": "remove noise",
    "rain": "remove rain",
    "haze": "remove haze",
    "blur": "remove blur",
    "low": "enhance low light",
    "snow": "remove snow",
    "raindrop": "remove raindrops",
}

_SINGLE = {
    "denoise_15": Task("denoise_15", PROMPTS["noise"], (_noise(15),)),
    "denoise_25": Task("denoise_25", PROMPTS["noise"], (_noise(25),)),
    "denoise_50": Task("denoise_50", PROMPTS["noise"], (_noise(50),)),
    "derain": Task("derain", PROMPTS["rain"], (RAIN,)),
    "dehaze": Task("dehaze", PROMPTS["haze"], (HAZE,)),
    "deblur": Task("deblur", PROMPTS["blur"], (BLUR,)),
    "lowlight": Task("lowlight", PROMPTS["low"], (LOW,)),
    # Real pairs only (no synthetic recipe): the RainDrop dataset (Qian et al. 2018).
    "raindrop": Task("raindrop", PROMPTS["raindrop"], ()),
}
#: Tasks ``data.setting: single`` accepts as ``data.task``.
SINGLE_TASKS = tuple(_SINGLE)
UDC_TASKS = ("udc_toled", "udc_poled")

# CDD-11 components in their fixed composition order L -> H -> R -> S.
_CDD_ORDER = (("low", LOW), ("haze", HAZE), ("rain", RAIN), ("snow", SNOW))
CDD11_TASKS = (
    "low", "haze", "rain", "snow",
    "low_haze", "low_rain", "low_snow", "haze_rain", "haze_snow",
    "low_haze_rain", "low_haze_snow",
)  # fmt: skip


def cdd11_task(name: str) -> Task:
    """The CDD-11 task ``name`` (e.g. ``low_haze_rain``) with its steps in the order L → H → R → S."""
    parts = name.split("_")
    components = [(key, step) for key, step in _CDD_ORDER if key in parts]
    if len(components) != len(parts) or name not in CDD11_TASKS:
        raise ConfigError(f"unknown cdd11 task {name!r} (valid: {', '.join(CDD11_TASKS)})")
    prompt = ", ".join(PROMPTS[key] for key, _ in components)
    return Task(name, prompt, tuple(step for _, step in components))


CUSTOM_TASK = "custom"


@dataclass(frozen=True)
class Setting:
    """A degradation setting: the tasks of its training and test splits."""

    name: str
    train_tasks: tuple[Task, ...]
    test_tasks: tuple[Task, ...]

    def tasks(self, split: str) -> tuple[Task, ...]:
        """The tasks of ``split``: ``train`` has the training tasks, ``val`` and ``test`` the test tasks."""
        return self.train_tasks if split == "train" else self.test_tasks

    @property
    def task_names(self) -> tuple[str, ...]:
        """Every task name of the setting (train and test, in order, without repeats)."""
        return tuple(dict.fromkeys(task.name for task in self.train_tasks + self.test_tasks))


_AIO3 = tuple(_SINGLE[name] for name in ("denoise_15", "denoise_25", "denoise_50", "derain", "dehaze"))
_AIO5_TRAIN = _AIO3 + (_SINGLE["deblur"], _SINGLE["lowlight"])
_AIO5_TEST = tuple(_SINGLE[name] for name in ("denoise_25", "derain", "dehaze", "deblur", "lowlight"))
_CDD11 = tuple(cdd11_task(name) for name in CDD11_TASKS)
_AUTODIR_TRAIN = _AIO5_TRAIN + (_SINGLE["raindrop"],)
_AUTODIR_TEST = _AIO5_TEST + (_SINGLE["raindrop"],)
# Zero-shot: no task prompt exists for these (the empty prompt, blind restoration).
_UDC = tuple(Task(name, "", ()) for name in UDC_TASKS)

SETTINGS = {
    "aio3": Setting("aio3", _AIO3, _AIO3),
    "aio5": Setting("aio5", _AIO5_TRAIN, _AIO5_TEST),
    "cdd11": Setting("cdd11", _CDD11, _CDD11),
    "custom": Setting("custom", (), ()),
    "single": Setting("single", (), ()),
    "autodir": Setting("autodir", _AUTODIR_TRAIN, _AUTODIR_TEST),
    "udc": Setting("udc", _UDC, _UDC),
}


def get_setting(name: str, custom_prompt: str = "restore the image", task: str = "") -> Setting:
    """The setting ``name``; ``custom`` gets one task ``custom`` with ``custom_prompt``; ``single`` the
    task ``task`` (one of :data:`SINGLE_TASKS`) for training and test.

    Raises:
        ConfigError: an unknown setting or ``single`` task, or a ``task`` given to another setting; the
        message lists the valid names.
    """
    if name not in SETTINGS:
        raise ConfigError(f"unknown data.setting {name!r} (valid: {', '.join(SETTINGS)})")
    if name != "single" and task:
        raise ConfigError(f"data.task={task!r} is read only with data.setting=single (got {name})")
    if name == "custom":
        custom = Task(CUSTOM_TASK, custom_prompt, ())
        return Setting("custom", (custom,), (custom,))
    if name == "single":
        if task not in _SINGLE:
            raise ConfigError(
                f"data.setting=single needs data.task, one of {', '.join(SINGLE_TASKS)}; got {task!r}"
            )
        return Setting("single", (_SINGLE[task],), (_SINGLE[task],))
    return SETTINGS[name]


def get_task(setting: Setting, name: str) -> Task:
    """The task ``name`` of ``setting``; an unknown name lists the valid ones."""
    for task in setting.train_tasks + setting.test_tasks:
        if task.name == name:
            return task
    raise ConfigError(
        f"unknown task {name!r} for setting {setting.name} (valid: {', '.join(setting.task_names)})"
    )
