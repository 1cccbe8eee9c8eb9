"""Where denoising starts: one setting read by training (stages 1a, 1b and 2) and by sampling.

The ``start`` params section is the only place it is set. Training draws
``training_fraction`` of its stage-1 batches at this start (and stage 2 restores its inputs from it);
the ``package`` stage stores it in the model folder, and every restoration starts there. A request
that starts elsewhere (another mode, timestep or noise, or a step count that adds denoising steps the
model never trained at) is refused by :func:`check_start`, unless the caller allows it explicitly.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from unildiff.errors import ConfigError, UntrainedStartError

START_MODES = ("lq", "noise")


@dataclass(frozen=True)
class StartConfig:
    """The start of the denoising trajectory (params ``start``).

    Attributes:
        mode: ``lq``: the LQ image's latent, noised by ``noise`` at ``timestep`` (one-step restorers,
            OSEDiff; ``tiny``); ``noise``: pure noise at the schedule's first timestep (the paper).
        timestep: the first denoising timestep of an LQ start. The sampler runs the timesteps of its
            ``sampling.steps``-step schedule that are ≤ this one.
        noise: scale of the noise added to the LQ latent at an LQ start: 0 = the LQ latent itself,
            1 = SDEdit (the latent noised to ``timestep``).
        training_fraction: fraction of each stage-1 batch drawn at this LQ start instead of at a random
            timestep from the noised clean latent (paper: 0). 1 trains the LQ start only.
    """

    mode: str = "noise"
    timestep: int = 999
    noise: float = 1.0
    training_fraction: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in START_MODES:
            raise ConfigError(f"start.mode must be one of {', '.join(START_MODES)}, got {self.mode!r}")
        if isinstance(self.timestep, bool) or not isinstance(self.timestep, int) or self.timestep < 0:
            raise ConfigError(f"start.timestep must be an integer >= 0, got {self.timestep!r}")
        if not 0.0 <= self.noise <= 1.0:
            raise ConfigError(f"start.noise must be in [0, 1], got {self.noise!r}")
        if not 0.0 <= self.training_fraction <= 1.0:
            raise ConfigError(f"start.training_fraction must be in [0, 1], got {self.training_fraction!r}")
        if self.training_fraction > 0 and self.mode != "lq":
            raise ConfigError(
                f"start.training_fraction={self.training_fraction} trains an LQ start: it needs start.mode lq"
            )

    @property
    def trains_lq_start(self) -> bool:
        """Whether training draws batches at the LQ start (``training_fraction`` > 0)."""
        return self.training_fraction > 0

    def requested(self, mode: str | None, timestep: int | None, noise: float | None) -> StartConfig:
        """This start with a request's overrides (``None`` keeps the recorded value).

        A request only starts somewhere: its ``training_fraction`` is 0.
        """
        changes = {"mode": mode, "timestep": timestep, "noise": noise}
        given = {key: value for key, value in changes.items() if value is not None}
        return dataclasses.replace(self, training_fraction=0.0, **given)


def untrained_start_reason(
    trained: StartConfig, requested: StartConfig, timesteps: Sequence[int], steps: int
) -> str | None:
    """Why a request starts where the model never trained, or ``None`` when it does not.

    Args:
        trained: the start the model was trained with (the model folder's ``start``).
        requested: the start of the request.
        timesteps: the denoising timesteps the request runs, first to last.
        steps: the request's ``sampling.steps`` (named in the reason).

    The denoiser trained at a random timestep on noised clean latents unless ``training_fraction`` is 1,
    and at the LQ start (``timestep``, ``noise``) when it is above 0.
    """
    random_t = trained.training_fraction < 1.0
    hint = "(--allow-untrained-start overrides)"
    if requested.mode == "noise" or (requested.mode == "lq" and requested.noise == 1.0):
        if random_t:
            return None  # pure noise and SDEdit starts are the random-t training's own inputs
    if requested.mode == "noise":
        return (
            f"start=noise: this model was trained only at its LQ start (start.mode lq, "
            f"t = {trained.timestep}, noise {trained.noise}) {hint}"
        )
    if not trained.trains_lq_start:
        return (
            f"start_noise={requested.noise}: this model was trained on fully noised latents only "
            f"(start.training_fraction 0); an LQ start needs start_noise 1 {hint}"
        )
    if requested.noise != trained.noise:
        return f"start_noise={requested.noise}: this model was trained at start noise {trained.noise} {hint}"
    first = timesteps[0]
    if first != trained.timestep:
        return (
            f"steps={steps} with start_timestep={requested.timestep} starts at t = {first}; this model was "
            f"trained at t = {trained.timestep} (start.timestep) {hint}"
        )
    if len(timesteps) > 1 and not random_t:
        later = ", ".join(str(step) for step in timesteps[1:])
        return (
            f"steps={steps} adds denoising steps at t = {later} after the start t = {first}; this model "
            f"was trained only at its start (start.training_fraction 1) {hint}"
        )
    return None


def check_start(
    trained: StartConfig,
    requested: StartConfig,
    timesteps: Sequence[int],
    steps: int,
    allow_untrained_start: bool = False,
) -> None:
    """Refuse a request that starts where the model never trained (see :func:`untrained_start_reason`).

    Raises:
        UntrainedStartError: one line naming the setting, unless ``allow_untrained_start`` (then a
            ``UserWarning`` with the same line).
    """
    reason = untrained_start_reason(trained, requested, timesteps, steps)
    if reason is None:
        return
    if allow_untrained_start:
        warnings.warn(f"untrained start: {reason}", UserWarning, stacklevel=3)
        return
    raise UntrainedStartError(reason)
