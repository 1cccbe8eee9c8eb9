"""``unildiff.params``: params.yaml read as YAML 1.2 (what DVC writes) into strictly typed dataclasses."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.smoke_repo import REPO_ROOT
from unildiff.bench.config import BenchConfig
from unildiff.data.config import DataConfig
from unildiff.data.validate_config import ValidateConfig
from unildiff.errors import ConfigError
from unildiff.evaluation.evaluate import EvaluateConfig
from unildiff.export.config import ExportConfig, TensorRTConfig
from unildiff.gate import GateConfig
from unildiff.models.config import DAEMConfig, DAFFConfig, PriorConfig
from unildiff.params import build, load_section, parse_yaml, read_params
from unildiff.pipeline import SamplingConfig
from unildiff.start import StartConfig
from unildiff.training.config import (
    PriorTrainConfig,
    Stage1aConfig,
    Stage1bConfig,
    Stage2Config,
    TrainConfig,
)

#: The dataclass each params.yaml section is built into (by its stage, or by the CLI for ``gate``).
SECTIONS = {
    "data": DataConfig,
    "validate": ValidateConfig,
    "prior": PriorConfig,
    "daff": DAFFConfig,
    "daem": DAEMConfig,
    "train": TrainConfig,
    "prior_train": PriorTrainConfig,
    "stage1a": Stage1aConfig,
    "stage1b": Stage1bConfig,
    "stage2": Stage2Config,
    "start": StartConfig,
    "sampling": SamplingConfig,
    "evaluate": EvaluateConfig,
    "gate": GateConfig,
    "export": ExportConfig,
    "bench": BenchConfig,
    "tensorrt": TensorRTConfig,
}
#: Plain words that YAML 1.1 (PyYAML) reads as booleans; DVC (YAML 1.2) writes them without quotes.
YAML_1_1_BOOLEANS = re.compile(r"(?i)^(y|n|yes|no|on|off)$")


def _dvc_rewrite(source: Path, destination: Path, overrides: list[str]) -> Path:
    """What ``dvc exp run -S`` does to a params file: DVC's own Hydra override + ruamel round trip."""
    from dvc.utils.hydra import apply_overrides

    if source != destination:
        shutil.copyfile(source, destination)
    apply_overrides(destination, overrides)
    return destination


def _strings(value: object, path: str = ""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")
    elif isinstance(value, str):
        yield path, value


def test_every_section_has_a_dataclass() -> None:
    assert set(read_params(REPO_ROOT / "params.yaml")) == set(SECTIONS)


def test_params_survive_a_dvc_rewrite_unchanged(tmp_path: Path) -> None:
    original = read_params(REPO_ROOT / "params.yaml")
    rewritten_file = _dvc_rewrite(
        REPO_ROOT / "params.yaml", tmp_path / "params.yaml", ["stage2.lambda2=0.02"]
    )
    rewritten = read_params(rewritten_file)
    for section, cls in SECTIONS.items():
        before, after = load_section(section, cls, original), load_section(section, cls, rewritten)
        if section == "stage2":
            assert after == dataclasses.replace(before, lambda2=0.02)
        else:
            assert after == before, section


def test_successive_dvc_rewrites_keep_params_yaml_valid(tmp_path: Path) -> None:
    # A seed run, then a trained ablation in the same workspace (docs/evaluation.md): DVC's second
    # rewrite of a list that had a comment after it on its line merged the next lines of params.yaml
    # ("seed: 1 mixed_precision: fp32") and every later command failed. Comments go above lists.
    rewritten = REPO_ROOT / "params.yaml"
    for step, overrides in enumerate(
        (
            ["train.seed=1"],
            ["evaluate.split=val", "evaluate.ablations=[no_diffusion,ceiling]"],
            ["evaluate.split=test", "daem.up_blocks=[]", "evaluate.ablations=[]", "bench.sizes=[64]"],
            ["daem.up_blocks=[1, 2]", "daff.fusion=false", "evaluate.metrics=[psnr, ssim]"],
        )
    ):
        rewritten = _dvc_rewrite(rewritten, tmp_path / f"params{step}.yaml", overrides)
    params = read_params(rewritten)
    assert load_section("train", TrainConfig, params).seed == 1
    assert load_section("train", TrainConfig, params).mixed_precision == "fp32"
    assert load_section("daem", DAEMConfig, params).up_blocks == (1, 2)
    assert load_section("daff", DAFFConfig, params).fusion is False
    assert load_section("bench", BenchConfig, params).sizes == (64,)
    assert load_section("evaluate", EvaluateConfig, params).ablations == ()
    assert load_section("evaluate", EvaluateConfig, params).metrics == ("psnr", "ssim")


def test_no_param_value_is_a_yaml_1_1_boolean_word() -> None:
    # Unambiguous values: even a YAML 1.1 reader of params.yaml (a user's script, an old tool) cannot see
    # a boolean where a string is meant, however DVC quotes it.
    words = [(path, value) for path, value in _strings(read_params(REPO_ROOT / "params.yaml"))]
    assert words, "no string params found"
    assert [(path, value) for path, value in words if YAML_1_1_BOOLEANS.match(value)] == []


def test_yaml_1_2_words_stay_strings_where_pyyaml_sees_booleans() -> None:
    text = "section:\n  a: no\n  b: yes\n  c: off\n  d: on\n  e: 1e-4\n  f: 5.0e-5\n  g: true\n"
    assert parse_yaml(text, "x")["section"] == {
        "a": "no", "b": "yes", "c": "off", "d": "on", "e": 1e-4, "f": 5e-5, "g": True
    }  # fmt: skip
    assert yaml.safe_load(text)["section"]["a"] is False  # the YAML 1.1 reading this module avoids


def test_dvc_written_no_is_the_string_no(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text('train:\n  resume: "auto"\n  seed: 0\n')
    _dvc_rewrite(params, params, ["train.resume=no", "train.seed=1"])
    assert re.search(r"^  resume: no$", params.read_text(), re.MULTILINE), params.read_text()
    assert read_params(params)["train"] == {"resume": "no", "seed": 1}
    with pytest.raises(ConfigError, match=r"train\.resume must be one of"):
        load_section("train", TrainConfig, path=params)


@dataclasses.dataclass(frozen=True)
class _Example:
    name: str
    count: int
    rate: float = 0.5
    enabled: bool = False
    sizes: tuple[int, ...] = (1,)
    root: Path = Path(".")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"name": False, "count": 1}, r"^example\.name must be str, got the boolean False$"),
        ({"name": "a", "count": True}, r"^example\.count must be int, got the boolean True$"),
        ({"name": "a", "count": 1, "rate": True}, r"^example\.rate must be float"),
        ({"name": "a", "count": 1.5}, r"^example\.count must be int, got 1\.5$"),
        ({"name": "a", "count": 1, "enabled": "no"}, r"^example\.enabled must be bool, got 'no'$"),
        ({"name": "a", "count": 1, "sizes": [1, "2"]}, r"^example\.sizes\[1\] must be int"),
        ({"name": "a", "count": 1, "sizes": 3}, r"^example\.sizes must be a list"),
        ({"name": "a", "count": 1, "root": 3}, r"^example\.root must be a path"),
        ({"name": "a", "count": 1, "colour": 1}, r"^unknown param example\.colour \(valid: "),
        ({"name": "a"}, r"^param example\.count is required$"),
        (["name"], r"^example must be a mapping"),
    ],
)
def test_wrong_values_name_the_param(values: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build(_Example, values, "example")


def test_values_are_converted_only_where_lossless() -> None:
    example = build(_Example, {"name": "a", "count": 2, "rate": 1, "sizes": [3, 4], "root": "d"}, "example")
    assert example == _Example("a", 2, 1.0, False, (3, 4), Path("d"))
    assert isinstance(example.rate, float)


def test_stage_error_is_one_line_naming_the_param(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  mixed_precision: false\n")
    with pytest.raises(ConfigError, match=r"^train\.mixed_precision must be str, got the boolean False$"):
        load_section("train", TrainConfig, path=params)
    with pytest.raises(ConfigError, match=r"has no section 'stage2'$"):
        load_section("stage2", Stage2Config, path=params)
    params.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML: ") as error:
        read_params(params)
    assert "\n" not in str(error.value)


def test_gate_section_is_read_by_the_cli_with_the_same_loader(tmp_path: Path) -> None:
    from unildiff.cli.evaluate import read_gate_config
    from unildiff.gate import GateRule

    gate = read_gate_config(REPO_ROOT / "params.yaml")
    assert gate.rules and all(isinstance(rule, GateRule) for rule in gate.rules)
    params = tmp_path / "params.yaml"
    params.write_text("gate:\n  rules:\n    - {metric: a.b, direction: lower, tolerance: 1, colour: red}\n")
    with pytest.raises(ConfigError, match=r"^unknown param gate\.rules\[0\]\.colour"):
        read_gate_config(params)
    params.write_text("gate:\n  rules:\n    - {metric: a.b, direction: lower, tolerance: 1}\n")
    assert read_gate_config(params).rules == (GateRule("a.b", "lower", 1.0),)
