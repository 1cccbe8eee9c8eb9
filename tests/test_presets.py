"""The ``sdxl`` preset resolves, through DVC's own params writer, to the paper's settings and its choices.

``python -m presets sdxl --sdxl-path DIR`` runs ``dvc exp run`` with one ``-S`` per key of
``presets/sdxl.yaml``. Here those ``-S`` values go through ``dvc.utils.hydra.apply_overrides`` (what
``dvc exp run -S`` calls) into a copy of params.yaml, which is then read by the stages' loader.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from presets import exp_run_command, flatten, load_preset, render_value, set_params
from tests.smoke_repo import REPO_ROOT
from unildiff.data.config import DataConfig
from unildiff.errors import ConfigError
from unildiff.evaluation.evaluate import EvaluateConfig
from unildiff.models.config import DAEMConfig, DAFFConfig, PriorConfig
from unildiff.params import load_section, read_params
from unildiff.pipeline import SamplingConfig
from unildiff.start import StartConfig
from unildiff.training.config import Stage1aConfig, Stage1bConfig, Stage2Config, TrainConfig

SDXL_PATH = "/models/stable-diffusion-xl-base-1.0"
#: What the paper states (supplement §2.2 and the paper's implementation details; λ2 from the supplement's
#: load-balancing section, §1).
PAPER = {
    "crop size": 512,
    "stage 2 crop size": 512,
    "random crops drawn every step": True,
    "stage 1a iterations": 6000,
    "stage 1b iterations": 40000,
    "stage 2 iterations": 10000,
    "stage 1a lr (DAFF)": 5e-5,
    "stage 1b lr (LQ encoder)": 5e-6,
    "stage 1b lr (DAFF + UNet)": 1e-5,
    "stage 1a global batch": 64,
    "stage 1b global batch": 64,
    "stage 2 global batch": 64,
    "sampler": "euler",
    "sampling steps": 20,
    "sampling start": "noise",
    "cfg": 5.0,
    "prompt drop": 0.2,
    "lambda2": 0.01,
    "DAEM routes per local window": True,
    "fixes against the LQ (colour, detail radius)": ("none", 0),  # the paper describes none
    "DAFF (LQ normalised, LQ residual)": (False, False),  # DAFF as described, without the tiny-only paths
    "DAFF multi-scale f^LQ": True,  # Fig. 2: "multi-scale features f^LQ"
}

#: Where the paper is silent, the preset's choices (docs/presets.md gives each reason): the stage-2 rate
#: (one for decoder and DAEM), what stage 2 decodes, λ1, the data unweighted (no tiny colour balance),
#: the DAEM routing window (the paper routes by local context without a size), evaluation on cuda, the
#: f^LQ scales (the paper says "multi-scale" without naming the maps).
CHOICES = {
    "stage 2 lr (decoder + DAEM)": (1e-4, 1e-4),
    "stage 2 decodes": "clean",
    "lambda1": 0.2,
    "colour source weight": 1,
    "DAEM window (output pixels)": 16,
    "evaluation device": "cuda",
    "prior": ("sdxl", SDXL_PATH),
    "f^LQ scales (H/8, H/4, H/2)": 3,
}


def _resolve(tmp_path: Path) -> dict:
    from dvc.utils.hydra import apply_overrides

    params_file = shutil.copyfile(REPO_ROOT / "params.yaml", tmp_path / "params.yaml")
    apply_overrides(params_file, set_params("sdxl", {"prior.sdxl_path": SDXL_PATH}))
    params = read_params(params_file)
    train = load_section("train", TrainConfig, params)
    stage1a = load_section("stage1a", Stage1aConfig, params)
    stage1b = load_section("stage1b", Stage1bConfig, params)
    stage2 = load_section("stage2", Stage2Config, params)
    sampling = load_section("sampling", SamplingConfig, params)
    prior = load_section("prior", PriorConfig, params)
    data = load_section("data", DataConfig, params)
    daff = load_section("daff", DAFFConfig, params)
    daem = load_section("daem", DAEMConfig, params)
    # No train.accelerate_config: one process, so the global batch is batch_size x accumulation.
    assert train.accelerate_config == ""
    processes = 1

    def global_batch(stage) -> int:
        return stage.batch_size * train.accumulation_steps(stage.batch_size, processes) * processes

    return {
        "crop size": train.crop_size,
        "stage 2 crop size": stage2.crop_size,
        # The cached crop (or the whole built-in patch) is larger, so the crop moves every step.
        "random crops drawn every step": min(train.cache_crop_size or data.patch_size, data.patch_size)
        > train.crop_size,
        "stage 1a iterations": stage1a.steps,
        "stage 1b iterations": stage1b.steps,
        "stage 2 iterations": stage2.steps,
        "stage 1a lr (DAFF)": stage1a.lr,
        "stage 1b lr (LQ encoder)": stage1b.lr_lq_encoder,
        "stage 1b lr (DAFF + UNet)": stage1b.lr_denoiser,
        "stage 2 lr (decoder + DAEM)": (stage2.lr * stage2.decoder_lr_scale, stage2.lr),
        "stage 1a global batch": global_batch(stage1a),
        "stage 1b global batch": global_batch(stage1b),
        "stage 2 global batch": global_batch(stage2),
        "sampler": sampling.scheduler,
        "sampling steps": sampling.steps,
        "sampling start": load_section("start", StartConfig, params).mode,
        "cfg": sampling.cfg,
        "fixes against the LQ (colour, detail radius)": (sampling.color_fix, sampling.detail_fix_radius),
        "prompt drop": train.prompt_dropout,
        "lambda1": stage2.lambda1,
        "lambda2": stage2.lambda2,
        "stage 2 decodes": stage2.latent_source,
        "DAFF (LQ normalised, LQ residual)": (daff.normalize_lq, daff.lq_residual),
        "DAFF multi-scale f^LQ": daff.lq_scales > 1,
        "f^LQ scales (H/8, H/4, H/2)": daff.lq_scales,
        "colour source weight": data.colour_source_weight,
        "DAEM routes per local window": daem.window > 0,
        "DAEM window (output pixels)": daem.window,
        "evaluation device": load_section("evaluate", EvaluateConfig, params).device,
        "prior": (prior.preset, prior.sdxl_path),
    }


def test_sdxl_preset_resolves_to_the_papers_settings_and_its_choices(tmp_path: Path) -> None:
    resolved = _resolve(tmp_path)
    print("\nsdxl preset, as the stages read it after `dvc exp run -S` | expected")
    for source, expected in (("paper", PAPER), ("choice", CHOICES)):
        for name, value in expected.items():
            print(f"  {name:<44} {resolved[name]!s:<40} {value} ({source})")
    assert resolved == {**PAPER, **CHOICES}


def _tiny_only_params(path: Path) -> list[str]:
    """``section.key`` of every value of params file ``path`` whose own line's comment says ``tiny only``."""
    from ruamel.yaml import YAML

    marked = []
    for section, values in YAML().load(path.read_text()).items():
        for key in values if hasattr(values, "ca") else ():
            tokens = values.ca.items.get(key) or []
            same_line = [token.value.split("\n")[0] for token in tokens if hasattr(token, "value")]
            if any(re.search(r"(?i)tiny[- ]only", comment) for comment in same_line):
                marked.append(f"{section}.{key}")
    return marked


def test_the_preset_resets_every_tiny_only_param() -> None:
    # DESIGN: every tiny deviation is a named param marked tiny-only, and the sdxl preset keeps the paper's
    # setting. prior_train is read by the tiny prior's training only (sdxl links a prior, trains nothing).
    marked = [
        key for key in _tiny_only_params(REPO_ROOT / "params.yaml") if not key.startswith("prior_train.")
    ]
    preset = {key for key, _ in flatten(load_preset("sdxl"))}
    assert [key for key in marked if key not in preset] == []


def test_tiny_only_marks_are_read_from_each_values_own_line(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(
        "a:\n  x: 1  # tiny only: why\n  y: 2  # paper\n\n# tiny-only block below\nb:\n  z: 3\n"
    )
    assert _tiny_only_params(params) == ["a.x"]


def test_tiny_params_are_not_the_papers(tmp_path: Path) -> None:
    # The preset must change these: params.yaml holds the CPU-sized tiny schedule.
    params = read_params(REPO_ROOT / "params.yaml")
    assert params["prior"]["preset"] == "tiny"
    assert params["train"]["crop_size"] != PAPER["crop size"]
    assert params["stage1b"]["steps"] != PAPER["stage 1b iterations"]


def test_every_preset_key_is_a_param(tmp_path: Path) -> None:
    params = read_params(REPO_ROOT / "params.yaml")
    for key, _ in flatten(load_preset("sdxl")):
        section, name = key.split(".")
        assert name in params.get(section, {}), f"presets/sdxl.yaml sets {key}, which params.yaml lacks"


@pytest.mark.parametrize(
    "value",
    ["noise", "/a b/c", 'say "hi"', "true", "null", "1.0", "C:\\x", "end\\", "", 5e-5, 1e-4, 0, True, [1, 2]],
)
def test_rendered_values_read_back_unchanged_through_dvc(tmp_path: Path, value: object) -> None:
    from dvc.utils.hydra import apply_overrides

    params_file = tmp_path / "params.yaml"
    params_file.write_text("section:\n  key: 0\n")
    apply_overrides(params_file, [f"section.key={render_value(value)}"])
    assert read_params(params_file)["section"]["key"] == value


def test_the_command_line_prints_the_dvc_command() -> None:
    command = [
        sys.executable,
        "-m",
        "presets",
        "sdxl",
        "--sdxl-path",
        "/s d/x",
        "--print",
        "--",
        "-n",
        "paper",
    ]
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr
    expected = exp_run_command("sdxl", {"prior.sdxl_path": "/s d/x"}, ["-n", "paper"])
    assert completed.stdout.strip() == shlex.join(expected)
    assert expected[:7] == ["dvc", "exp", "run", "-S", 'prior.sdxl_path="/s d/x"', "-S", "prior.preset=sdxl"]
    missing = subprocess.run(command[:4] + ["--print"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert missing.returncode == 1 and missing.stderr.strip() == (
        "error: preset sdxl needs --sdxl-path (a diffusers SDXL directory)"
    )


def test_unknown_preset_names_the_available_ones() -> None:
    with pytest.raises(ConfigError, match=r"^unknown preset 'huge' \(available: sdxl\)$"):
        load_preset("huge")


def test_the_documented_command_is_the_presets_command() -> None:
    docs = (REPO_ROOT / "docs" / "presets.md").read_text()
    assert "python -m presets sdxl --sdxl-path /path/to/stable-diffusion-xl-base-1.0" in docs
    readme = (REPO_ROOT / "README.md").read_text()
    assert "python -m presets sdxl --sdxl-path" in readme
