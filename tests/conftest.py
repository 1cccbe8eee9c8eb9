"""Shared pytest set-up: deterministic CPU threads and skips for GPU / TensorRT tests."""

from __future__ import annotations

import importlib.util

import pytest
import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests without CUDA and ``tensorrt`` tests without TensorRT, saying why."""
    has_cuda = torch.cuda.is_available()
    has_tensorrt = importlib.util.find_spec("tensorrt") is not None
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            reason = "needs a CUDA device; torch.cuda.is_available() is False"
            item.add_marker(pytest.mark.skip(reason=reason))
        if "tensorrt" in item.keywords and not (has_tensorrt and has_cuda):
            reason = "TensorRT is not installed" if not has_tensorrt else "TensorRT needs a CUDA device"
            item.add_marker(pytest.mark.skip(reason=reason))
