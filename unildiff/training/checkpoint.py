"""Resumable training state as safetensors + JSON (no pickles).

A stage's checkpoint folder (``checkpoints/<stage>/``, or a sub-folder of it for the prior's two phases)
holds one state directory per save, ``step-00000025/`` …; the loop keeps the last
``train.checkpoints_total_limit`` of them and resumes from the newest. A state directory holds:

- ``model.safetensors``: the trainable parameters, by their name in the training objective;
- ``optimizer.safetensors``: the optimizer's per-parameter tensors (``<index>.<name>``, e.g. ``3.exp_avg``;
  nested state, such as bitsandbytes' 8-bit AdamW keeps, as ``<index>.<name>/<key>``);
- ``ema.safetensors``: the EMA shadow parameters (only with ``train.use_ema``);
- ``state.json``: the step, the config fingerprint, the optimizer's param groups and scalar state,
  the lr scheduler's state and the EMA counters.

Under FSDP the same files hold the **full** tensors: every process takes part in gathering them and the
main process writes them (``training/sharding.py``), so a state does not depend on the strategy.

The random state needs no file: the loop re-seeds torch/numpy/python from ``(seed, step, process)`` at
every step, so the step number fixes it. The directory is replaced atomically, so a kill during a save
leaves the previous state intact.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from unildiff.errors import ConfigError
from unildiff.utils.atomic import atomic_dir, atomic_write_json

STATE_JSON = "state.json"
FORMAT_VERSION = 1
STATE_PREFIX = "step-"


def state_directory(checkpoint_dir: Path, step: int) -> Path:
    """Where the state after ``step`` optimizer steps goes: ``<checkpoint_dir>/step-00000025``."""
    return Path(checkpoint_dir) / f"{STATE_PREFIX}{step:08d}"


def saved_states(checkpoint_dir: Path) -> list[Path]:
    """The complete state directories in ``checkpoint_dir``, oldest step first."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return []
    states = [
        path
        for path in root.iterdir()
        if path.name.startswith(STATE_PREFIX) and path.name[len(STATE_PREFIX) :].isdigit()
        and (path / STATE_JSON).is_file()
    ]
    return sorted(states, key=lambda path: int(path.name[len(STATE_PREFIX) :]))


def latest_state(checkpoint_dir: Path) -> Path | None:
    """The newest complete state directory in ``checkpoint_dir``, or ``None``."""
    states = saved_states(checkpoint_dir)
    return states[-1] if states else None


_LEGACY_FILES = (STATE_JSON, "model.safetensors", "optimizer.safetensors", "ema.safetensors")


def keep_states(checkpoint_dir: Path, keep: list[Path]) -> None:
    """Delete every state directory in ``checkpoint_dir`` that is not in ``keep``, and the single state
    an older layout kept directly in ``checkpoint_dir`` (it is never resumed)."""
    import shutil

    kept = {path.resolve() for path in keep}
    for path in saved_states(checkpoint_dir):
        if path.resolve() not in kept:
            shutil.rmtree(path)
    for name in _LEGACY_FILES:
        (Path(checkpoint_dir) / name).unlink(missing_ok=True)


@dataclass(frozen=True)
class ResumeDecision:
    """Outcome of looking at the saved states.

    Attributes:
        step: Optimizer step to continue from (0 = start over).
        reason: Why an existing state was refused, or ``None``.
        state: The state directory resumed from, or ``None``.
    """

    step: int
    reason: str | None = None
    state: Path | None = None


def fingerprint_difference(saved: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """Describe how two config fingerprints differ (``key: saved -> current``), or ``None`` if equal."""
    keys = sorted(set(saved) | set(current))
    changes = [
        f"{key}: {saved.get(key)!r} -> {current.get(key)!r}"
        for key in keys
        if saved.get(key) != current.get(key)
    ]
    return "; ".join(changes) if changes else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, torch.Tensor):
        return value.item()
    return value


def _trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {name: parameter for name, parameter in model.named_parameters() if parameter.requires_grad}


def _walk(value: Any, path: str) -> list[tuple[str, Any]]:
    """(path, leaf) pairs of a per-parameter optimizer state; nested dicts (bitsandbytes' 8-bit
    ``__bnb_optimizer_quant_state__``) get ``/``-joined paths."""
    if isinstance(value, dict):
        return [item for key, inner in value.items() for item in _walk(inner, f"{path}/{key}")]
    return [(path, value)]


def _place(target: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split("/")
    for parent in parents:
        target = target.setdefault(parent, {})
    target[leaf] = value


def _flatten_optimizer(state_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, parameter_state in state_dict["state"].items():
        for key, value in parameter_state.items():
            for path, leaf in _walk(value, key):
                if isinstance(leaf, torch.Tensor):
                    tensors[f"{index}.{path}"] = leaf.detach().cpu().contiguous().clone()
                else:
                    scalars.setdefault(str(index), {})[path] = _jsonable(leaf)
    return tensors, {"param_groups": _jsonable(state_dict["param_groups"]), "scalars": scalars}


def _unflatten_optimizer(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        index, path = key.split(".", 1)
        _place(state.setdefault(int(index), {}), path, tensor)
    for index, values in meta["scalars"].items():
        for path, value in values.items():
            _place(state.setdefault(int(index), {}), path, value)
    groups = []
    for group in meta["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


def save_training_state(
    directory: Path,
    *,
    step: int,
    fingerprint: Mapping[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler,
    ema: Any | None = None,
    model_state: Mapping[str, torch.Tensor] | None = None,
    optimizer_state: Mapping[str, Any] | None = None,
) -> None:
    """Write the resumable state of ``model`` (its trainable parameters), optimizer, scheduler and EMA.

    Args:
        directory: State directory; replaced atomically.
        step: Number of optimizer steps done.
        fingerprint: JSON-able description of everything that must match to resume.
        model: The (unwrapped) training objective; only parameters with ``requires_grad`` are saved.
        optimizer: Its optimizer.
        lr_scheduler: Its lr scheduler (a ``LambdaLR`` from ``diffusers.optimization.get_scheduler``).
        ema: A ``diffusers.training_utils.EMAModel`` or ``None``.
        model_state: The full weights when ``model`` is sharded (FSDP: ``training/sharding.py``
            gathers them); the trainable ones are saved, as from an unsharded ``model``.
        optimizer_state: The full optimizer state in ``optimizer.state_dict()``'s layout when
            ``optimizer`` is sharded; ``None`` reads ``optimizer.state_dict()``.

    Raises:
        ValueError: ``model_state`` lacks a trainable parameter of ``model``.
    """
    if model_state is None:
        model_tensors = {name: p.detach().cpu().contiguous().clone() for name, p in _trainable(model).items()}
    else:
        missing = sorted(set(_trainable(model)) - set(model_state))
        if missing:
            raise ValueError(f"model_state lacks trainable parameters: {missing[:5]}")
        model_tensors = {
            name: model_state[name].detach().cpu().contiguous().clone() for name in _trainable(model)
        }
    optimizer_tensors, optimizer_meta = _flatten_optimizer(
        optimizer.state_dict() if optimizer_state is None else optimizer_state
    )
    scheduler_state = {k: v for k, v in lr_scheduler.state_dict().items() if k != "lr_lambdas"}
    payload: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "step": step,
        "fingerprint": _jsonable(dict(fingerprint)),
        "optimizer": optimizer_meta,
        "lr_scheduler": _jsonable(scheduler_state),
        "ema": None,
    }
    with atomic_dir(directory) as temporary:
        save_file(model_tensors, str(temporary / "model.safetensors"))
        save_file(optimizer_tensors, str(temporary / "optimizer.safetensors"))
        if ema is not None:
            ema_state = ema.state_dict()
            shadow = {
                str(i): t.detach().cpu().contiguous().clone()
                for i, t in enumerate(ema_state.pop("shadow_params"))
            }
            save_file(shadow, str(temporary / "ema.safetensors"))
            payload["ema"] = _jsonable(ema_state)
        atomic_write_json(temporary / STATE_JSON, payload)


def read_state_step(checkpoint_dir: Path) -> int | None:
    """The step of the newest state in ``checkpoint_dir``, or ``None`` if there is no complete state."""
    state = latest_state(checkpoint_dir)
    if state is None:
        return None
    return int(json.loads((state / STATE_JSON).read_text())["step"])


def load_training_state(
    checkpoint_dir: Path,
    *,
    fingerprint: Mapping[str, Any],
    mode: str,
    total_steps: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler,
    ema: Any | None = None,
    restore_optimizer: bool = True,
) -> ResumeDecision:
    """Restore the newest state in ``checkpoint_dir`` (:func:`save_training_state`) if it matches
    ``fingerprint``.

    Args:
        checkpoint_dir: The stage's checkpoint folder (absent or without a state = fresh start).
        fingerprint: The current run's fingerprint.
        mode: ``auto`` (refuse a mismatching state, with the reason, and start over), ``strict``
            (a mismatch raises) or ``never`` (ignore any state).
        total_steps: The run's length. A state that already reached it is a finished run, not an
            interrupted one: DVC only reruns a stage when an input changed (code included), so such a
            state is stale and is refused in every mode, and training starts over.
        model, optimizer, lr_scheduler, ema: Filled in place when the state is used.
        restore_optimizer: ``False`` leaves ``optimizer`` alone (FSDP loads it after sharding from
            :func:`read_optimizer_state`).

    Returns:
        The step to continue from, the state directory used, and, when a state was refused, the reason.

    Raises:
        ConfigError: In ``strict`` mode, when the state was written under another config.
    """
    directory = latest_state(checkpoint_dir)
    if mode == "never" or directory is None:
        return ResumeDecision(step=0)
    payload = json.loads((directory / STATE_JSON).read_text())
    parameters = _trainable(model)
    model_tensors = load_file(str(directory / "model.safetensors"))
    current = json.loads(json.dumps(_jsonable(dict(fingerprint))))  # tuples -> lists, as saved
    reason = fingerprint_difference(payload.get("fingerprint", {}), current)
    if reason is None and set(model_tensors) != set(parameters):
        reason = "the saved trainable parameters differ from this run's"
    if reason is None and (ema is None) != (payload.get("ema") is None):
        reason = "train.use_ema differs from the saved state"
    if reason is not None:
        message = f"resume state {directory} was written under another config ({reason})"
        if mode == "strict":
            raise ConfigError(f"{message}; delete it or set train.resume=auto")
        return ResumeDecision(step=0, reason=message)
    if int(payload["step"]) >= total_steps:
        return ResumeDecision(
            step=0,
            reason=f"resume state {directory} is a finished run (step {payload['step']} of {total_steps})",
        )
    with torch.no_grad():
        for name, tensor in model_tensors.items():
            parameters[name].copy_(tensor)
    if restore_optimizer:
        optimizer.load_state_dict(read_optimizer_state(directory))
    lr_scheduler.load_state_dict(
        {**payload["lr_scheduler"], "lr_lambdas": [None] * len(optimizer.param_groups)}
    )
    if ema is not None:
        shadow = load_file(str(directory / "ema.safetensors"))
        ema.load_state_dict({**payload["ema"], "shadow_params": [shadow[str(i)] for i in range(len(shadow))]})
    return ResumeDecision(step=int(payload["step"]), state=directory)


def read_optimizer_state(directory: Path) -> dict[str, Any]:
    """The optimizer state saved in state ``directory``, in ``optimizer.state_dict()``'s layout."""
    payload = json.loads((Path(directory) / STATE_JSON).read_text())
    tensors = load_file(str(Path(directory) / "optimizer.safetensors"))
    return _unflatten_optimizer(tensors, payload["optimizer"])
