"""The demo's request logic without Gradio or a model: uploads, task prompts, settings, the download file.

The pipeline here is a stand-in with the ``UniLDiffPipeline`` call signature (a box blur), so these
tests check what the demo does around the model; tests/test_demo_browser.py runs the real model.
"""

from __future__ import annotations

import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from unildiff.demo.examples import example_crops
from unildiff.demo.service import (
    BLIND,
    Settings,
    load_upload,
    prompt_for,
    restore_upload,
    task_choices,
)
from unildiff.errors import ConfigError, DataError
from unildiff.imageio import read_image
from unildiff.pipeline import SamplingConfig

TASKS = {"derain": "remove rain", "denoise_25": "remove noise"}


class BlurPipe:
    """Stand-in with the pipeline's call signature: records each call, returns a 3×3 box blur."""

    tasks = TASKS
    sampling = SamplingConfig(steps=2, color_fix="adaptive", detail_fix_radius=1, seed=7)

    def __init__(self):
        self.calls: list[dict] = []

    def __call__(self, image, prompt="", *, generator=None, output_type="pil", callback=None, **overrides):
        from scipy.ndimage import uniform_filter

        self.calls.append({"image": image, "prompt": prompt, "output_type": output_type, **overrides})
        for done in (1, 2):
            if callback:
                callback(done, 2, "denoise")
        return types.SimpleNamespace(images=[uniform_filter(image, size=(3, 3, 1))])


def test_task_choices_list_every_task_then_blind():
    assert task_choices(TASKS) == [
        ("derain: remove rain", "derain"),
        ("denoise_25: remove noise", "denoise_25"),
        (BLIND, BLIND),
    ]
    assert prompt_for("derain", TASKS) == "remove rain"
    assert prompt_for(BLIND, TASKS) == ""
    with pytest.raises(ConfigError, match="unknown task 'dehaze'"):
        prompt_for("dehaze", TASKS)


def test_settings_start_at_the_recorded_values_and_refuse_fractions():
    recorded = Settings.recorded(BlurPipe.sampling)
    assert recorded.steps == 2 and recorded.seed == 7 and recorded.color_fix == "adaptive"
    assert recorded.detail_fix_radius == 1 and recorded.tile_overlap == BlurPipe.sampling.tile_overlap
    page = {name: float(value) if isinstance(value, int) else value for name, value in vars(recorded).items()}
    assert Settings.from_page(**page) == recorded  # the page's numbers arrive as floats
    with pytest.raises(ConfigError, match=r"sampling\.steps must be a whole number, got 2.5"):
        Settings.from_page(**{**page, "steps": 2.5})


def test_restore_upload_keeps_a_16_bit_greyscale_file_and_reports_progress(tmp_path: Path):
    rng = np.random.default_rng(0)
    source = tmp_path / "scan.png"
    cv2.imwrite(str(source), (rng.random((30, 20)) * 65535).astype(np.uint16))
    pipe, calls = BlurPipe(), []
    settings = Settings.recorded(pipe.sampling)
    result = restore_upload(
        pipe, source, "denoise_25", settings, tmp_path / "out", 1 << 20, lambda *call: calls.append(call)
    )
    assert result.download == tmp_path / "out" / "scan_restored.png"
    written = read_image(result.download)
    assert (written.height, written.width, written.channels, written.bit_depth) == (30, 20, 1, 16)
    expected = BlurPipe()(read_image(source).rgb).images[0]
    assert np.abs(written.rgb - expected).max() <= 1 / 65535  # only 16-bit rounding
    assert pipe.calls[0]["prompt"] == "remove noise" and pipe.calls[0]["seed"] == 7
    assert pipe.calls[0]["steps"] == 2 and pipe.calls[0]["output_type"] == "np"
    assert calls == [(1, 2, "denoise"), (2, 2, "denoise")]
    assert result.before.dtype == np.uint8 and result.before.shape == (30, 20, 3)
    assert "20×30, greyscale, 16-bit" in result.summary and '"remove noise"' in result.summary


def test_bad_uploads_name_the_file_not_the_upload_folder(tmp_path: Path):
    folder = tmp_path / "gradio-upload-3f2a"
    folder.mkdir()
    corrupt = folder / "holiday.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    with pytest.raises(DataError) as error:
        load_upload(corrupt, 1 << 20)
    assert "holiday.png" in str(error.value) and str(folder) not in str(error.value)
    large = folder / "large.png"
    cv2.imwrite(str(large), np.zeros((40, 50, 3), np.uint8))
    with pytest.raises(
        DataError, match=r"large.png has 2000 pixels \(50x40\), above the pixel budget of 1000"
    ):
        load_upload(large, 1000)
    text = folder / "notes.txt"
    text.write_text("hello")
    with pytest.raises(DataError, match=r"unsupported image type '.txt': notes.txt"):
        load_upload(text, 1000)


def test_examples_are_one_test_crop_per_task(tmp_path: Path):
    from unildiff.data.manifest import ManifestRow, manifest_text

    rows = []
    for split, task, prompt, index in [
        ("train", "derain", "remove rain", 0),
        ("test", "derain", "remove rain", 1),
        ("test", "derain", "remove rain", 2),
        ("test", "denoise_25", "remove noise", 3),
    ]:
        for kind in ("lq", "gt"):
            (tmp_path / kind).mkdir(exist_ok=True)
            (tmp_path / kind / f"{index}.png").write_bytes(b"png")
        rows.append(
            ManifestRow(
                str(index), split, task, task, prompt, "s", 8, 8, f"lq/{index}.png", f"gt/{index}.png"
            )
        )
    (tmp_path / "manifest.csv").write_text(manifest_text(rows))
    examples = example_crops(tmp_path, {**TASKS, "dehaze": "remove haze"})
    assert [(example.task, example.lq_path.name, example.gt_path.name) for example in examples] == [
        ("derain", "1.png", "1.png"),
        ("denoise_25", "3.png", "3.png"),
    ]
    assert example_crops(tmp_path / "absent", TASKS) == []


def test_free_text_replaces_the_task_prompt_and_blank_text_keeps_it(tmp_path: Path):
    source = tmp_path / "photo.png"
    cv2.imwrite(str(source), np.full((8, 8, 3), 128, np.uint8))
    pipe = BlurPipe()
    settings = Settings.recorded(pipe.sampling)
    text = "remove the rain streaks from this street photo"
    result = restore_upload(pipe, source, BLIND, settings, tmp_path / "a", 1 << 20, prompt_text=f"  {text} ")
    assert pipe.calls[-1]["prompt"] == text and f'"{text}"' in result.summary
    restore_upload(pipe, source, "derain", settings, tmp_path / "b", 1 << 20, prompt_text="   ")
    assert pipe.calls[-1]["prompt"] == "remove rain"
