"""``unildiff restore`` error paths and file handling (CliRunner), on stand-in graphs for speed."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from tests.test_pipeline_sampling import make_pipeline
from unildiff.cli import app
from unildiff.pipeline import SamplingConfig
from unildiff.restore import write_sampling_record


@pytest.fixture
def stub_pipeline(monkeypatch, tmp_path):
    """Replace weight loading with the local stand-in graphs (the CLI's file handling is under test).

    The working folder holds a sampling record (``models/sampling.json``) as the evaluate stage writes it.
    """
    monkeypatch.chdir(tmp_path)
    write_sampling_record(SamplingConfig(steps=2, cfg=3.0, strength=0.5), Path("models/sampling.json"))
    monkeypatch.setattr("unildiff.models.bundle.require_trained_model", lambda *folders: {})
    monkeypatch.setattr(
        "unildiff.cli.restore.build_pipeline",
        lambda backend, sampling, *rest: make_pipeline(
            steps=sampling.steps,
            tile=sampling.tile,
            tile_overlap=sampling.tile_overlap,
            auto_tile=sampling.auto_tile,
        ),
    )


def _images(folder):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "rgb.png"), rng.integers(0, 255, (21, 19, 3), dtype=np.uint8))
    cv2.imwrite(str(folder / "rgba.png"), rng.integers(0, 255, (16, 16, 4), dtype=np.uint8))
    cv2.imwrite(str(folder / "gray16.png"), rng.integers(0, 65535, (18, 20), dtype=np.uint16))
    return folder


def test_folder_restored_keeping_modes_and_corrupt_file_skipped(tmp_path, stub_pipeline):
    inputs = _images(tmp_path / "in")
    (inputs / "broken.png").write_bytes(b"not an image at all")
    result = CliRunner().invoke(
        app, ["restore", str(inputs), "-o", str(tmp_path / "out"), "--task", "remove rain"]
    )
    assert result.exit_code == 1, result.output
    assert "broken.png" in result.output and "restored 3 image(s)" in result.output
    for name in ("rgb.png", "rgba.png", "gray16.png"):
        source = cv2.imread(str(inputs / name), cv2.IMREAD_UNCHANGED)
        restored = cv2.imread(str(tmp_path / "out" / name), cv2.IMREAD_UNCHANGED)
        assert restored.shape == source.shape and restored.dtype == source.dtype
    assert np.array_equal(
        cv2.imread(str(tmp_path / "out" / "rgba.png"), cv2.IMREAD_UNCHANGED)[..., 3],
        cv2.imread(str(inputs / "rgba.png"), cv2.IMREAD_UNCHANGED)[..., 3],
    )
    assert not (tmp_path / "out" / "broken.png").exists()


def test_all_good_exits_zero_and_tiling_option_works(tmp_path, stub_pipeline):
    inputs = _images(tmp_path / "in")
    result = CliRunner().invoke(
        app,
        [
            "restore",
            str(inputs / "rgb.png"),
            "-o",
            str(tmp_path / "out"),
            "--no-prompt",
            "--tile",
            "16",
            "--tile-overlap",
            "8",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "rgb.png").is_file()


def test_refuses_to_overwrite_inputs(tmp_path, stub_pipeline):
    inputs = _images(tmp_path / "in")
    before = (inputs / "rgb.png").read_bytes()
    for output in (inputs, tmp_path / "in"):
        result = CliRunner().invoke(app, ["restore", str(inputs), "-o", str(output)])
        assert result.exit_code == 1 and "input folder" in result.output
    result = CliRunner().invoke(app, ["restore", str(inputs / "rgb.png"), "-o", str(inputs)])
    assert result.exit_code == 1 and "overwrite input" in result.output
    assert (inputs / "rgb.png").read_bytes() == before


def test_pixel_budget_refusal_names_the_number(tmp_path, stub_pipeline):
    inputs = _images(tmp_path / "in")
    result = CliRunner().invoke(
        app, ["restore", str(inputs / "rgb.png"), "-o", str(tmp_path / "out"), "--max-pixels", "100"]
    )
    assert result.exit_code == 1
    assert "399 pixels" in result.output and "100" in result.output


def test_bad_options_are_one_line_errors(tmp_path, stub_pipeline):
    inputs = _images(tmp_path / "in")
    runner = CliRunner()
    result = runner.invoke(app, ["restore", str(inputs), "-o", str(tmp_path / "o"), "--tile", "20"])
    assert result.exit_code == 1 and "sampling.tile=20" in result.output
    result = runner.invoke(
        app, ["restore", str(inputs), "-o", str(tmp_path / "o"), "--task", "x", "--no-prompt"]
    )
    assert result.exit_code == 1 and "--no-prompt" in result.output
    result = runner.invoke(app, ["restore", str(tmp_path / "missing.png"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and "missing.png" in result.output
    result = runner.invoke(app, ["restore", str(inputs), "-o", str(tmp_path / "o"), "--dtype", "bf16"])
    assert result.exit_code == 1 and "--dtype bf16 needs --backend torch --device cuda" in result.output
    result = runner.invoke(app, ["restore", str(inputs), "-o", str(tmp_path / "o"), "--dtype", "fp64"])
    assert result.exit_code == 1 and "unknown --dtype 'fp64'" in result.output
