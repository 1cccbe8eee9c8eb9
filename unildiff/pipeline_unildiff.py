"""``UniLDiffPipeline``: the trained model as one diffusers pipeline folder.

The folder is what the ``package`` stage writes (``models/unildiff/``)::

    model_index.json   the class, the components, and the settings the model was trained and
                       validated with: ``sampling``, ``start`` and ``tasks``
    vae/ unet/ text_encoder/ text_encoder_2/ tokenizer/ tokenizer_2/ scheduler/
    lq_encoder/ daff/ decoder/          config.json + safetensors each
    README.md          the model card (``card`` stage)

``UniLDiffPipeline.from_pretrained(folder)`` loads it in one call and ``save_pretrained`` writes it, as
for any diffusers pipeline, so the folder can be pushed to a model hub as it is (``push_to_hub``).
The denoising loop itself is :class:`~unildiff.pipeline.RestorationPipeline`; this class holds the
components and the recorded settings, and refuses a request the model was not trained for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

# diffusers loads a component only from a module that is already imported (model_index.json names
# "unildiff.models.daff" and so on): importing them here is what lets from_pretrained find them.
from unildiff.errors import ConfigError, MissingArtifactError
from unildiff.models.daff import DAFF
from unildiff.models.decoder import DAEMDecoder
from unildiff.models.lq_encoder import LQEncoder
from unildiff.params import build
from unildiff.pipeline import RestorationPipeline, SamplingConfig, make_scheduler
from unildiff.start import StartConfig, check_start

#: The DVC stage that writes the model folder.
PACKAGE_STAGE = "package"

#: Request overrides that change the start, and the :class:`StartConfig` field each one sets.
START_OVERRIDES = {"start": "mode", "start_timestep": "timestep", "start_noise": "noise"}

OUTPUT_TYPES = ("pil", "np", "pt")


@dataclass
class UniLDiffPipelineOutput(BaseOutput):
    """What :meth:`UniLDiffPipeline.__call__` returns.

    Attributes:
        images: one restored image: a PIL image (``output_type="pil"``), [0, 1] float32 (H, W, 3) numpy
            (``"np"``) or a [-1, 1], (1, 3, H, W) tensor (``"pt"``).
    """

    images: list[Any]


class UniLDiffPipeline(DiffusionPipeline):
    """All-in-one image restoration: LQ image + task prompt → restored image.

    Args:
        vae: the frozen prior VAE (``AutoencoderKL``); its encoder gives latents and DAEM's skips.
        unet: the fine-tuned UNet (stage 1b).
        text_encoder, text_encoder_2, tokenizer, tokenizer_2: the prior's text encoders (SDXL pair).
        scheduler: the sampling scheduler (its class is ``sampling["scheduler"]``).
        lq_encoder: the LQ encoder (f^LQ), DAFF (eqs. 1–5) and the DAEM decoder (eqs. 7–8).
        daff: see ``lq_encoder``.
        decoder: see ``lq_encoder``.
        sampling: the recorded :class:`~unildiff.pipeline.SamplingConfig` fields.
        start: the recorded :class:`~unildiff.start.StartConfig` fields (where the model learned to start).
        tasks: task name → task prompt, for every task the model was trained on, in the setting's
            order (stored as ``[name, prompt]`` pairs: ``model_index.json`` sorts mapping keys).
    """

    model_cpu_offload_seq = "text_encoder->text_encoder_2->lq_encoder->unet->decoder"
    #: The UniLDiff component classes (imported above, so that diffusers can load them).
    custom_components = (LQEncoder, DAFF, DAEMDecoder)

    def __init__(
        self,
        vae,
        unet,
        text_encoder,
        text_encoder_2,
        tokenizer,
        tokenizer_2,
        scheduler,
        lq_encoder,
        daff,
        decoder,
        sampling: dict | None = None,
        start: dict | None = None,
        tasks: dict | list | None = None,
    ):
        super().__init__()
        for name, value in (("sampling", sampling), ("start", start), ("tasks", tasks)):
            if value is None:
                raise ConfigError(f"UniLDiffPipeline needs its recorded {name!r} settings (model_index.json)")
        self.register_modules(
            vae=vae,
            unet=unet,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer_2,
            scheduler=scheduler,
            lq_encoder=lq_encoder,
            daff=daff,
            decoder=decoder,
        )
        recorded_sampling = build(SamplingConfig, dict(sampling), "sampling")
        recorded_start = build(StartConfig, dict(start), "start")
        self.register_to_config(
            sampling=dataclasses.asdict(recorded_sampling),
            start=dataclasses.asdict(recorded_start),
            tasks=[[str(name), str(prompt)] for name, prompt in dict(tasks).items()],
        )
        self._model = None

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> UniLDiffPipeline:
        """Load a model folder (see the module docstring); a missing local folder names the stage to run.

        Keyword arguments go to :meth:`diffusers.DiffusionPipeline.from_pretrained` (``torch_dtype``,
        ``use_safetensors``, …). Modules are in eval mode.
        """
        path = Path(pretrained_model_name_or_path)
        if path.exists() and not (path / "model_index.json").is_file():
            raise MissingArtifactError(
                f"{path} is not a UniLDiff model folder (no model_index.json; "
                f"run `dvc repro {PACKAGE_STAGE}`)"
            )
        if not path.exists():
            if not _looks_like_hub_id(str(pretrained_model_name_or_path)):
                raise MissingArtifactError(f"{path} is missing (run `dvc repro {PACKAGE_STAGE}`)")
            try:  # a hub id (owner/name), where the network allows
                with _quiet_loading():
                    return _eval(super().from_pretrained(str(pretrained_model_name_or_path), **kwargs))
            except Exception as error:  # noqa: BLE001 - any hub failure means: no such model here
                raise MissingArtifactError(
                    f"{path} is missing (run `dvc repro {PACKAGE_STAGE}`) and could not be loaded "
                    f"as a hub id: {type(error).__name__}"
                ) from None
        kwargs.setdefault("use_safetensors", True)
        with _quiet_loading():
            return _eval(super().from_pretrained(str(path), **kwargs))

    # ---- the recorded settings ----

    @property
    def sampling(self) -> SamplingConfig:
        """The sampling settings the model was validated with."""
        return build(SamplingConfig, dict(self.config.sampling), "sampling")

    @property
    def start(self) -> StartConfig:
        """Where the model was trained to start denoising (refused elsewhere, see :meth:`sampler`)."""
        return build(StartConfig, dict(self.config.start), "start")

    @property
    def tasks(self) -> dict[str, str]:
        """Task name → task prompt, for every task the model was trained on."""
        return dict(self.config.tasks)

    def prompt_for(self, task: str) -> str:
        """The prompt of ``task``: a task name (``derain``) or one of the task prompts (``remove rain``).

        Raises:
            ConfigError: neither; the message lists the valid task names.
        """
        if task in self.tasks:
            return self.tasks[task]
        if task in self.tasks.values():
            return task
        valid = ", ".join(f"{name} ({prompt!r})" for name, prompt in self.tasks.items())
        raise ConfigError(f"unknown task {task!r} (valid: {valid}); --prompt takes free text")

    # ---- the network and the denoising loop ----

    @property
    def model(self):
        """The components as a :class:`~unildiff.models.bundle.UniLDiffModel` (one per pipeline, so the
        UNet's DAFF hook is registered once)."""
        if self._model is None:
            from unildiff.models.bundle import UniLDiffModel
            from unildiff.models.prior import PriorComponents

            prior = PriorComponents(
                vae=self.vae,
                unet=self.unet,
                text_encoder=self.text_encoder,
                text_encoder_2=self.text_encoder_2,
                tokenizer=self.tokenizer,
                tokenizer_2=self.tokenizer_2,
                scheduler=self.scheduler,
            )
            self._model = UniLDiffModel(
                prior=prior, lq_encoder=self.lq_encoder, daff=self.daff, unet=self.unet, decoder=self.decoder
            )
        return self._model

    def settings(self, **overrides) -> tuple[SamplingConfig, StartConfig]:
        """The recorded sampling settings and start with a request's ``overrides`` applied.

        ``overrides`` are :class:`~unildiff.pipeline.SamplingConfig` field names or the start overrides
        ``start`` (mode), ``start_timestep`` and ``start_noise``; ``None`` keeps the recorded value.

        Raises:
            ConfigError: an unknown name, or a value out of range (named).
        """
        fields = {field.name for field in dataclasses.fields(SamplingConfig)}
        unknown = sorted(set(overrides) - fields - set(START_OVERRIDES))
        if unknown:
            valid = ", ".join(sorted(fields | set(START_OVERRIDES)))
            raise ConfigError(f"unknown sampling setting {unknown[0]!r} (valid: {valid})")
        given = {name: value for name, value in overrides.items() if value is not None}
        sampling = dataclasses.replace(
            self.sampling, **{name: value for name, value in given.items() if name in fields}
        )
        start = self.start.requested(*(given.get(name) for name in START_OVERRIDES))
        return sampling, start

    def sampler(
        self, graphs=None, allow_untrained_start: bool = False, show_progress: bool = False, **overrides
    ) -> RestorationPipeline:
        """The denoising loop with the recorded settings and ``overrides`` (see :meth:`settings`).

        Args:
            graphs: the graphs to run (:mod:`unildiff.backends`); ``None`` = this pipeline's torch modules.
            allow_untrained_start: run a start the model was not trained at, with a warning.
            show_progress: a rich progress bar over each image's graph calls.

        Raises:
            UntrainedStartError: the request starts where the model never trained (one line naming the
                setting), unless ``allow_untrained_start``.
        """
        sampling, start = self.settings(**overrides)
        if graphs is None:
            from unildiff.backends import Backend, open_backend

            graphs = open_backend(Backend.TORCH, model=self.model)
        scheduler = make_scheduler(sampling.scheduler, self.scheduler.config)
        prompt_encoder = _PromptEncoder(self)
        sampler = RestorationPipeline(
            graphs, prompt_encoder, scheduler, sampling, start, show_progress=show_progress
        )
        check_start(self.start, start, sampler.timesteps(), sampling.steps, allow_untrained_start)
        return sampler

    @torch.no_grad()
    def __call__(
        self,
        image,
        prompt: str = "",
        *,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        allow_untrained_start: bool = False,
        callback=None,
        progress=None,
        **overrides,
    ) -> UniLDiffPipelineOutput:
        """Restore one image.

        Args:
            image: the degraded image: a PIL image (converted to RGB), an (H, W, 3) or (H, W) numpy
                array (uint8, or float in [0, 1]) or a tensor [-1, 1], (1, 3, H, W). Any size.
            prompt: a task prompt (:attr:`tasks`), free text, or "" for blind (prompt-free) restoration.
            generator: CPU generator of the start noise (``sampling.seed`` when ``None``).
            output_type: ``pil``, ``np`` ([0, 1], (H, W, 3)) or ``pt`` ([-1, 1], (1, 3, H, W)).
            allow_untrained_start: see :meth:`sampler`.
            callback: ``callback(done, total, description)`` after every graph call.
            progress: an active rich ``Progress`` to show the graph calls on.
            **overrides: sampling settings for this call (see :meth:`settings`).

        Returns:
            :class:`UniLDiffPipelineOutput` with one image of the input's size.
        """
        if output_type not in OUTPUT_TYPES:
            raise ConfigError(f"unknown output_type {output_type!r} (valid: {', '.join(OUTPUT_TYPES)})")
        sampler = self.sampler(allow_untrained_start=allow_untrained_start, **overrides)
        lq = image_to_lq(image).to(self.device)
        if generator is None:
            generator = torch.Generator().manual_seed(sampler.config.seed)
        restored = sampler(lq, prompt, generator, progress=progress, callback=callback)
        return UniLDiffPipelineOutput(images=[_convert(restored, output_type)])


def _looks_like_hub_id(name: str) -> bool:
    """``owner/name`` whose first part is no local folder (``models/unildiff`` in a clone is local)."""
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not Path(parts[0]).exists() and not name.startswith(".")


def _eval(pipeline: UniLDiffPipeline) -> UniLDiffPipeline:
    for module in pipeline.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    return pipeline


@contextlib.contextmanager
def _quiet_loading():
    """No per-component progress bars from diffusers and transformers while a small folder loads."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    states = [
        (module, module.is_progress_bar_enabled()) for module in (diffusers_logging, transformers_logging)
    ]
    for module, _ in states:
        module.disable_progress_bar()
    try:
        yield
    finally:
        for module, enabled in states:
            if enabled:
                module.enable_progress_bar()


class _PromptEncoder:
    """prompts → (prompt_embeds, pooled) with the pipeline's text encoders (see ``encode_prompt``)."""

    def __init__(self, pipeline: UniLDiffPipeline):
        self.pipeline = pipeline

    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        from unildiff.models.text import encode_prompt

        return encode_prompt(self.pipeline.model.prior, prompts)


def image_to_lq(image) -> torch.Tensor:
    """A PIL image, numpy array or tensor as the LQ tensor [-1, 1], (1, 3, H, W), float32.

    Raises:
        ConfigError: an unsupported type or shape (named).
    """
    if isinstance(image, torch.Tensor):
        if image.ndim != 4 or image.shape[:2] != (1, 3):
            raise ConfigError(f"image tensor must be [-1, 1], (1, 3, H, W), got shape {tuple(image.shape)}")
        return image.float()
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL
        image = np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise ConfigError(f"image must be a PIL image, a numpy array or a tensor, got {type(image).__name__}")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ConfigError(f"image array must be (H, W, 3) or (H, W), got shape {image.shape}")
    if image.dtype == np.uint8:
        image = image.astype(np.float32) / 255.0
    from unildiff.data.imageio import image_to_tensor

    return image_to_tensor(np.clip(image.astype(np.float32), 0.0, 1.0)).contiguous()


def _convert(restored: torch.Tensor, output_type: str):
    if output_type == "pt":
        return restored
    from unildiff.data.imageio import tensor_to_image

    array = tensor_to_image(restored)
    if output_type == "np":
        return array
    from PIL import Image

    return Image.fromarray(np.round(array * 255.0).astype(np.uint8))


def pipeline_from_model(
    model,
    sampling: SamplingConfig | None = None,
    start: StartConfig | None = None,
    tasks: dict[str, str] | None = None,
) -> UniLDiffPipeline:
    """A ``UniLDiffModel``'s modules as one pipeline; the sampling scheduler (class
    ``sampling.scheduler``) is built from the prior's scheduler config.

    Without ``sampling`` and ``start`` the pipeline samples with the paper's settings (Euler, 20 steps from
    pure noise, CFG 5): for random-weight models such as ``bench --sdxl-size``, never for trained ones.
    """
    sampling = sampling or SamplingConfig()
    start = start or StartConfig()
    prior = model.prior
    return UniLDiffPipeline(
        vae=prior.vae,
        unet=model.unet,
        text_encoder=prior.text_encoder,
        text_encoder_2=prior.text_encoder_2,
        tokenizer=prior.tokenizer,
        tokenizer_2=prior.tokenizer_2,
        scheduler=make_scheduler(sampling.scheduler, prior.scheduler.config),
        lq_encoder=model.lq_encoder,
        daff=model.daff,
        decoder=model.decoder,
        sampling=dataclasses.asdict(sampling),
        start=dataclasses.asdict(start),
        tasks=dict(tasks or {}),
    )


def assemble_pipeline(
    prior_dir: str | Path,
    stage1_dir: str | Path,
    stage2_dir: str | Path,
    sampling: SamplingConfig,
    start: StartConfig,
    tasks: dict[str, str],
) -> UniLDiffPipeline:
    """The trained stage outputs (prior, stage 1b, stage 2) and their settings as one pipeline.

    A missing artifact raises :class:`~unildiff.errors.MissingArtifactError` naming its stage.
    """
    from unildiff.models.bundle import load_trained_model

    return pipeline_from_model(load_trained_model(prior_dir, stage1_dir, stage2_dir), sampling, start, tasks)


def save_model_folder(pipeline: UniLDiffPipeline, folder: str | Path) -> Path:
    """``pipeline.save_pretrained`` into ``folder``, each entry replaced whole, ``model_index.json`` last.

    Entries of ``folder`` that the pipeline does not write (the model card) are kept. A reader never
    sees a half-written component.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{folder.name}.", dir=folder.parent) as temporary:
        pipeline.save_pretrained(temporary, safe_serialization=True)
        entries = sorted(
            Path(temporary).iterdir(), key=lambda entry: (entry.name == "model_index.json", entry.name)
        )
        for entry in entries:
            destination = folder / entry.name
            if entry.is_dir():
                if destination.exists():
                    old = Path(tempfile.mkdtemp(prefix=f".{entry.name}.old.", dir=folder))
                    os.replace(destination, old / entry.name)
                    os.replace(entry, destination)
                    shutil.rmtree(old)
                else:
                    os.replace(entry, destination)
            else:
                os.replace(entry, destination)
    return folder
