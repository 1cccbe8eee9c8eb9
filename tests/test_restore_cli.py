"""``unildiff restore`` and ``unildiff tasks`` as typed (CliRunner), on a tiny random model folder."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from unildiff.cli import app


@pytest.fixture
def stub_pipeline(monkeypatch, tmp_path, tiny_model_folder):
    """Work in ``tmp_path`` with the tiny model folder at the default ``models/unildiff``."""
    monkeypatch.chdir(tmp_path)
    Path("models").mkdir()
    Path("models/unildiff").symlink_to(tiny_model_folder)


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
        app, ["restore", str(inputs), "-o", str(tmp_path / "o"), "--task", "derain", "--prompt", "x"]
    )
    assert result.exit_code == 1 and "--task and --prompt exclude each other" in result.output
    result = runner.invoke(app, ["restore", str(inputs), "-o", str(tmp_path / "o"), "--task", "rain"])
    assert result.exit_code == 1 and "unknown task 'rain'" in result.output and "derain" in result.output
    assert not (tmp_path / "o").exists()
    result = runner.invoke(app, ["restore", str(tmp_path / "missing.png"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and "missing.png" in result.output
    result = runner.invoke(app, ["restore", str(inputs), "-o", str(tmp_path / "o"), "--dtype", "bf16"])
    assert result.exit_code == 1 and "--dtype bf16 needs --backend torch --device cuda" in result.output
    result = runner.invoke(app, ["restore", str(inputs), "-o", str(tmp_path / "o"), "--dtype", "fp64"])
    assert result.exit_code == 1 and "unknown --dtype 'fp64'" in result.output


def test_recorded_settings_apply_unless_a_flag_overrides_them(tmp_path, stub_pipeline):
    inputs = _images(tmp_path / "in")
    runner = CliRunner()
    result = runner.invoke(app, ["restore", str(inputs / "rgb.png"), "-o", "a", "--task", "derain"])
    assert result.exit_code == 0, result.output
    settings = [line for line in result.output.splitlines() if line.startswith("sampling: ")]
    assert len(settings) == 1 and "(flag)" not in settings[0] and "models/unildiff" in settings[0]
    assert "cfg=1.0," in settings[0] and "start_timestep=49" in settings[0] and "steps=20," in settings[0]
    assert "prompt: 'remove rain'" in result.output
    result = runner.invoke(app, ["restore", str(inputs / "rgb.png"), "-o", "b", "--cfg", "1.5"])
    assert result.exit_code == 0, result.output
    assert "cfg=1.5 (flag)" in result.output and "blind restoration" in result.output
    assert "denoise_25, derain, dehaze" in result.output  # blind: the tasks are listed


def test_an_untrained_start_is_refused_unless_allowed(tmp_path, stub_pipeline):
    inputs = _images(tmp_path / "in")
    runner = CliRunner()
    result = runner.invoke(app, ["restore", str(inputs / "rgb.png"), "-o", "a", "--steps", "40"])
    assert result.exit_code == 1 and not (tmp_path / "a").exists()
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "steps=40" in error[0] and "--allow-untrained-start" in error[0]
    result = runner.invoke(
        app, ["restore", str(inputs / "rgb.png"), "-o", "a", "--steps", "40", "--allow-untrained-start"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a" / "rgb.png").is_file()


def test_same_pixels_as_the_python_api(tmp_path, stub_pipeline, tiny_model_folder):
    from unildiff import UniLDiffPipeline

    inputs = _images(tmp_path / "in")
    result = CliRunner().invoke(app, ["restore", str(inputs / "rgb.png"), "-o", "a", "--task", "dehaze"])
    assert result.exit_code == 0, result.output
    source = cv2.cvtColor(cv2.imread(str(inputs / "rgb.png")), cv2.COLOR_BGR2RGB)
    expected = UniLDiffPipeline.from_pretrained(tiny_model_folder)(source, "remove haze").images[0]
    restored = cv2.cvtColor(cv2.imread(str(tmp_path / "a" / "rgb.png")), cv2.COLOR_BGR2RGB)
    assert np.abs(restored.astype(int) - np.asarray(expected).astype(int)).max() <= 1


def test_tasks_lists_names_and_prompts(stub_pipeline):
    result = CliRunner().invoke(app, ["tasks"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "denoise_25  remove noise",
        "derain      remove rain",
        "dehaze      remove haze",
    ]
    result = CliRunner().invoke(app, ["tasks", "--model", "nowhere"])
    assert result.exit_code == 1 and "dvc repro package" in result.output
