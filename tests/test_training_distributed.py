# ruff: noqa: E501
"""Multi-process training: 2 CPU processes (torchrun, as ``accelerate launch`` uses) form a gloo group."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.torchrun import torchrun

pytestmark = pytest.mark.slow


SCRIPT = """
import json, sys
from dataclasses import dataclass
from pathlib import Path
import torch
from unildiff.training.config import TrainConfig
from unildiff.training.loop import ObjectiveOutput, ParamGroup, TrainingRun, make_accelerator, train

@dataclass
class Batch:
    inputs: torch.Tensor
    targets: torch.Tensor

class Data:
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.inputs = torch.randn(32, 4, generator=g)
        self.targets = self.inputs @ torch.randn(4, 2, generator=g)
    def __len__(self):
        return 32
    def __call__(self, indices):
        return Batch(self.inputs[indices], self.targets[indices])

class Objective(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.linear = torch.nn.Linear(4, 2)
    def forward(self, batch, generator):
        loss = (self.linear(batch.inputs) - batch.targets).abs().mean()
        return ObjectiveOutput(loss=loss)

out = Path(sys.argv[1])
accelerator = make_accelerator(TrainConfig())
objective = Objective()
run = TrainingRun(stage="toy", objective=objective, param_groups=[ParamGroup("linear", tuple(objective.linear.parameters()), 1e-2)],
                  batches=Data(), steps=4, batch_size=4, checkpoint_dir=out / "ckpt", live_dir=out / "live", fingerprint={})
result = train(run, TrainConfig(checkpoint_every=2, log_every=1), accelerator)
weights = objective.linear.weight.detach().flatten().tolist()
(out / f"rank{accelerator.process_index}.json").write_text(json.dumps(
    {"processes": accelerator.num_processes, "backend": str(accelerator.state.backend), "steps": result.steps, "weights": weights}))
"""


def test_two_cpu_processes_train_in_sync(tmp_path: Path) -> None:
    script = tmp_path / "toy_train.py"
    script.write_text(SCRIPT)
    completed = torchrun(script, tmp_path)
    assert completed.returncode == 0, completed.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert all(r["processes"] == 2 and r["steps"] == 4 and r["backend"] == "gloo" for r in ranks), ranks
    assert ranks[0]["weights"] == ranks[1]["weights"]  # gradients were all-reduced: replicas stay identical
    state = json.loads((tmp_path / "ckpt" / "step-00000004" / "state.json").read_text())
    assert state["step"] == 4 and state["fingerprint"]["processes"] == 2
