"""pyiqa image-quality metrics, built only when their weight files are already on this machine.

PSNR and SSIM need no weights. Learned metrics (LPIPS, DISTS, NIQE, MUSIQ, MANIQA, CLIPIQA) are built only
if every file they would otherwise download is present in the torch-hub / Hugging Face cache; the check
runs *before* pyiqa is asked to build the metric, so nothing is ever downloaded. A missing metric is
reported as ``"skipped: weights not found at <path>"`` and never gets a number.

Note: pyiqa loads its own learned-metric checkpoints with ``torch.load`` (third-party ``.pth`` files in the
local cache); UniLDiff's own checkpoints are safetensors only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from unildiff.errors import ConfigError


def _torch_hub() -> Path:
    return Path(torch.hub.get_dir())


def _pyiqa_file(name: str) -> Callable[[], Path]:
    return lambda: _torch_hub() / "pyiqa" / name


def _torchvision_file(name: str) -> Callable[[], Path]:
    return lambda: _torch_hub() / "checkpoints" / name


def _clip_file(name: str) -> Callable[[], Path]:
    return lambda: _torch_hub() / "clip" / name


def _hugging_face_file(repo_id: str, filename: str) -> Callable[[], Path]:
    def locate() -> Path:
        from huggingface_hub import constants, try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, filename)
        if isinstance(found, str):
            return Path(found)
        folder = "models--" + repo_id.replace("/", "--")
        return Path(constants.HF_HUB_CACHE) / folder / "snapshots" / "<revision>" / filename

    return locate


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its pyiqa name, whether it needs the GT, its direction and its weight files."""

    name: str
    pyiqa_name: str
    full_reference: bool
    higher_is_better: bool
    weight_files: tuple[Callable[[], Path], ...] = ()


METRICS: dict[str, MetricSpec] = {
    "psnr": MetricSpec("psnr", "psnr", True, True),
    "ssim": MetricSpec("ssim", "ssim", True, True),
    "lpips": MetricSpec(
        "lpips",
        "lpips",
        True,
        False,
        (_pyiqa_file("LPIPS_v0.1_alex-df73285e.pth"), _torchvision_file("alexnet-owt-7be5be79.pth")),
    ),
    "dists": MetricSpec(
        "dists",
        "dists",
        True,
        False,
        (_pyiqa_file("DISTS_weights-f5e65c96.pth"), _torchvision_file("vgg16-397923af.pth")),
    ),
    "niqe": MetricSpec("niqe", "niqe", False, False, (_pyiqa_file("niqe_modelparameters.mat"),)),
    "musiq": MetricSpec("musiq", "musiq", False, True, (_pyiqa_file("musiq_koniq_ckpt-e95806b9.pth"),)),
    "maniqa": MetricSpec(
        "maniqa",
        "maniqa",
        False,
        True,
        (
            _pyiqa_file("ckpt_koniq10k.pt"),
            _hugging_face_file("timm/vit_base_patch8_224.augreg2_in21k_ft_in1k", "model.safetensors"),
        ),
    ),
    "clipiqa": MetricSpec("clipiqa", "clipiqa", False, True, (_clip_file("RN50.pt"),)),
}
"""The metrics ``evaluate.metrics`` may name."""


def check_metric_names(names: Sequence[str]) -> None:
    """Raise ConfigError naming ``evaluate.metrics`` and the valid names if any name is unknown."""
    for name in names:
        if name not in METRICS:
            raise ConfigError(f"unknown metric {name!r} in evaluate.metrics (valid: {', '.join(METRICS)})")


def missing_weight_file(spec: MetricSpec) -> Path | None:
    """The first weight file of ``spec`` that is not on this machine, or None when all are present."""
    for locate in spec.weight_files:
        path = locate()
        if not path.is_file():
            return path
    return None


class MetricSuite:
    """The requested metrics that can run here, plus the reasons for those that cannot.

    Args:
        names: metric names (keys of :data:`METRICS`).
        y_channel: compute PSNR and SSIM on the Y channel (pyiqa ``test_y_channel``) instead of RGB.
        device: torch device for the metric networks.
    """

    def __init__(self, names: Sequence[str], y_channel: bool = False, device: str = "cpu"):
        check_metric_names(names)
        self.specs = [METRICS[name] for name in names]
        self.skipped: dict[str, str] = {}
        self.models: dict[str, torch.nn.Module] = {}
        self.device = device
        for spec in self.specs:
            missing = missing_weight_file(spec)
            if missing is not None:
                self.skipped[spec.name] = f"skipped: weights not found at {missing}"
                continue
            self.models[spec.name] = self._create(spec, y_channel)

    def _create(self, spec: MetricSpec, y_channel: bool) -> torch.nn.Module:
        import pyiqa

        options = {"test_y_channel": y_channel} if spec.name in ("psnr", "ssim") else {}
        return pyiqa.create_metric(spec.pyiqa_name, device=torch.device(self.device), **options)

    @property
    def names(self) -> list[str]:
        """Names of the metrics that run (in the requested order)."""
        return [spec.name for spec in self.specs if spec.name in self.models]

    @torch.no_grad()
    def score(self, image: torch.Tensor, gt: torch.Tensor) -> dict[str, float]:
        """Score ``image`` against ``gt`` with every available metric.

        Args:
            image: the image to score, [-1, 1], (1, 3, H, W).
            gt: the ground truth, [-1, 1], (1, 3, H, W), the same size.

        Returns:
            ``{metric name: value}`` for the metrics that ran. A learned metric that fails on this
            image (e.g. too small for its patches) is moved to ``skipped`` with the error.
        """
        image01 = ((image.float().clamp(-1, 1) + 1) / 2).to(self.device)
        gt01 = ((gt.float().clamp(-1, 1) + 1) / 2).to(self.device)
        scores: dict[str, float] = {}
        for spec in self.specs:
            model = self.models.get(spec.name)
            if model is None:
                continue
            try:
                value = model(image01, gt01) if spec.full_reference else model(image01)
            except (RuntimeError, ValueError, AssertionError, IndexError) as error:
                if not spec.weight_files:
                    raise
                self.skipped[spec.name] = f"skipped: failed on a {tuple(image.shape[-2:])} image: {error}"
                del self.models[spec.name]
                continue
            scores[spec.name] = float(value.reshape(-1)[0])
        return scores
