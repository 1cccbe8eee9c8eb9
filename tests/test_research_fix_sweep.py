"""research/fix_sweep.py scores what the pipeline outputs: its raw restorations with step 7 applied
afterwards equal the model folder's own restoration."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from tests.model_folder import TINY_SAMPLING, save_tiny_folder
from unildiff import UniLDiffPipeline, paths
from unildiff.pipeline import fix_against_lq

SCRIPT = Path(__file__).resolve().parents[1] / "research" / "fix_sweep.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("fix_sweep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_raw_restorations_with_step_7_afterwards_are_the_pipelines_restorations(tmp_path: Path) -> None:
    save_tiny_folder(tmp_path / paths.MODEL)
    generator = torch.Generator().manual_seed(0)
    items = [
        {"lq": torch.rand(3, 32, 32, generator=generator) * 2 - 1, "prompt": prompt}
        for prompt in ("remove noise", "")
    ]
    raw, sampling = _load_script().raw_restorations(tmp_path, items)
    assert sampling == TINY_SAMPLING  # the model's recorded settings, not params.yaml's
    pipeline = UniLDiffPipeline.from_pretrained(tmp_path / paths.MODEL)
    for item, restoration in zip(items, raw, strict=True):
        lq = item["lq"].unsqueeze(0)
        full = pipeline(lq, item["prompt"], output_type="pt").images[0]
        assert restoration.shape == lq.shape
        assert not torch.equal(restoration, full)  # step 7 was off
        torch.testing.assert_close(fix_against_lq(restoration, lq, sampling), full, rtol=0, atol=1e-6)
