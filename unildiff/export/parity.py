"""The ``export`` stage's work (:func:`export_and_check`: trained weights + prepared test images → ONNX
graphs + parity report) and the parity itself: per-graph abs differences between the exported graphs
(run by ONNX Runtime) and torch, and the end-to-end PSNR between the ONNX-Runtime pipeline's restoration
and torch's (same seed)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from unildiff.errors import DataError
from unildiff.export.config import ExportConfig
from unildiff.utils.atomic import atomic_write_json


@dataclass(frozen=True)
class Difference:
    """Abs difference between two sets of outputs.

    Attributes:
        max_abs: largest |onnx − torch| over every output element.
        mean_abs: mean |onnx − torch| over every output element.
        scale: largest |torch| (tolerances are relative to max(1, scale)).
    """

    max_abs: float
    mean_abs: float
    scale: float

    def within(self, atol: float) -> bool:
        """Whether ``max_abs <= atol * max(1, scale)``."""
        return math.isfinite(self.max_abs) and self.max_abs <= atol * max(1.0, self.scale)

    def merge(self, other: Difference) -> Difference:
        """The worse max, the average mean and the larger scale of two measurements."""
        return Difference(
            max(self.max_abs, other.max_abs),
            (self.mean_abs + other.mean_abs) / 2,
            max(self.scale, other.scale),
        )


def output_difference(reference: Sequence[torch.Tensor], candidate: Sequence[torch.Tensor]) -> Difference:
    """Compare matching outputs (same count and shapes) of torch (``reference``) and another backend."""
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} reference outputs but {len(candidate)} candidate outputs")
    total, count, maximum, scale = 0.0, 0, 0.0, 0.0
    for expected, actual in zip(reference, candidate, strict=True):
        expected = expected.detach().float().cpu()
        actual = actual.detach().float().cpu()
        if expected.shape != actual.shape:
            raise ValueError(f"shape {tuple(actual.shape)} differs from torch's {tuple(expected.shape)}")
        difference = (expected - actual).abs()
        maximum = max(maximum, float(difference.max()))
        total += float(difference.sum())
        count += difference.numel()
        scale = max(scale, float(expected.abs().max()))
    return Difference(maximum, total / max(count, 1), scale)


def psnr(image: torch.Tensor, reference: torch.Tensor) -> float:
    """PSNR in dB between two images in [-1, 1], (B, 3, H, W), measured on [0, 1]; inf when identical."""
    first = (image.detach().float().cpu().clamp(-1, 1) + 1) / 2
    second = (reference.detach().float().cpu().clamp(-1, 1) + 1) / 2
    mse = float(((first - second) ** 2).mean())
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def parity_report(onnx_dir, pipeline, lq_images: list[torch.Tensor], prompts: list[str], config) -> dict:
    """Compare every exported graph and the whole ORT pipeline with torch on real test images.

    Args:
        onnx_dir: ``export/onnx``.
        pipeline: the trained model (:class:`~unildiff.pipeline_unildiff.UniLDiffPipeline`). The
            end-to-end comparison restores with its recorded settings, untiled; a model that starts from
            noise runs ``config.parity_steps`` steps instead of its own count.
        lq_images: LQ test images, each [-1, 1], (1, 3, H, W) with sides multiples of the pixel multiple.
        prompts: their task prompts.
        config: ``ExportConfig`` (tolerances and step count).

    Returns:
        JSON-ready report: per graph max/mean abs difference and whether it is within tolerance, the
        end-to-end PSNR per image and its minimum, and the tolerances used.
    """
    from unildiff.backends import Backend, open_backend
    from unildiff.backends.onnxruntime import OnnxSession
    from unildiff.export.config import OnnxRuntimeConfig
    from unildiff.models.text import encode_prompt, make_time_ids

    model = pipeline.model
    torch_backend = open_backend(Backend.TORCH, model=model)
    ort_backend = open_backend(
        Backend.ONNXRUNTIME, onnx_dir=onnx_dir, onnxruntime=OnnxRuntimeConfig(prefer_cuda=False)
    )
    prior = model.prior
    differences: dict[str, Difference] = {}

    def record(name: str, difference: Difference) -> None:
        differences[name] = differences[name].merge(difference) if name in differences else difference

    text_sessions = {
        name: OnnxSession(f"{onnx_dir}/{name}.onnx", OnnxRuntimeConfig(prefer_cuda=False))
        for name in ("text_encoder", "text_encoder_2")
    }
    overrides = {"tile": 0, "steps": config.parity_steps if pipeline.start.mode == "noise" else None}
    sampling = pipeline.settings(**overrides)[0]
    psnrs = []
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for lq, prompt in zip(lq_images, prompts, strict=True):
            expected, actual = torch_backend.encode_lq(lq), ort_backend.encode_lq(lq)
            record(
                "lq_encoder",
                output_difference(
                    (expected.lq_features, expected.lq_latent, *expected.skips),
                    (actual.lq_features, actual.lq_latent, *actual.skips),
                ),
            )
            embeds, pooled = encode_prompt(prior, ["", prompt])
            height, width = lq.shape[-2:]
            sample = torch.randn((2, *expected.lq_latent.shape[1:]), generator=generator)
            arguments = (
                sample,
                torch.full((2,), 499.0),
                expected.lq_features.repeat(2, 1, 1, 1),
                embeds,
                pooled,
                make_time_ids(height, width, 2),
            )
            record(
                "denoiser",
                output_difference([torch_backend.denoise(*arguments)], [ort_backend.denoise(*arguments)]),
            )
            record(
                "decoder",
                output_difference(
                    [torch_backend.decode(expected.lq_latent, expected.skips)],
                    [ort_backend.decode(expected.lq_latent, expected.skips)],
                ),
            )
            for name, encoder, tokenizer in (
                ("text_encoder", prior.text_encoder, prior.tokenizer),
                ("text_encoder_2", prior.text_encoder_2, prior.tokenizer_2),
            ):
                ids = tokenizer(
                    [prompt],
                    padding="max_length",
                    max_length=tokenizer.model_max_length,
                    truncation=True,
                    return_tensors="pt",
                ).input_ids
                output = encoder(ids, output_hidden_states=True)
                reference = (output.hidden_states[-2],) + (
                    (output.text_embeds,) if name == "text_encoder_2" else ()
                )
                record(name, output_difference(reference, text_sessions[name](ids)))
            restorations = []
            for graphs in (torch_backend, ort_backend):
                sampler = pipeline.sampler(graphs=graphs, **overrides)
                restorations.append(sampler(lq, prompt, torch.Generator().manual_seed(sampling.seed)))
            psnrs.append(psnr(restorations[1], restorations[0]))
    finite = [value for value in psnrs if math.isfinite(value)]
    minimum = min(psnrs) if psnrs else math.nan
    return {
        "graphs": {
            name: {
                "max_abs_diff": difference.max_abs,
                "mean_abs_diff": difference.mean_abs,
                "max_abs_torch_output": difference.scale,
                "within_tolerance": difference.within(config.graph_atol),
            }
            for name, difference in differences.items()
        },
        "end_to_end": {
            "steps": sampling.steps,
            "timesteps": pipeline.sampler(**overrides).timesteps(),
            "images": len(psnrs),
            "psnr_db_per_image": [round(value, 3) if math.isfinite(value) else "inf" for value in psnrs],
            "min_psnr_db": round(minimum, 3) if math.isfinite(minimum) else "inf",
            "mean_psnr_db": round(sum(finite) / len(finite), 3) if finite else "inf",
            "above_bound": minimum > config.min_pipeline_psnr,
        },
        "tolerances": {
            "graph_atol_relative": config.graph_atol,
            "min_pipeline_psnr_db": config.min_pipeline_psnr,
        },
        "image_sizes": sorted({f"{lq.shape[-2]}x{lq.shape[-1]}" for lq in lq_images}),
    }


def load_test_images(prepared_dir: Path, count: int, multiple: int) -> tuple[list[torch.Tensor], list[str]]:
    """The first ``count`` LQ test images, centre-cropped to a common side (a multiple of ``multiple``).

    Returns:
        (images, prompts): images [-1, 1], (1, 3, S, S) each, and their task prompts.
    """
    from unildiff.data.dataset import PairedImageDataset

    dataset = PairedImageDataset(prepared_dir, "test", crop_size=None)
    if len(dataset) == 0:
        raise DataError(f"{prepared_dir} has no test images: run the prepare stage")
    items = [dataset[index] for index in range(min(count, len(dataset)))]
    side = min(min(item["lq"].shape[-2:]) for item in items) // multiple * multiple
    if side < multiple:
        raise DataError(f"test images in {prepared_dir} are smaller than the model's multiple {multiple}")
    images = []
    for item in items:
        lq = item["lq"]
        top, left = (lq.shape[-2] - side) // 2, (lq.shape[-1] - side) // 2
        images.append(lq[:, top : top + side, left : left + side].unsqueeze(0).contiguous())
    return images, [str(item["prompt"]) for item in items]


def export_and_check(pipeline, prepared_dir: Path, onnx_dir: Path, parity_path: Path, config: ExportConfig):
    """Export the model ``pipeline`` into ``onnx_dir`` and write the parity report to ``parity_path``
    (both atomic).

    The example batch for the export is the first two test images (one repeated if only one exists).
    """
    from unildiff.backends import Backend, open_backend
    from unildiff.export.onnx_export import export_model

    model = pipeline.model
    graphs = open_backend(Backend.TORCH, model=model)
    count = max(config.parity_images, 2)
    images, prompts = load_test_images(prepared_dir, count, graphs.pixel_multiple)
    if len(images) == 1:
        images, prompts = images * 2, prompts * 2
    if config.dynamic_check_size > images[0].shape[-1]:
        raise DataError(
            f"export.dynamic_check_size={config.dynamic_check_size} exceeds the test images' side "
            f"{images[0].shape[-1]}"
        )
    manifest = export_model(graphs, model.prior, torch.cat(images[:2]), prompts[:2], onnx_dir, config)
    report = parity_report(
        onnx_dir, pipeline, images[: config.parity_images], prompts[: config.parity_images], config
    )
    report["exporters"] = {name.value: exporter for name, exporter in manifest.exporters.items()}
    report["opset"] = manifest.opset
    atomic_write_json(parity_path, report)
    return report
