"""Scoring a named folder of pairs (library side): scores, the two reports, names and failures."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unildiff.data.readers import read_named_pairs
from unildiff.errors import ConfigError, DataError
from unildiff.evaluation.metrics import MetricSuite
from unildiff.evaluation.named import named_reports_dir, score_named_pairs, write_named_reports


def _pairs_folder(root: Path, count: int = 3) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``root/input`` + ``root/target``: smooth gts, lq = gt + noise σ 20/255; uint8 arrays by name."""
    rng = np.random.default_rng(0)
    images = {}
    for index in range(count):
        ramp = np.linspace(40, 200, 24)[None, :, None] + 10 * index
        gt = np.broadcast_to(ramp, (20, 24, 3)).astype(np.uint8)
        lq = np.clip(gt + rng.normal(0, 20, gt.shape), 0, 255).round().astype(np.uint8)
        name = f"photo{index}"
        for side, array in (("input", lq), ("target", gt)):
            (root / side).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / side / f"{name}.png")
        images[name] = (lq, gt)
    return images


def _psnr(first: np.ndarray, second: np.ndarray) -> float:
    error = np.mean((first.astype(np.float64) - second.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / error))


def _blur(lq: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A 5x5 box filter (reflect padded): a 'model' that removes most of the noise of a smooth image."""
    padded = torch.nn.functional.pad(lq, (2, 2, 2, 2), mode="reflect")
    return torch.nn.functional.avg_pool2d(padded, 5, stride=1)


def test_scores_and_reports(tmp_path: Path) -> None:
    images = _pairs_folder(tmp_path / "set")
    pairs = read_named_pairs(tmp_path / "set")
    result = score_named_pairs(pairs, _blur, MetricSuite(["psnr"]), "smooth", show_progress=False)
    directory = named_reports_dir("smooth", tmp_path / "reports")
    payload = write_named_reports(result, directory, tmp_path / "set")

    assert directory == tmp_path / "reports/named/smooth"
    assert sorted(path.name for path in directory.iterdir()) == ["metrics.json", "per_image.csv"]
    assert json.loads((directory / "metrics.json").read_text()) == payload
    assert payload["pairs_dir"] == str(tmp_path / "set") and payload["num_images"] == 3
    rows = list(csv.DictReader((directory / "per_image.csv").open()))
    assert [row["pair_id"] for row in rows] == ["photo0", "photo1", "photo2"]
    assert {row["task"] for row in rows} == {"smooth"}
    for row in rows:  # the input row is the PSNR of the files themselves
        lq, gt = images[row["pair_id"]]
        assert float(row["input_psnr"]) == pytest.approx(_psnr(lq, gt), abs=0.05)
    inputs = [float(row["input_psnr"]) for row in rows]
    restored = [float(row["restored_psnr"]) for row in rows]
    assert payload["input"]["avg"]["psnr"] == pytest.approx(np.mean(inputs), abs=1e-4)
    assert payload["restored"]["avg"]["psnr"] == pytest.approx(np.mean(restored), abs=1e-4)
    assert payload["restored"]["per_task"]["smooth"] == payload["restored"]["avg"]
    assert min(restored) > max(inputs) + 5.0  # the blur removes noise from smooth ramps


def test_the_same_restorer_twice_gives_the_same_numbers(tmp_path: Path) -> None:
    _pairs_folder(tmp_path / "set", count=2)
    pairs = read_named_pairs(tmp_path / "set")

    def noisy(lq: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return lq + 0.05 * torch.randn(lq.shape, generator=generator)

    first, second = (
        score_named_pairs(pairs, noisy, MetricSuite(["psnr"]), "s", seed=7, show_progress=False)
        for _ in range(2)
    )
    assert [record.scores for record in first.records] == [record.scores for record in second.records]


def test_a_size_mismatch_names_both_files_and_writes_nothing(tmp_path: Path) -> None:
    _pairs_folder(tmp_path / "set")
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "set/target/photo1.png")
    pairs = read_named_pairs(tmp_path / "set")
    with pytest.raises(
        DataError, match=r"size mismatch: lq .*input/photo1\.png is 24x20, gt .*photo1\.png is 10x10"
    ):
        score_named_pairs(pairs, _blur, MetricSuite(["psnr"]), "s", show_progress=False)


def test_a_failure_while_writing_keeps_the_old_reports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pairs_folder(tmp_path / "set")
    pairs = read_named_pairs(tmp_path / "set")
    result = score_named_pairs(pairs, _blur, MetricSuite(["psnr"]), "s", show_progress=False)
    directory = named_reports_dir("s", tmp_path / "reports")
    write_named_reports(result, directory, tmp_path / "set")
    before = (directory / "metrics.json").read_text()

    def broken(result: object) -> str:  # fails after metrics.json is written
        raise OSError("disk full")

    monkeypatch.setattr("unildiff.evaluation.named.per_image_csv", broken)
    result.records[0].scores["restored"]["psnr"] = 99.0
    with pytest.raises(OSError, match="disk full"):
        write_named_reports(result, directory, tmp_path / "set")
    assert (directory / "metrics.json").read_text() == before
    assert sorted(path.name for path in directory.parent.iterdir()) == ["s"]  # no temporary left


@pytest.mark.parametrize("name", ["", "../up", "a/b", ".hidden", "-x"])
def test_a_name_that_is_not_a_folder_name_is_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--name .* must be a folder name"):
        named_reports_dir(name, tmp_path)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--pairs", "SET"], "--pairs DIR and --name NAME go together"),
        (["--name", "x"], "--pairs DIR and --name NAME go together"),
        (["--pairs", "SET", "--name", "../x"], "--name '../x' must be a folder name"),
        (["--pairs", "SET", "--name", "x", "--task", "t", "--prompt", "p"], "--task and --prompt exclude"),
        (["--pairs", "NOWHERE", "--name", "x"], "--pairs: folder not found"),
    ],
)
def test_the_command_refuses_bad_arguments_before_opening_a_model(
    tmp_path: Path, arguments: list[str], message: str
) -> None:
    from typer.testing import CliRunner

    from unildiff.cli import app

    _pairs_folder(tmp_path / "set", count=1)
    given = [str(tmp_path / "set") if item == "SET" else str(tmp_path / item) if item == "NOWHERE" else item
             for item in arguments]  # fmt: skip
    model = tmp_path / "no_model"  # never opened: every refusal comes first
    result = CliRunner().invoke(app, ["evaluate", *given, "--model", str(model), "--metric", "psnr"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("error: ") and message in result.output
