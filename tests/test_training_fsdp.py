# ruff: noqa: E501
"""Sharded training (FSDP2) through the real loop: 2 CPU processes (torchrun + gloo), as in
``test_training_distributed.py``.

accelerate offers FSDP only on accelerators (a CPU ``Accelerator`` is ``MULTI_CPU``), so the script switches
the accelerator state to ``FSDP`` with an FSDP2 plugin by hand; everything after that (``prepare`` calling
``fully_shard``, gathering, the resumable state) is the code a GPU run goes through. torch's FSDP2 runs on
CPU tensors over gloo.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.torchrun import torchrun

pytestmark = pytest.mark.slow


SCRIPT = """
import json, sys
from dataclasses import dataclass
from pathlib import Path
import torch
from diffusers import ModelMixin, ConfigMixin
from diffusers.configuration_utils import register_to_config
from unildiff.training.config import TrainConfig
from unildiff.training.loop import ObjectiveOutput, ParamGroup, TrainingRun, make_accelerator, train
from unildiff.training.sharding import full_weight_modules, is_sharded

@dataclass
class Batch:
    inputs: torch.Tensor
    targets: torch.Tensor

class Data:
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.inputs = torch.randn(32, 4, generator=g)
        self.targets = 5 * torch.tanh(self.inputs @ torch.randn(4, 3, generator=g))
    def __len__(self):
        return 32
    def __call__(self, indices):
        return Batch(self.inputs[indices], self.targets[indices])

class Head(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, width: int = 6, out: int = 3):
        super().__init__()
        self.hidden = torch.nn.Linear(width, width)
        self.proj = torch.nn.Linear(width, out)  # 3 rows over 2 ranks: a padded shard
    def forward(self, x):
        return self.proj(torch.tanh(self.hidden(x)))

class Objective(torch.nn.Module):
    def __init__(self, kill_after):
        super().__init__()
        torch.manual_seed(1)
        self.frozen = torch.nn.Linear(4, 4).requires_grad_(False)
        self.encoder = torch.nn.Linear(4, 6)
        self.head = Head()
        self.kill_after, self.calls = kill_after, 0
    def forward(self, batch, generator):
        self.calls += 1
        if self.kill_after is not None and self.calls > self.kill_after:
            raise KeyboardInterrupt("killed")
        noise = 0.01 * torch.randn(batch.inputs.shape, generator=generator)
        loss = (self.head(self.encoder(self.frozen(batch.inputs + noise))) - batch.targets).square().mean()
        return ObjectiveOutput(loss=loss)

def fsdp_accelerator(config):
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
    accelerator = make_accelerator(config)
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, reshard_after_forward=True, auto_wrap_policy="size_based_wrap", min_num_params=20)
    for state in (PartialState(), accelerator.state):  # AcceleratorState() re-reads PartialState's
        state.distributed_type = DistributedType.FSDP
    accelerator.state.fsdp_plugin = plugin
    return accelerator

out, mode, kill_after = Path(sys.argv[1]), sys.argv[2], (int(sys.argv[3]) if len(sys.argv) > 3 else None)
config = TrainConfig(checkpoint_every=2, log_every=1, gradient_accumulation_steps=2, max_grad_norm=1.0)
accelerator = fsdp_accelerator(config) if mode == "fsdp" else make_accelerator(config)
objective = Objective(kill_after)
groups = [ParamGroup("encoder", tuple(objective.encoder.parameters()), 1e-2), ParamGroup("head", tuple(objective.head.parameters()), 3e-2)]
run = TrainingRun(stage="toy", objective=objective, param_groups=groups, batches=Data(), steps=6, batch_size=4,
                  checkpoint_dir=out / "ckpt", live_dir=None, fingerprint={}, weight_decay=0.01)
result = train(run, config, accelerator)
modules = full_weight_modules(accelerator, {"head": objective.head})
if accelerator.is_main_process:
    modules["head"].save_pretrained(out / "final" / "head", safe_serialization=True)
    weight = objective.encoder.weight
    (out / "run.json").write_text(json.dumps({"sharded": is_sharded(accelerator), "parameter_type": type(weight).__name__,
        "local_rows": int(getattr(weight, "_local_tensor", weight).shape[0]), "start": result.start_step, "steps": result.steps}))
"""


def _state(directory: Path) -> tuple[dict, dict, dict]:
    return (
        load_file(str(directory / "model.safetensors")),
        load_file(str(directory / "optimizer.safetensors")),
        json.loads((directory / "state.json").read_text()),
    )


def test_fsdp_saves_full_weights_and_resumes_exactly(tmp_path: Path) -> None:
    script = tmp_path / "toy_fsdp.py"
    script.write_text(SCRIPT)
    for name, mode in (("ddp", "ddp"), ("fsdp", "fsdp")):
        completed = torchrun(script, tmp_path / name, mode)
        assert completed.returncode == 0, completed.stderr[-4000:]
    fsdp_run = json.loads((tmp_path / "fsdp" / "run.json").read_text())
    ddp_run = json.loads((tmp_path / "ddp" / "run.json").read_text())
    assert fsdp_run["sharded"] and fsdp_run["parameter_type"] == "DTensor" and fsdp_run["local_rows"] == 3
    assert not ddp_run["sharded"] and ddp_run["local_rows"] == 6

    # (a) the delivered weights and the resumable state are the full tensors, equal to the DDP run's
    ddp_head = load_file(str(tmp_path / "ddp/final/head/diffusion_pytorch_model.safetensors"))
    fsdp_head = load_file(str(tmp_path / "fsdp/final/head/diffusion_pytorch_model.safetensors"))
    assert fsdp_head.keys() == ddp_head.keys() == {"hidden.weight", "hidden.bias", "proj.weight", "proj.bias"}
    for name, tensor in ddp_head.items():
        torch.testing.assert_close(fsdp_head[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    assert json.loads((tmp_path / "fsdp/final/head/config.json").read_text())["width"] == 6
    ddp_model, ddp_optimizer, ddp_json = _state(tmp_path / "ddp/ckpt/step-00000006")
    fsdp_model, fsdp_optimizer, fsdp_json = _state(tmp_path / "fsdp/ckpt/step-00000006")
    assert "frozen.weight" not in fsdp_model and fsdp_model.keys() == ddp_model.keys()
    assert fsdp_optimizer.keys() == ddp_optimizer.keys()
    for saved, reference in ((fsdp_model, ddp_model), (fsdp_optimizer, ddp_optimizer)):
        for name, tensor in reference.items():
            assert saved[name].shape == tensor.shape, name
            torch.testing.assert_close(saved[name], tensor, rtol=1e-4, atol=1e-6, msg=name)
    assert fsdp_json["optimizer"] == ddp_json["optimizer"]
    assert fsdp_json["lr_scheduler"] == ddp_json["lr_scheduler"]

    # (b) killed during step 5 (state of step 4 on disk), then rerun: the same result bit for bit
    killed = torchrun(script, tmp_path / "resumed", "fsdp", 9)
    assert killed.returncode != 0 and "killed" in killed.stderr
    assert sorted(path.name for path in (tmp_path / "resumed/ckpt").iterdir()) == ["step-00000004"]
    completed = torchrun(script, tmp_path / "resumed", "fsdp")
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert json.loads((tmp_path / "resumed" / "run.json").read_text())["start"] == 4
    resumed_model, resumed_optimizer, resumed_json = _state(tmp_path / "resumed/ckpt/step-00000006")
    for saved, reference in ((resumed_model, fsdp_model), (resumed_optimizer, fsdp_optimizer)):
        assert saved.keys() == reference.keys()
        for name, tensor in reference.items():
            assert torch.equal(saved[name], tensor), name
    assert resumed_json["optimizer"] == fsdp_json["optimizer"]
