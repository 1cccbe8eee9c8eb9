"""The whole UniLDiff network in one place: building it fresh and loading the trained artifacts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

from unildiff.errors import MissingArtifactError
from unildiff.models.conditioner import LQConditioner
from unildiff.models.config import DAEMConfig, DAFFConfig
from unildiff.models.daff import DAFF
from unildiff.models.decoder import DAEMDecoder
from unildiff.models.denoiser import UniLDiffDenoiser
from unildiff.models.lq_encoder import LQEncoder
from unildiff.models.prior import PRIOR_STAGE, PriorComponents, load_prior


@dataclass
class UniLDiffModel:
    """The five modules of UniLDiff (paper "Unified Training Strategy").

    ``unet`` is the fine-tuned UNet (stage 1b), which may differ from ``prior.unet``; ``prior.vae`` is the
    frozen VAE (its encoder gives latents and skips), ``decoder`` the stage-2 DAEM decoder.
    """

    prior: PriorComponents
    lq_encoder: LQEncoder
    daff: DAFF
    unet: UNet2DConditionModel
    decoder: DAEMDecoder
    _denoiser: UniLDiffDenoiser | None = field(default=None, repr=False, compare=False)

    def denoiser(self) -> UniLDiffDenoiser:
        """The UNet + DAFF denoiser (one per model, so the conv_in hook is registered once)."""
        if self._denoiser is None:
            self._denoiser = UniLDiffDenoiser(self.unet, self.daff)
        return self._denoiser

    def conditioner(self) -> LQConditioner:
        """The LQ conditioner (LQ encoder + frozen VAE encoder)."""
        return LQConditioner(self.lq_encoder, self.prior.vae)

    def modules(self) -> tuple[torch.nn.Module, ...]:
        """The modules restoration runs (``decoder`` once stage 2 has run). The prior's own UNet is left
        out: the stage-1b ``unet`` replaces it, and moving both would hold two UNets on the device."""
        modules = (
            self.prior.vae,
            self.unet,
            self.prior.text_encoder,
            self.prior.text_encoder_2,
            self.lq_encoder,
            self.daff,
            self.decoder,
        )
        return tuple(module for module in modules if module is not None)

    def to(self, device: str | torch.device) -> UniLDiffModel:
        """Move :meth:`modules` to ``device``, in place; returns ``self``."""
        for module in self.modules():
            module.to(device)
        return self

    def eval(self) -> UniLDiffModel:
        """Put :meth:`modules` in eval mode (deterministic DAEM routing); returns ``self``."""
        for module in self.modules():
            module.eval()
        return self


def build_model(prior: PriorComponents, daff_config: DAFFConfig, daem_config: DAEMConfig) -> UniLDiffModel:
    """A fresh UniLDiff around ``prior`` (stage 1a's starting point): copied LQ encoder and decoder, new DAFF.

    The UNet is the prior's own module (not a copy); training code copies it if it must keep the original.
    """
    lq_encoder = LQEncoder.from_vae(prior.vae, num_scales=daff_config.lq_scales)
    daff = DAFF.from_unet(prior.unet, daff_config, lq_encoder.scale_channels)  # from the global RNG
    decoder = DAEMDecoder.from_vae(prior.vae, daem_config)
    return UniLDiffModel(prior=prior, lq_encoder=lq_encoder, daff=daff, unet=prior.unet, decoder=decoder)


def _require(path: Path, stage: str) -> Path:
    # ``stage`` is the DVC stage writing ``models/<stage>/`` (one name for both, docs/architecture.md).
    if not (path / "config.json").is_file():
        raise MissingArtifactError(f"{path} is missing (run `dvc repro {stage}`)")
    return path


def require_trained_model(
    prior_dir: str | Path, stage1_dir: str | Path, stage2_dir: str | Path
) -> dict[str, Path]:
    """The trained weight folders by module; a missing one raises MissingArtifactError naming its stage."""
    prior_dir, stage1_dir, stage2_dir = Path(prior_dir), Path(stage1_dir), Path(stage2_dir)
    if not prior_dir.is_dir():
        raise MissingArtifactError(f"{prior_dir} is missing (run `dvc repro {PRIOR_STAGE}`)")
    paths = {name: _require(stage1_dir / name, "stage1b") for name in ("lq_encoder", "daff", "unet")}
    return {"prior": prior_dir, **paths, "decoder": _require(stage2_dir / "decoder", "stage2")}


def load_stage1_model(prior: PriorComponents, stage1_dir: str | Path) -> UniLDiffModel:
    """The stage-1b network around a loaded ``prior`` (LQ encoder, DAFF, UNet), in eval mode; its
    ``decoder`` is the prior's plain VAE decoder (stage 2 has not run yet)."""
    stage1_dir = Path(stage1_dir)
    paths = {name: _require(stage1_dir / name, "stage1b") for name in ("lq_encoder", "daff", "unet")}
    model = UniLDiffModel(
        prior=prior,
        lq_encoder=LQEncoder.from_pretrained(paths["lq_encoder"], use_safetensors=True),
        daff=DAFF.from_pretrained(paths["daff"], use_safetensors=True),
        unet=UNet2DConditionModel.from_pretrained(paths["unet"], use_safetensors=True),
        decoder=None,
    )
    for module in (model.lq_encoder, model.daff, model.unet):
        module.eval()
    return model


def load_trained_model(
    prior_dir: str | Path, stage1_dir: str | Path, stage2_dir: str | Path
) -> UniLDiffModel:
    """Load the trained network: models/prior, models/stage1b/{lq_encoder,daff,unet}, models/stage2/decoder.

    Every module is put in eval mode. A missing artifact raises MissingArtifactError naming the stage to run.
    """
    paths = require_trained_model(prior_dir, stage1_dir, stage2_dir)
    prior = load_prior(paths["prior"])
    model = UniLDiffModel(
        prior=prior,
        lq_encoder=LQEncoder.from_pretrained(paths["lq_encoder"], use_safetensors=True),
        daff=DAFF.from_pretrained(paths["daff"], use_safetensors=True),
        unet=UNet2DConditionModel.from_pretrained(paths["unet"], use_safetensors=True),
        decoder=DAEMDecoder.from_pretrained(paths["decoder"], use_safetensors=True),
    )
    for module in (model.lq_encoder, model.daff, model.unet, model.decoder):
        module.eval()
    return model
