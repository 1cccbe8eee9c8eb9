"""The one training loop every stage uses, on ``accelerate``.

A stage describes its work as a :class:`TrainingRun`: an objective module (holding the trained and the
frozen networks, returning an :class:`ObjectiveOutput`), parameter groups with their learning rates, a
:class:`~unildiff.training.batch_stream.BatchSource` and a step count. :func:`train` does the rest the
same way for every stage: AdamW, a diffusers lr schedule, mixed precision (where the hardware has it),
gradient accumulation and clipping, optional EMA, per-step seeding, batches read ahead by
``train.dataloader_workers`` processes, resumable state every ``train.checkpoint_every`` steps, a rich
progress bar and dvclive curves. It runs unchanged on 1 CPU, 1 GPU or under ``accelerate launch``.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from unildiff.errors import ConfigError, UniLDiffError
from unildiff.training import sharding
from unildiff.training.batch_stream import BatchSource, ScheduledBatches, derived_seed, stream_batches
from unildiff.training.checkpoint import (
    keep_states,
    load_training_state,
    read_optimizer_state,
    save_training_state,
    state_directory,
)
from unildiff.training.config import ACCELERATE_MIXED_PRECISION, TrainConfig


class NonFiniteLossError(UniLDiffError, FloatingPointError):
    """The loss became NaN or infinite; the last good resumable state is kept."""


@dataclass
class ObjectiveOutput:
    """What an objective's ``forward(batch, generator)`` returns.

    Attributes:
        loss: 0-dim tensor to minimise.
        terms: Named 0-dim loss terms to log (e.g. ``l1``, ``aux_loss``).
        expert_usage: (E,) fraction of tokens routed to each DAEM expert, or ``None``.
    """

    loss: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    expert_usage: torch.Tensor | None = None


@dataclass(frozen=True)
class ParamGroup:
    """A named optimizer parameter group with its (initial) learning rate."""

    name: str
    parameters: tuple[torch.nn.Parameter, ...]
    lr: float


@dataclass
class TrainingRun:
    """One stage's (or phase's) training job.

    Attributes:
        stage: Name used in messages, the progress bar and fingerprint.
        objective: ``nn.Module`` with ``forward(batch, generator) -> ObjectiveOutput``; parameters that
            do not require grad are frozen and never touched.
        param_groups: Trained parameters and learning rates.
        batches: Source of the training batches.
        steps: Optimizer steps in total.
        batch_size: Items per micro-batch and process.
        checkpoint_dir: Resumable-state directory (``checkpoints/<stage>``).
        live_dir: dvclive directory (``dvclive/<stage>``), or ``None`` for no curves.
        fingerprint: JSON-able description of everything a resumed state must match.
        lr_schedule: ``diffusers.optimization.get_scheduler`` name (``constant``, ``cosine``, ...).
        warmup_steps: Warm-up steps of the schedule.
        weight_decay: AdamW weight decay.
        adam_beta2: AdamW's second-moment decay (torch's default 0.999).
    """

    stage: str
    objective: torch.nn.Module
    param_groups: Sequence[ParamGroup]
    batches: BatchSource
    steps: int
    batch_size: int
    checkpoint_dir: Path
    live_dir: Path | None
    fingerprint: Mapping[str, Any]
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_beta2: float = 0.999


@dataclass(frozen=True)
class TrainingResult:
    """Summary of a finished :func:`train` call (for logs and the report)."""

    stage: str
    start_step: int
    steps: int
    seconds: float
    iterations_per_second: float
    final_loss: float
    peak_memory_mib: float
    resume_note: str | None


def make_accelerator(config: TrainConfig) -> Any:
    """An ``accelerate.Accelerator`` for ``config`` (mixed precision only where CUDA is available)."""
    from accelerate import Accelerator

    has_cuda = torch.cuda.is_available()
    mixed_precision = ACCELERATE_MIXED_PRECISION[config.mixed_precision] if has_cuda else "no"
    # cpu=True on CPU-only hosts lets torchrun / `accelerate launch` processes form a gloo group (MULTI_CPU).
    accelerator = Accelerator(
        cpu=not has_cuda,
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
    )
    if not has_cuda:  # an FSDP config launched on CPU: gloo FSDP2 instead of accelerate's MULTI_CPU
        sharding.shard_on_cpu(accelerator)
    return accelerator


class _SpeedColumn(ProgressColumn):
    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text("? it/s" if speed is None else f"{speed:.2f} it/s", style="progress.data.speed")


def _progress(disable: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        _SpeedColumn(),
        TimeRemainingColumn(),
        disable=disable,
    )


def train(run: TrainingRun, config: TrainConfig, accelerator: Any | None = None) -> TrainingResult:
    """Train ``run.objective`` for ``run.steps`` optimizer steps, resuming from ``run.checkpoint_dir``.

    Args:
        run: The job.
        config: Shared training settings.
        accelerator: An existing ``Accelerator`` (one per process); made from ``config`` if ``None``.

    Returns:
        A :class:`TrainingResult`. The trained parameters are updated in place (EMA weights copied in
        when ``config.use_ema``); delivering them with ``save_pretrained`` is the caller's job.

    Raises:
        NonFiniteLossError: The loss became non-finite; the last saved state is kept.
        ConfigError: ``train.resume=strict`` and the saved state was written under another config.
    """
    from accelerate.utils import set_seed
    from diffusers.optimization import get_scheduler

    accelerator = accelerator or make_accelerator(config)
    # train.global_batch_size: this stage's micro-batches per optimizer step over all processes.
    accumulation = config.accumulation_steps(run.batch_size, accelerator.num_processes)
    accelerator.gradient_accumulation_steps = accumulation
    sharded = sharding.is_sharded(accelerator)
    if sharded:
        sharding.check_sharded_config(config)
    objective = run.objective.to(accelerator.device)
    groups = [{"params": list(g.parameters), "lr": g.lr, "name": g.name} for g in run.param_groups]
    optimizer = make_optimizer(groups, run.weight_decay, config.optimizer, (0.9, run.adam_beta2))
    if config.gradient_checkpointing:
        switched = enable_gradient_checkpointing(objective)
        if accelerator.is_main_process:
            print(f"{run.stage}: gradient checkpointing in {', '.join(switched) or 'no module'}")
    lr_scheduler = get_scheduler(
        run.lr_schedule, optimizer, num_warmup_steps=run.warmup_steps, num_training_steps=run.steps
    )
    trained = [p for g in run.param_groups for p in g.parameters]
    ema = None
    if config.use_ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(trained, decay=config.ema_decay)
    fingerprint = {
        **run.fingerprint,
        "stage": run.stage,
        "processes": accelerator.num_processes,
        "steps": run.steps,
        "batch_size": run.batch_size,
        "lr_schedule": run.lr_schedule,
        "warmup_steps": run.warmup_steps,
        "weight_decay": run.weight_decay,
        "adam_beta2": run.adam_beta2,
        "param_groups": [[g.name, g.lr] for g in run.param_groups],
        "train": _train_fingerprint(config, accumulation),
    }
    decision = load_training_state(
        run.checkpoint_dir,
        fingerprint=fingerprint,
        mode=config.resume,
        total_steps=run.steps,
        model=objective,
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
        ema=ema,
        restore_optimizer=not sharded,  # FSDP: the weights load before sharding, the optimizer after
    )
    if decision.reason and accelerator.is_main_process:
        print(f"{run.stage}: {decision.reason}; starting from step 0")
    if decision.state is not None and accelerator.is_main_process:
        print(f"{run.stage}: resuming from {decision.state} (step {decision.step} of {run.steps})")
    if sharded:  # the units accelerate would pick, without the containers fully_shard refuses
        units = sharding.shard_objective(accelerator, objective, optimizer)
        if accelerator.is_main_process:
            print(f"{run.stage}: FSDP2 units {', '.join(units) or 'none'} (+ the objective)")
        sharded_groups = [list(group["params"]) for group in optimizer.param_groups]
    wrapped, optimizer = accelerator.prepare(objective, optimizer)
    if sharded:  # fully_shard replaced the parameters with DTensor shards (the optimizer holds the new ones)
        sharding.restore_optimizer_parameters(optimizer.optimizer, sharded_groups)
        trained = [p for group in optimizer.optimizer.param_groups for p in group["params"]]
        if decision.state is not None:
            full = read_optimizer_state(decision.state) if accelerator.is_main_process else None
            sharding.load_full_optimizer_state(
                wrapped, optimizer.optimizer, full, accelerator.is_main_process
            )
    if ema is not None:
        ema.to(accelerator.device)
    last_saved = decision.step if decision.step else None
    kept = [decision.state] if decision.state is not None else []
    limit = config.checkpoints_total_limit
    live = _open_live(run, accelerator, decision.step)
    step, loss_value, started = decision.step, float("nan"), time.perf_counter()
    output: ObjectiveOutput | None = None
    wrapped.train()
    schedule = ScheduledBatches(
        run.batches,
        run.batch_size,
        config.seed,
        start_step=decision.step,
        steps=run.steps,
        accumulation=accumulation,
        process=accelerator.process_index,
        processes=accelerator.num_processes,
    )
    batches = stream_batches(schedule, config.dataloader_workers, accelerator.device)
    with _progress(disable=not accelerator.is_main_process) as progress:
        task = progress.add_task(run.stage, total=run.steps, completed=step, loss="-")
        while step < run.steps:
            set_seed(derived_seed(config.seed, step, accelerator.process_index) % (2**32))
            losses = []
            for micro in range(accumulation):
                generator = torch.Generator(device=accelerator.device)
                generator.manual_seed(derived_seed(config.seed, step, micro, accelerator.process_index, 1))
                batch = next(batches)
                with accelerator.accumulate(wrapped):
                    with accelerator.autocast():
                        output = wrapped(batch, generator)
                    reduced = accelerator.reduce(output.loss.detach().float(), reduction="mean")
                    if not torch.isfinite(reduced):
                        raise NonFiniteLossError(
                            f"{run.stage}: non-finite loss ({reduced.item()}) at step {step}; stopped; "
                            f"last good state: {run.checkpoint_dir} (step {last_saved})"
                        )
                    accelerator.backward(output.loss)
                    if accelerator.sync_gradients and config.max_grad_norm > 0:
                        if sharded:
                            sharding.clip_grad_norm_(accelerator, trained, config.max_grad_norm)
                        else:
                            accelerator.clip_grad_norm_(trained, config.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                losses.append(reduced.item())
            lr_scheduler.step()
            if ema is not None:
                ema.step(trained)
            step += 1
            loss_value = sum(losses) / len(losses)
            progress.update(task, advance=1, loss=f"{loss_value:.4f}")
            if live is not None and (step % config.log_every == 0 or step == run.steps):
                _log(live, step, loss_value, output, optimizer)
            if step % config.checkpoint_every == 0 or step == run.steps:
                _save(
                    run, accelerator, step, fingerprint, objective, optimizer, lr_scheduler, ema, kept, limit
                )
                last_saved = step
    seconds = time.perf_counter() - started
    done = step - decision.step
    iterations_per_second = done / seconds if done and seconds > 0 else 0.0
    peak_memory_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if ema is not None:
        ema.copy_to(trained)
    if live is not None:
        live.summary.update(
            {
                "iterations_per_second": round(iterations_per_second, 3),
                "seconds": round(seconds, 2),
                "peak_memory_mib": round(peak_memory_mib, 1),
            }
        )
        live.make_summary()
        if output is not None and output.expert_usage is not None:
            output_usage = [
                u if math.isfinite(u) else 0.0 for u in output.expert_usage.float().cpu().tolist()
            ]
            live.log_plot(
                "expert_usage",
                [{"expert": i, "usage": u} for i, u in enumerate(output_usage)],
                x="usage",  # bar_horizontal: x is the bar length, y the category (as dvc.yaml declares)
                y="expert",
                template="bar_horizontal",
                title="DAEM expert usage",
            )
        live.end()
    accelerator.wait_for_everyone()
    return TrainingResult(
        stage=run.stage,
        start_step=decision.step,
        steps=step,
        seconds=seconds,
        iterations_per_second=iterations_per_second,
        final_loss=loss_value,
        peak_memory_mib=peak_memory_mib,
        resume_note=decision.reason,
    )


def make_optimizer(
    groups: list[dict[str, Any]],
    weight_decay: float,
    name: str,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """AdamW over ``groups``: torch's, or bitsandbytes' 8-bit AdamW (``train.optimizer: adamw_8bit``).

    Raises:
        ConfigError: ``adamw_8bit`` without bitsandbytes installed.
    """
    if name == "adamw_8bit":
        try:
            import bitsandbytes
        except ImportError as error:
            raise ConfigError(
                "train.optimizer=adamw_8bit needs bitsandbytes (pip install bitsandbytes)"
            ) from error
        return bitsandbytes.optim.AdamW8bit(groups, betas=betas, weight_decay=weight_decay)
    return torch.optim.AdamW(groups, betas=betas, weight_decay=weight_decay)


def enable_gradient_checkpointing(objective: torch.nn.Module) -> list[str]:
    """Switch on diffusers' gradient checkpointing in every module of ``objective`` that supports it.

    Returns:
        The class names of the modules switched (for the log).
    """
    from diffusers import ModelMixin

    switched: dict[str, str] = {}
    for name, module in objective.named_modules():
        # An outer module's switch covers the modules inside it ("" is the objective itself).
        inside = any(outer == "" or name.startswith(f"{outer}.") for outer in switched)
        if not inside and isinstance(module, ModelMixin) and module._supports_gradient_checkpointing:
            module.enable_gradient_checkpointing()
            switched[name] = type(module).__name__
    return list(switched.values())


def _train_fingerprint(config: TrainConfig, accumulation: int) -> dict[str, Any]:
    # Settings that change the result; checkpoint/log periods and the resume mode do not.
    return {
        "seed": config.seed,
        "mixed_precision": config.mixed_precision,
        "crop_size": config.crop_size,
        "gradient_accumulation_steps": accumulation,
        "max_grad_norm": config.max_grad_norm,
        "use_ema": config.use_ema,
        "ema_decay": config.ema_decay,
        "prompt_dropout": config.prompt_dropout,
        "optimizer": config.optimizer,
    }


def _save(
    run: TrainingRun,
    accelerator: Any,
    step: int,
    fingerprint: Mapping[str, Any],
    objective: torch.nn.Module,
    optimizer: Any,
    lr_scheduler: Any,
    ema: Any,
    kept: list[Path],
    limit: int,
) -> None:
    """Write the state after ``step`` and keep the newest ``limit`` of this run's lineage (``kept``:
    the state resumed from, then the ones written since); older and refused states are deleted.

    Under FSDP (``prepare`` shards ``objective`` in place) every process takes part in gathering the full
    weights and optimizer state, which the main process writes."""
    accelerator.wait_for_everyone()
    model_state = optimizer_state = None
    if sharding.is_sharded(accelerator):
        model_state = sharding.full_model_state(accelerator, objective, trainable_only=True)
        optimizer_state = sharding.full_optimizer_state(
            objective, optimizer.optimizer, accelerator.is_main_process
        )
    if accelerator.is_main_process:
        directory = state_directory(run.checkpoint_dir, step)
        save_training_state(
            directory,
            step=step,
            fingerprint=fingerprint,
            model=objective,
            optimizer=optimizer.optimizer,
            lr_scheduler=lr_scheduler,
            ema=ema,
            model_state=model_state,
            optimizer_state=optimizer_state,
        )
        kept.append(directory)
        del kept[:-limit]
        keep_states(run.checkpoint_dir, kept)
    accelerator.wait_for_everyone()


def _open_live(run: TrainingRun, accelerator: Any, start_step: int) -> Any:
    if run.live_dir is None or not accelerator.is_main_process:
        return None
    from dvclive import Live

    live = Live(dir=str(run.live_dir), save_dvc_exp=False, dvcyaml=None, resume=start_step > 0)
    live.step = start_step
    return live


def _log(live: Any, step: int, loss: float, output: ObjectiveOutput, optimizer: Any) -> None:
    live.step = step
    live.log_metric("loss", loss)
    for group in optimizer.param_groups:
        live.log_metric(f"lr/{group['name']}", float(group["lr"]))
    for name, value in output.terms.items():
        live.log_metric(name, float(value.detach().float().item()))
    if output.expert_usage is not None:
        for index, usage in enumerate(output.expert_usage.detach().float().cpu().tolist()):
            live.log_metric(f"expert_usage/{index}", usage)
    live.make_summary()
