"""Seed report: mean ± std over runs, paired bootstrap intervals, issue 12's checks, and the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from unildiff.cli import app
from unildiff.errors import DataError
from unildiff.evaluation.seeds import compare, paired_bootstrap, read_per_image, seed_report, seed_table

TASKS = ("denoise_15", "derain")


def write_run(path: Path, restored_offset: float, images_per_task: int = 6, seed: int = 0) -> Path:
    """A per_image.csv like the evaluate stage's: input, restored, no_diffusion rows."""
    generator = np.random.default_rng(seed)
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(
            ["pair_id", "task", "input_psnr", "input_ssim", "restored_psnr", "restored_ssim"]
            + ["no_diffusion_psnr", "no_diffusion_ssim", "seconds"]
        )
        for task_index, task in enumerate(TASKS):
            for image in range(images_per_task):
                base = 20.0 + task_index + image * 0.5
                noise = generator.normal(0, 0.05)
                writer.writerow(
                    [f"test-{task}-{image:05d}", task, base, 0.5, base + restored_offset + noise, 0.6]
                    + [base + restored_offset - 0.5, 0.55, 1.0]
                )
    return path


def test_seed_table_is_the_mean_and_sample_std_of_the_run_means(tmp_path: Path) -> None:
    runs = [
        read_per_image(write_run(tmp_path / f"s{i}.csv", offset), f"s{i}")
        for i, offset in enumerate((1, 2, 3))
    ]
    table = seed_table(runs, "psnr")
    run_means = [seed_table([run], "psnr")["restored"]["avg"]["mean"] for run in runs]
    assert table["restored"]["avg"]["mean"] == pytest.approx(np.mean(run_means))
    assert table["restored"]["avg"]["std"] == pytest.approx(np.std(run_means, ddof=1))
    assert table["restored"]["avg"]["std"] == pytest.approx(1.0, abs=0.05)
    assert table["input"]["derain"]["std"] == 0.0
    assert set(table["input"]) == {*TASKS, "avg"}


def test_paired_bootstrap_covers_the_mean_and_separates_a_clear_difference() -> None:
    generator = np.random.default_rng(1)
    clear = paired_bootstrap(generator.normal(0.5, 0.1, size=40))
    assert clear.low < clear.mean < clear.high and clear.excludes_zero and clear.low > 0.4
    none = paired_bootstrap(generator.normal(0.0, 1.0, size=40))
    assert none.low < 0 < none.high and not none.excludes_zero
    with pytest.raises(DataError, match="at least 2 images"):
        paired_bootstrap(np.array([1.0]))


def test_compare_against_a_trained_ablation_pairs_images_by_id(tmp_path: Path) -> None:
    full = [read_per_image(write_run(tmp_path / "full.csv", 1.0), "full")]
    ablation = [read_per_image(write_run(tmp_path / "ablation.csv", 0.2, seed=5), "ablation")]
    interval = compare(full, "restored", "restored", "psnr", reference_runs=ablation)
    assert interval is not None and interval.mean == pytest.approx(0.8, abs=0.06) and interval.excludes_zero
    assert compare(full, "restored", "ceiling", "psnr") is None


def test_report_checks_fail_when_restoration_is_worse_than_the_input(tmp_path: Path) -> None:
    good = [read_per_image(write_run(tmp_path / f"g{i}.csv", 1.0, seed=i), f"g{i}") for i in range(3)]
    _, payload = seed_report(good, draws=500)
    assert payload["checks"] and all(payload["checks"].values())
    bad = good[:2] + [read_per_image(write_run(tmp_path / "b.csv", -0.5), "b")]
    markdown, payload = seed_report(bad, draws=500)
    assert not payload["checks"]["b: restored > input in average psnr"]
    assert "FAIL: b: restored > input in average psnr" in markdown


def test_read_per_image_names_the_broken_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_per_image(tmp_path / "missing.csv", "missing")
    broken = tmp_path / "broken.csv"
    broken.write_text("pair_id,task,restored_psnr\ntest-a,denoise_15,abc\n")
    with pytest.raises(DataError, match="restored_psnr of test-a is not a number"):
        read_per_image(broken, "broken")
    other = tmp_path / "other.csv"
    other.write_text("pair_id,task,restored_psnr\ntest-b,denoise_15,20\n")
    first = tmp_path / "first.csv"
    first.write_text("pair_id,task,restored_psnr\ntest-a,denoise_15,20\n")
    with pytest.raises(DataError, match="no image has restored_psnr in every run"):
        seed_table([read_per_image(first, "first"), read_per_image(other, "other")], "psnr")


def test_cli_writes_both_reports_and_refuses_a_bad_ablation(tmp_path: Path) -> None:
    runs = [str(write_run(tmp_path / f"seed{i}.csv", 1.0 + 2.0 * i, seed=i)) for i in range(2)]
    (tmp_path / "no_daem").mkdir()
    ablation = write_run(tmp_path / "no_daem" / "seed1.csv", 2.5)
    output, json_output = tmp_path / "out" / "seeds.md", tmp_path / "out" / "seeds.json"
    arguments = ["seed-report", *runs, "--ablation", f"no_daem={ablation}", "--draws", "200"]
    result = CliRunner().invoke(app, [*arguments, "--output", str(output), "--json-output", str(json_output)])
    assert result.exit_code == 0, result.output
    payload = json.loads(json_output.read_text())
    assert payload["runs"] == ["seed0", "seed1"]
    # Paired with the full run of the same seed (seed1: +3.0), not the mean of both seeds (+2.0).
    (interval,) = [
        item
        for item in payload["intervals"]
        if item["reference"] == "no_daem (trained, seed1)" and item["metric"] == "psnr"
    ]
    assert interval["mean"] == pytest.approx(0.5, abs=0.06)
    assert "restored − no_daem (trained, seed1)" in output.read_text()
    result = CliRunner().invoke(app, ["seed-report", *runs, "--ablation", "no_daem"])
    assert result.exit_code == 1 and "NAME=CSV" in result.output
    stray = write_run(tmp_path / "no_daem" / "seed7.csv", 2.5)
    result = CliRunner().invoke(app, ["seed-report", *runs, "--ablation", f"no_daem={stray}"])
    assert result.exit_code == 1 and "['seed7'] have no full-model run" in result.output


def test_report_tables_each_trained_ablation_over_its_own_runs(tmp_path: Path) -> None:
    runs = [read_per_image(write_run(tmp_path / f"seed{i}.csv", 2.0, seed=i), f"seed{i}") for i in range(2)]
    ablation = [
        read_per_image(write_run(tmp_path / f"rsa{i}.csv", 1.0 + i, seed=i), f"rsa:seed{i}") for i in range(2)
    ]
    markdown, payload = seed_report(runs, {"rsa": ablation}, draws=200)
    rsa = payload["ablations"]["rsa"]["psnr"]["avg"]
    # offsets 1 and 2 over the same inputs: mean offset 1.5, sample std of (1, 2) = 0.707
    full = seed_table(runs, "psnr")["restored"]["avg"]["mean"]
    assert rsa["mean"] == pytest.approx(full - 0.5, abs=0.05)
    assert rsa["std"] == pytest.approx(0.707, abs=0.05) and rsa["runs"] == 2
    row = next(line for line in markdown.splitlines() if line.startswith("| rsa |"))
    assert f"{rsa['mean']:.2f} ± {rsa['std']:.2f}" in row and "| 2 |" in row
    assert "| full model | 2 |" in markdown
