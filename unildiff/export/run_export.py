"""The ``export`` stage's work: trained weights + prepared test images → ONNX graphs + parity report."""

from __future__ import annotations

from pathlib import Path

import torch

from unildiff.errors import DataError
from unildiff.export.config import ExportConfig
from unildiff.utils.atomic import atomic_write_json


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


def export_and_check(
    model, prepared_dir: Path, onnx_dir: Path, parity_path: Path, sampling, config: ExportConfig
):
    """Export ``model`` into ``onnx_dir`` and write the parity report to ``parity_path`` (both atomic).

    The example batch for the export is the first two test images (one repeated if only one exists).
    """
    from unildiff.export.onnx_export import export_model
    from unildiff.export.parity import parity_report
    from unildiff.pipeline import TorchGraphs

    graphs = TorchGraphs.from_model(model)
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
        onnx_dir, model, images[: config.parity_images], prompts[: config.parity_images], sampling, config
    )
    report["exporters"] = {name.value: exporter for name, exporter in manifest.exporters.items()}
    report["opset"] = manifest.opset
    atomic_write_json(parity_path, report)
    return report
