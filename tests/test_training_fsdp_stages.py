"""Stages 1a, 1b and 2 with their real modules and objectives under FSDP2: 2 CPU processes over gloo, on
the small SDXL-layout prior of ``test_dvc_exp_sdxl.py``, launched as a user launches them
(``train.accelerate_config`` names an FSDP config; the stage re-runs itself under ``accelerate launch``).

``fsdp_min_num_params`` is 50 000, a thousandth of the shipped configs' 50 M, so the modules that are
shard units at SDXL size are units here too: the frozen VAE (84 M at SDXL size), the UNet and its
large blocks, the DAEM decoder; DAFF's blocks are units as well at these widths.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.fsdp_workspace import (
    CPU_FSDP_CONFIG,
    REPO_ROOT,
    build_workspace,
    launch_stage,
    set_params,
    write_upstream_outputs,
)

pytestmark = pytest.mark.slow

MIN_NUM_PARAMS = 50_000
STEPS, KILL_AT = 4, 2
# stage -> (its output folder, {delivered module: its prefix in the objective's state})
OUTPUTS = {
    "stage1a": ("models/stage1a", {"daff": "denoiser.daff."}),
    "stage1b": (
        "models/stage1b",
        {"lq_encoder": "lq_encoder.", "daff": "denoiser.daff.", "unet": "denoiser.unet."},
    ),
    "stage2": ("models/stage2", {"decoder": "decoder."}),
}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = build_workspace(tmp_path_factory.mktemp("fsdp_stages") / "base")
    (root / "fsdp.yaml").write_text(CPU_FSDP_CONFIG.format(min_num_params=MIN_NUM_PARAMS))
    batch = {"steps": STEPS, "batch_size": 2}
    set_params(
        root,
        train={
            "accelerate_config": "fsdp.yaml",
            "checkpoint_every": KILL_AT,
            "log_every": 1,
            "crop_size": 32,
            "gradient_accumulation_steps": 2,
            "max_grad_norm": 1.0,
        },
        stage1a=batch,
        stage1b=batch,
        stage2={**batch, "crop_size": 32},
    )
    write_upstream_outputs(root)
    return root


def _copy(workspace: Path, destination: Path, stage: str) -> Path:
    shutil.copytree(workspace, destination)
    shutil.rmtree(destination / OUTPUTS[stage][0], ignore_errors=True)  # the upstream outputs stay
    return destination


def test_stage_objectives_shard_each_parameter_once_and_match_the_unsharded_step(workspace: Path) -> None:
    """``tests/fsdp_stage_check.py`` on 2 processes: units, shared VAE, one step against the unsharded
    objective, frozen weights, delivered weights against the shards (its docstring lists the checks)."""
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "fsdp.yaml"]
    completed = subprocess.run(
        [*command, str(REPO_ROOT / "tests" / "fsdp_stage_check.py"), str(workspace)],
        cwd=workspace, env=environment, capture_output=True, text=True, timeout=600, check=False,
    )
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-6000:]
    results = json.loads((workspace / "fsdp_check.json").read_text())
    stage1b, stage2 = results["stage1b"]["units"], results["stage2"]["units"]
    assert "vae" in stage1b and "denoiser.unet" in stage1b and "denoiser.unet.down_blocks.2" in stage1b
    # the VAE both stage-2 parts hold is one unit, named by its first path, before both parents
    assert "skip_encoder.vae" in stage2 and "latents.vae" not in stage2
    assert stage2.index("skip_encoder.vae") < min(stage2.index("skip_encoder"), stage2.index("latents"))
    assert "decoder" in stage2
    for units in (stage1b, stage2):  # containers are never units (fully_shard refuses them)
        assert not any(unit.endswith(("down_blocks", "up_blocks", "attentions", "resnets")) for unit in units)
    for name in ("stage1b", "stage2"):
        assert results[name]["saved_parameters_compared"] > 0


def _state(directory: Path) -> tuple[dict, dict, dict]:
    return (
        load_file(str(directory / "model.safetensors")),
        load_file(str(directory / "optimizer.safetensors")),
        json.loads((directory / "state.json").read_text()),
    )


def _delivered(root: Path, stage: str) -> dict[str, dict[str, torch.Tensor]]:
    """The stage's delivered modules, loaded with ``from_pretrained``: name -> state dict."""
    from unildiff.models.daff import DAFF
    from unildiff.models.decoder import DAEMDecoder
    from unildiff.models.lq_encoder import LQEncoder

    classes = {"daff": DAFF, "decoder": DAEMDecoder, "lq_encoder": LQEncoder}
    folder, modules = OUTPUTS[stage]
    loaded = {}
    for name in modules:
        if name == "unet":
            from diffusers import UNet2DConditionModel as cls
        else:
            cls = classes[name]
        assert (root / folder / name / "config.json").is_file()
        loaded[name] = cls.from_pretrained(root / folder / name, use_safetensors=True).state_dict()
    return loaded


@pytest.mark.parametrize("stage", ["stage1a", "stage1b", "stage2"])
def test_stage_under_fsdp_saves_full_weights_and_resumes_bit_for_bit_after_sigkill(
    workspace: Path, tmp_path: Path, stage: str
) -> None:
    straight = _copy(workspace, tmp_path / "straight", stage)
    code, log, _ = launch_stage(straight, stage)
    assert code == 0, log[-6000:]
    assert f"{stage}: FSDP2 units" in log, log[-3000:]
    units = log.split(f"{stage}: FSDP2 units ", 1)[1].split(" (+ the objective)", 1)[0]
    assert ("skip_encoder.vae" if stage == "stage2" else "vae") in units.split(", "), units

    # A run SIGKILLed (every process of it) once the state of step 2 is on disk, then started again.
    killed = _copy(workspace, tmp_path / "killed", stage)
    code, log, killed_at = launch_stage(killed, stage, kill_at_state=KILL_AT)
    assert killed_at is not None and code == -9, log[-3000:]
    assert [path.name for path in (killed / "checkpoints" / stage).iterdir()] == [f"step-{KILL_AT:08d}"]
    assert not (killed / OUTPUTS[stage][0]).exists()
    code, log, _ = launch_stage(killed, stage)
    assert code == 0, log[-6000:]
    assert f"{stage}: resuming from checkpoints/{stage}/step-{KILL_AT:08d} (step {KILL_AT} of {STEPS})" in log

    final = f"step-{STEPS:08d}"
    reference_model, reference_optimizer, reference_json = _state(straight / "checkpoints" / stage / final)
    resumed_model, resumed_optimizer, resumed_json = _state(killed / "checkpoints" / stage / final)
    for resumed, reference in ((resumed_model, reference_model), (resumed_optimizer, reference_optimizer)):
        assert resumed.keys() == reference.keys()
        for name, tensor in reference.items():
            assert torch.equal(resumed[name], tensor), name
    assert resumed_json["optimizer"] == reference_json["optimizer"]
    assert resumed_json["lr_scheduler"] == reference_json["lr_scheduler"]

    # The delivered weights are full (config.json + safetensors, loaded by from_pretrained), equal to the
    # trained parameters of the final state, and identical between the straight and the resumed run.
    delivered, resumed_delivered = _delivered(straight, stage), _delivered(killed, stage)
    for module, prefix in OUTPUTS[stage][1].items():
        state = {key[len(prefix):]: value for key, value in reference_model.items() if key.startswith(prefix)}
        assert state, f"no {prefix}* in the resumable state"
        for key, value in state.items():
            assert torch.equal(delivered[module][key], value), f"{module}.{key}"
        for key, value in delivered[module].items():
            assert torch.equal(resumed_delivered[module][key], value), f"{module}.{key}"
