"""The sampling record: written with the weights by ``evaluate``, read back by ``unildiff restore``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from tests.test_pipeline_sampling import make_pipeline
from unildiff.cli import app
from unildiff.errors import ConfigError, MissingArtifactError
from unildiff.pipeline import SamplingConfig
from unildiff.restore import (
    describe_sampling,
    effective_sampling,
    read_sampling_record,
    write_sampling_record,
)


def _not_default(field: dataclasses.Field):
    """A valid value different from the field's default, whatever fields SamplingConfig has."""
    default = field.default
    if isinstance(default, bool):
        return not default
    if isinstance(default, int):
        return default + 64 if field.name in ("tile", "auto_tile") else default + 1
    if isinstance(default, float):
        return default / 2
    return {"scheduler": "ddim", "start": "noise", "color_fix": "wavelet"}.get(field.name, default)


def test_every_field_round_trips_through_the_record(tmp_path):
    changed = {field.name: _not_default(field) for field in dataclasses.fields(SamplingConfig)}
    config = SamplingConfig(**changed)
    path = write_sampling_record(config, tmp_path / "models" / "sampling.json")
    assert json.loads(path.read_text()) == dataclasses.asdict(config)
    assert read_sampling_record(path) == config
    assert not list(path.parent.glob(".*.tmp"))  # written atomically, nothing left behind


def test_bad_records_are_refused_naming_the_file_and_key(tmp_path):
    path = tmp_path / "sampling.json"
    with pytest.raises(MissingArtifactError, match=r"sampling\.json is missing \(run `dvc repro evaluate`"):
        read_sampling_record(path)
    values = dataclasses.asdict(SamplingConfig())
    path.write_text(json.dumps({**values, "guidance_rescale": 0.7}))
    with pytest.raises(ConfigError, match=r"sampling\.guidance_rescale.*dvc repro evaluate"):
        read_sampling_record(path)
    path.write_text(json.dumps({key: value for key, value in values.items() if key != "cfg"}))
    with pytest.raises(ConfigError, match=r"lacks sampling\.cfg"):
        read_sampling_record(path)
    path.write_text(json.dumps({**values, "steps": "20"}))
    with pytest.raises(ConfigError, match=r"sampling\.steps"):
        read_sampling_record(path)
    path.write_text(json.dumps({**values, "strength": 2.0}))
    with pytest.raises(ConfigError, match=r"sampling\.json: sampling\.strength"):
        read_sampling_record(path)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_sampling_record(path)


def test_flags_override_only_what_they_set():
    recorded = SamplingConfig(steps=20, cfg=3.0, strength=0.1)
    effective = effective_sampling(recorded, {"cfg": 5.0, "steps": None, "strength": None})
    assert effective == dataclasses.replace(recorded, cfg=5.0)
    line = describe_sampling(effective, ["cfg"])
    assert "\n" not in line and "cfg=5.0 (flag)" in line and "strength=0.1," in line
    assert all(f"{field.name}=" in line for field in dataclasses.fields(SamplingConfig))


def _one_image(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "a.png"), np.random.default_rng(0).integers(0, 255, (20, 24, 3), np.uint8))
    return folder / "a.png"


@pytest.fixture
def captured(monkeypatch, tmp_path):
    """Run the CLI in ``tmp_path`` with stand-in graphs; returns the SamplingConfig each run built."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("unildiff.models.bundle.require_trained_model", lambda *folders: {})
    configs: list[SamplingConfig] = []

    def build(backend, sampling, *rest):
        configs.append(sampling)
        return make_pipeline(**dataclasses.asdict(sampling))

    monkeypatch.setattr("unildiff.cli.restore.build_pipeline", build)
    return configs


def test_restore_uses_the_recorded_settings_unless_a_flag_is_given(tmp_path, captured):
    recorded = SamplingConfig(steps=4, cfg=3.0, strength=0.5, seed=7, auto_tile=64)
    write_sampling_record(recorded, tmp_path / "models" / "sampling.json")
    image = _one_image(tmp_path / "in")
    runner = CliRunner()
    result = runner.invoke(app, ["restore", str(image), "-o", "out", "--task", "remove noise"])
    assert result.exit_code == 0, result.output
    assert captured[-1] == recorded  # not the paper's cfg 5 / strength 1.0 CLI defaults of before
    settings = [line for line in result.output.splitlines() if line.startswith("sampling: ")]
    assert len(settings) == 1 and "strength=0.5" in settings[0] and "(flag)" not in settings[0]
    assert "models/sampling.json" in settings[0]
    result = runner.invoke(app, ["restore", str(image), "-o", "out2", "--cfg", "1.5", "--tile", "64"])
    assert result.exit_code == 0, result.output
    assert captured[-1] == dataclasses.replace(recorded, cfg=1.5, tile=64)
    assert "cfg=1.5 (flag)" in result.output and "tile=64 (flag)" in result.output


def test_restore_without_a_record_names_the_stage(tmp_path, captured):
    image = _one_image(tmp_path / "in")
    result = CliRunner().invoke(app, ["restore", str(image), "-o", "out"])
    assert result.exit_code == 1 and "dvc repro evaluate" in result.output
    assert not captured and not (tmp_path / "out").exists()
    other = tmp_path / "elsewhere.json"
    write_sampling_record(SamplingConfig(steps=2), other)
    result = CliRunner().invoke(app, ["restore", str(image), "-o", "out", "--sampling-record", str(other)])
    assert result.exit_code == 0, result.output
    assert captured[-1].steps == 2
