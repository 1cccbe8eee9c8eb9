"""The batches of a training run, in step order, read ahead by DataLoader workers.

Which items a micro-step trains on is a pure function of (seed, step, micro-step, process), so the
whole sequence is known in advance: :class:`ScheduledBatches` is a map-style dataset whose item ``k`` is
the batch of the ``k``-th micro-step from the resume point. A ``DataLoader`` over it (``batch_size=None``,
in order) lets ``train.dataloader_workers`` processes read batches from disk while the current step
trains, and gives the same batches, in the same order, as reading them in the loop (``0`` workers).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from typing import Any, Protocol

import torch


class BatchSource(Protocol):
    """Gives the CPU batch for a list of item indices; the loop chooses the indices (seeded, per step).

    A source read by DataLoader workers must be picklable (the latent sources are: they hold paths and
    small tensors, and reopen their files in each worker).
    """

    def __len__(self) -> int: ...

    def __call__(self, indices: torch.Tensor) -> Any: ...


def derived_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (run seed, step, micro-step, process)."""
    digest = hashlib.sha256(":".join(str(part) for part in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def step_indices(
    count: int, batch_size: int, seed: int, step: int, micro: int, process: int, processes: int
) -> torch.Tensor:
    """The item indices of one process's micro-batch: a seeded draw of ``batch_size × processes`` items
    (without replacement when the source has that many), sliced per process. (batch_size,) int64."""
    generator = torch.Generator().manual_seed(derived_seed(seed, step, micro))
    total = batch_size * processes
    if total <= count:
        indices = torch.randperm(count, generator=generator)[:total]
    else:
        indices = torch.randint(count, (total,), generator=generator)
    return indices[process * batch_size : (process + 1) * batch_size]


class ScheduledBatches(torch.utils.data.Dataset):
    """Item ``k``: the batch of micro-step ``k`` counted from ``start_step`` (``accumulation`` per step).

    Args:
        source: Where the batches are read from.
        batch_size: Items per micro-batch and process.
        seed: ``train.seed``.
        start_step: First optimizer step (the resume point).
        steps: Last optimizer step (exclusive).
        accumulation: Micro-batches per optimizer step.
        process: This process's index.
        processes: Number of processes.
    """

    def __init__(
        self,
        source: BatchSource,
        batch_size: int,
        seed: int,
        start_step: int,
        steps: int,
        accumulation: int,
        process: int,
        processes: int,
    ) -> None:
        self.source, self.batch_size, self.seed = source, batch_size, seed
        self.start_step, self.steps, self.accumulation = start_step, steps, accumulation
        self.process, self.processes = process, processes

    def __len__(self) -> int:
        return max(self.steps - self.start_step, 0) * self.accumulation

    def __getitem__(self, position: int) -> Any:
        step, micro = divmod(position, self.accumulation)
        indices = step_indices(
            len(self.source),
            self.batch_size,
            self.seed,
            self.start_step + step,
            micro,
            self.process,
            self.processes,
        )
        return self.source(indices)


def to_device(batch: Any, device: torch.device) -> Any:
    """A dataclass batch with every tensor field moved to ``device`` (asynchronously when the DataLoader
    pinned it: the latent batches have ``pin_memory()``)."""
    moved = {
        field.name: value.to(device, non_blocking=True)
        for field in dataclasses.fields(batch)
        if isinstance(value := getattr(batch, field.name), torch.Tensor)
    }
    return dataclasses.replace(batch, **moved)


def stream_batches(schedule: ScheduledBatches, workers: int, device: torch.device) -> Iterator[Any]:
    """The scheduled batches in order on ``device``; ``workers`` > 0 reads them ahead in other processes."""
    loader = torch.utils.data.DataLoader(
        schedule,
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=2 if workers else None,
        generator=torch.Generator(),  # the DataLoader's own seed draw leaves the global RNG alone
    )
    for batch in loader:
        yield to_device(batch, device)
