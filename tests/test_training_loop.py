"""The generic training loop and its resumable state, on a small stand-in model."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from unildiff.errors import ConfigError
from unildiff.training.checkpoint import latest_state, read_state_step, saved_states
from unildiff.training.config import Stage1bConfig, Stage2Config, TrainConfig
from unildiff.training.loop import NonFiniteLossError, ObjectiveOutput, ParamGroup, TrainingRun, train


@dataclass
class ToyBatch:
    inputs: torch.Tensor
    targets: torch.Tensor


class ToyData:
    def __init__(self, count: int = 32) -> None:
        generator = torch.Generator().manual_seed(0)
        self.inputs = torch.randn(count, 4, generator=generator)
        self.targets = self.inputs @ torch.randn(4, 2, generator=generator)

    def __len__(self) -> int:
        return len(self.inputs)

    def __call__(self, indices: torch.Tensor) -> ToyBatch:
        return ToyBatch(self.inputs[indices], self.targets[indices])


class ToyObjective(torch.nn.Module):
    def __init__(self, nan_after: int | None = None, kill_after: int | None = None) -> None:
        super().__init__()
        self.kill_after = kill_after
        self.nan_after = nan_after
        self.calls = 0
        torch.manual_seed(1)
        self.frozen = torch.nn.Linear(4, 4).requires_grad_(False)
        self.trained = torch.nn.Linear(4, 2)

    def forward(self, batch: ToyBatch, generator: torch.Generator) -> ObjectiveOutput:
        self.calls += 1
        if self.kill_after is not None and self.calls > self.kill_after:
            raise KeyboardInterrupt("killed")
        noise = torch.randn(batch.inputs.shape, generator=generator, device=batch.inputs.device) * 0.01
        prediction = self.trained(batch.inputs + noise + 0 * self.frozen(batch.inputs))
        loss = (prediction - batch.targets).abs().mean()
        if self.nan_after is not None and self.calls > self.nan_after:
            loss = loss * float("nan")
        return ObjectiveOutput(loss=loss, terms={"l1": loss.detach()})


def make_run(
    tmp_path: Path, steps: int, objective: ToyObjective | None = None, lr: float = 1e-2
) -> TrainingRun:
    objective = objective or ToyObjective()
    return TrainingRun(
        stage="toy",
        objective=objective,
        param_groups=[ParamGroup("trained", tuple(objective.trained.parameters()), lr)],
        batches=ToyData(),
        steps=steps,
        batch_size=8,
        checkpoint_dir=tmp_path / "checkpoints" / "toy",
        live_dir=tmp_path / "dvclive" / "toy",
        fingerprint={"lr": lr},
        lr_schedule="cosine",
    )


CONFIG = TrainConfig(checkpoint_every=3, log_every=1)


def test_trains_only_trainable_and_logs(tmp_path: Path) -> None:
    run = make_run(tmp_path, steps=6)
    frozen_before = run.objective.frozen.weight.clone()
    trained_before = run.objective.trained.weight.clone()
    result = train(run, CONFIG)
    assert result.steps == 6 and result.iterations_per_second > 0
    assert torch.equal(run.objective.frozen.weight, frozen_before)
    assert not torch.equal(run.objective.trained.weight, trained_before)
    assert read_state_step(run.checkpoint_dir) == 6
    saved = load_file(str(latest_state(run.checkpoint_dir) / "model.safetensors"))
    assert set(saved) == {"trained.weight", "trained.bias"}
    metrics = json.loads((run.live_dir / "metrics.json").read_text())
    assert {"loss", "l1"} <= set(metrics) and "trained" in metrics["lr"]
    assert not list(run.checkpoint_dir.glob("*.pt")) and not list(run.checkpoint_dir.glob("*.bin"))


def test_kill_and_resume_matches_uninterrupted(tmp_path: Path) -> None:
    straight = make_run(tmp_path / "a", steps=6)
    train(straight, CONFIG)
    killed = make_run(tmp_path / "b", steps=6, objective=ToyObjective(kill_after=4))
    with pytest.raises(KeyboardInterrupt):
        train(killed, CONFIG)  # killed during step 5: the state of step 3 is on disk
    assert read_state_step(killed.checkpoint_dir) == 3
    resumed_objective = ToyObjective()
    resumed = make_run(tmp_path / "b", steps=6, objective=resumed_objective)
    result = train(resumed, CONFIG)
    assert result.start_step == 3 and result.steps == 6
    assert torch.allclose(resumed_objective.trained.weight, straight.objective.trained.weight, atol=1e-6)
    optimizer_a = load_file(str(latest_state(straight.checkpoint_dir) / "optimizer.safetensors"))
    optimizer_b = load_file(str(latest_state(resumed.checkpoint_dir) / "optimizer.safetensors"))
    assert set(optimizer_a) == set(optimizer_b) and "0.exp_avg" in optimizer_a
    for key in optimizer_a:
        assert torch.allclose(optimizer_a[key], optimizer_b[key], atol=1e-6), key


def test_keeps_the_last_n_states_and_resumes_from_the_newest(tmp_path: Path) -> None:
    limited = TrainConfig(checkpoint_every=1, log_every=1, checkpoints_total_limit=2)
    killed = make_run(tmp_path, steps=6, objective=ToyObjective(kill_after=4))
    with pytest.raises(KeyboardInterrupt):
        train(killed, limited)
    assert [path.name for path in saved_states(killed.checkpoint_dir)] == ["step-00000003", "step-00000004"]
    resumed = make_run(tmp_path, steps=6)
    assert train(resumed, limited).start_step == 4
    assert [path.name for path in saved_states(resumed.checkpoint_dir)] == ["step-00000005", "step-00000006"]
    (resumed.checkpoint_dir / "state.json").write_text("{}")  # the older single-state layout
    # A state written under another config is refused, and deleted with the first save of the new run,
    # as is a state of the older layout.
    other = make_run(tmp_path, steps=8, lr=5e-3)
    result = train(other, TrainConfig(checkpoint_every=4, log_every=1, checkpoints_total_limit=2))
    assert result.start_step == 0 and "lr: 0.01 -> 0.005" in result.resume_note
    assert [path.name for path in saved_states(other.checkpoint_dir)] == ["step-00000004", "step-00000008"]
    assert not (other.checkpoint_dir / "state.json").exists()


def test_finished_state_is_stale_and_training_starts_over(tmp_path: Path) -> None:
    first = make_run(tmp_path, steps=6)
    train(first, CONFIG)
    # DVC reran the stage (say, its code changed): the persisted final state must not be reused.
    again_objective = ToyObjective()
    again = make_run(tmp_path, steps=6, objective=again_objective)
    result = train(again, TrainConfig(checkpoint_every=3, log_every=1, resume="strict"))
    assert result.start_step == 0 and "finished run (step 6 of 6)" in result.resume_note
    assert result.iterations_per_second > 0 and result.final_loss == result.final_loss  # not NaN
    assert torch.allclose(again_objective.trained.weight, first.objective.trained.weight, atol=1e-6)
    assert (again.live_dir / "plots" / "metrics" / "loss.tsv").is_file()


def test_mismatched_state_is_refused(tmp_path: Path) -> None:
    train(make_run(tmp_path, steps=3), CONFIG)
    other = make_run(tmp_path, steps=3, lr=5e-2)
    with pytest.raises(ConfigError, match=r"another config \(lr: 0.01 -> 0.05"):
        train(other, TrainConfig(checkpoint_every=3, resume="strict"))

    result = train(make_run(tmp_path, steps=3, lr=5e-2), CONFIG)
    assert result.start_step == 0 and "lr: 0.01 -> 0.05" in result.resume_note


def test_non_finite_loss_stops_and_keeps_last_good_state(tmp_path: Path) -> None:
    broken = make_run(tmp_path, steps=6, objective=ToyObjective(nan_after=4))
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at step 4.*\(step 3\)"):
        train(broken, CONFIG)
    assert read_state_step(broken.checkpoint_dir) == 3
    kept = load_file(str(latest_state(broken.checkpoint_dir) / "model.safetensors"))
    assert all(torch.isfinite(tensor).all() for tensor in kept.values())


def test_gradient_accumulation_and_ema_run(tmp_path: Path) -> None:
    run = make_run(tmp_path, steps=2)
    result = train(run, TrainConfig(gradient_accumulation_steps=2, use_ema=True, ema_decay=0.5, log_every=1))
    assert result.steps == 2 and (latest_state(run.checkpoint_dir) / "ema.safetensors").is_file()


def test_global_batch_size_derives_the_accumulation(tmp_path: Path) -> None:
    """global_batch_size 16 over batch_size 8 on one process is 2 micro-batches: the same run, bit for bit,
    as gradient_accumulation_steps 2 (the same seeds, batches and fingerprint)."""
    runs = {}
    for name, config in {
        "accumulation": TrainConfig(gradient_accumulation_steps=2, log_every=1, checkpoint_every=2),
        "global": TrainConfig(global_batch_size=16, log_every=1, checkpoint_every=2),
    }.items():
        run = make_run(tmp_path / name, steps=2)
        train(run, config)
        runs[name] = load_file(str(latest_state(run.checkpoint_dir) / "model.safetensors"))
    assert runs["accumulation"].keys() == runs["global"].keys()
    for key, tensor in runs["accumulation"].items():
        assert torch.equal(tensor, runs["global"][key])
    assert TrainConfig(global_batch_size=64).accumulation_steps(batch_size=8, processes=2) == 4
    assert TrainConfig(global_batch_size=64).accumulation_steps(batch_size=8, processes=8) == 1
    with pytest.raises(ConfigError, match="train.global_batch_size=64 is not a multiple of batch_size 8 x 3"):
        TrainConfig(global_batch_size=64).accumulation_steps(batch_size=8, processes=3)
    with pytest.raises(ConfigError, match="train.global_batch_size or train.gradient_accumulation_steps"):
        TrainConfig(global_batch_size=64, gradient_accumulation_steps=2)


@pytest.mark.parametrize(
    ("factory", "param"),
    [
        (lambda: Stage2Config(lambda2=-0.1), "stage2.lambda2"),
        (lambda: Stage2Config(lr=-1.0), "stage2.lr"),
        (lambda: Stage1bConfig(lr_lq_encoder=0.0), "stage1b.lr_lq_encoder"),
        (lambda: TrainConfig(crop_size=60), "train.crop_size"),
        (lambda: TrainConfig(mixed_precision="fp8"), "train.mixed_precision"),
        (lambda: TrainConfig(optimizer="sgd"), "train.optimizer"),
    ],
)
def test_bad_params_name_the_param(factory, param: str) -> None:
    with pytest.raises(ConfigError, match=param.replace(".", r"\.")):
        factory()


class WideObjective(ToyObjective):
    """ToyObjective with a parameter large enough (>= 4096 values) for bitsandbytes to keep 8-bit moments."""

    def __init__(self, kill_after: int | None = None) -> None:
        super().__init__(kill_after=kill_after)
        self.wide = torch.nn.Parameter(torch.linspace(-1, 1, 8192))

    def forward(self, batch: ToyBatch, generator: torch.Generator) -> ObjectiveOutput:
        output = super().forward(batch, generator)
        return ObjectiveOutput(loss=output.loss + 1e-3 * (self.wide**2).mean(), terms=output.terms)


def make_wide_run(tmp_path: Path, steps: int, objective: WideObjective) -> TrainingRun:
    run = make_run(tmp_path, steps, objective)
    parameters = (*objective.trained.parameters(), objective.wide)
    return dataclasses.replace(run, param_groups=[ParamGroup("trained", parameters, 1e-2)])


def test_8bit_adamw_keeps_8bit_state_and_resumes_exactly(tmp_path: Path) -> None:
    pytest.importorskip("bitsandbytes", reason="train.optimizer=adamw_8bit needs bitsandbytes")
    config = dataclasses.replace(CONFIG, optimizer="adamw_8bit")
    straight = make_wide_run(tmp_path / "a", 6, WideObjective())
    train(straight, config)
    saved = load_file(str(latest_state(straight.checkpoint_dir) / "optimizer.safetensors"))
    assert any(tensor.dtype == torch.uint8 for tensor in saved.values())  # 8-bit moments, not fp32
    killed = make_wide_run(tmp_path / "b", 6, WideObjective(kill_after=4))
    with pytest.raises(KeyboardInterrupt):
        train(killed, config)
    resumed_objective = WideObjective()
    result = train(make_wide_run(tmp_path / "b", 6, resumed_objective), config)
    assert result.start_step == 3 and result.steps == 6
    torch.testing.assert_close(resumed_objective.wide, straight.objective.wide, rtol=0, atol=0)
    torch.testing.assert_close(resumed_objective.trained.weight, straight.objective.trained.weight)
    # A state written by torch's AdamW is not resumed by the 8-bit one: the optimizer is in the fingerprint.
    other = make_wide_run(tmp_path / "b", 6, WideObjective())
    assert train(other, CONFIG).start_step == 0
