"""Sharded training through accelerate's FSDP2: full weights out, full optimizer state in and out.

Under ``distributed_type: FSDP`` (``fsdp_version: 2``, ``configs/accelerate/*_fsdp.yaml``) the loop calls
torch's ``fully_shard`` on the training objective's units and the objective in place
(:func:`shard_objective`, the units accelerate's ``prepare`` would pick, without containers) before
``prepare``: every parameter becomes a ``DTensor`` holding this rank's shard, so ``module.state_dict()``
and ``save_pretrained`` no longer see the weights. This module gathers them back with accelerate's and
torch's documented APIs:

- weights: ``accelerator.get_state_dict(module)`` (torch's ``get_model_state_dict`` with
  ``full_state_dict=True, cpu_offload=True``) for a delivered module; ``DTensor.full_tensor()`` per
  trained parameter for the resumable state. The full tensors end on the main process, nothing elsewhere;
- optimizer state: ``torch.distributed.checkpoint.state_dict.get_optimizer_state_dict`` /
  ``set_optimizer_state_dict`` with ``full_state_dict=True``. The resumable state holds the **full**
  optimizer state written by the main process, in the same layout as an unsharded run (tensors keyed
  ``<index>.<name>`` in ``optimizer.safetensors``), so a state is one set of files whatever the process
  count or strategy. On resume the main process reads it and torch broadcasts and re-shards it
  (``broadcast_from_rank0=True``); the weights are loaded into the plain modules before ``prepare`` shards
  them (every process reads ``model.safetensors``: the checkpoint folder must be shared between nodes).

Every function here that gathers is a collective: call it on every process.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

from unildiff.errors import ConfigError

# FQN pieces that wrappers insert (activation checkpointing, torch.compile); torch's own state-dict API
# strips the same ones, so the names match the unwrapped objective's.
_WRAPPER_PREFIXES = ("_checkpoint_wrapped_module.", "_orig_mod.")


def is_sharded(accelerator: Any) -> bool:
    """Whether ``accelerator`` shards the weights (FSDP2).

    Raises:
        ConfigError: FSDP version 1 or DeepSpeed, which this loop does not support.
    """
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if kind == DistributedType.DEEPSPEED:
        raise ConfigError(
            "train.accelerate_config: DeepSpeed is not supported (untested here); use an FSDP2 config "
            "(configs/accelerate/*_fsdp.yaml)"
        )
    if kind != DistributedType.FSDP:
        return False
    version = accelerator.state.fsdp_plugin.fsdp_version
    if version != 2:
        raise ConfigError(
            f"train.accelerate_config: fsdp_version {version} is not supported; set fsdp_version: 2"
        )
    return True


def shard_on_cpu(accelerator: Any) -> bool:
    """Switch a CPU ``accelerator`` to FSDP2 when ``accelerate launch`` was given an FSDP config.

    accelerate builds FSDP only on accelerators: on a CPU host an FSDP config gives ``MULTI_CPU`` (DDP
    over gloo), although it exports the config (``ACCELERATE_USE_FSDP``, ``FSDP_*``) to the processes.
    torch's FSDP2 runs on CPU tensors over gloo, so this sets the accelerator's state to ``FSDP`` with the
    plugin those variables describe (``FullyShardedDataParallelPlugin()`` reads them); ``prepare`` then
    calls ``fully_shard`` as on GPUs. Nothing changes without that variable or in a single process.

    Returns:
        Whether the accelerator now shards.
    """
    import os

    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    wanted = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if not wanted or accelerator.distributed_type != DistributedType.MULTI_CPU:
        return False
    plugin = FullyShardedDataParallelPlugin()
    for state in (PartialState(), accelerator.state):  # AcceleratorState re-reads PartialState's
        state.distributed_type = DistributedType.FSDP
    accelerator.state.fsdp_plugin = plugin
    return True


def check_sharded_config(config: Any) -> None:
    """Refuse the ``train`` settings that the sharded path does not implement.

    Raises:
        ConfigError: ``train.use_ema`` or ``train.optimizer=adamw_8bit`` under FSDP.
    """
    if config.use_ema:
        raise ConfigError("train.use_ema is not supported under FSDP (the EMA copy is not sharded)")
    if config.optimizer != "adamw":
        raise ConfigError(f"train.optimizer={config.optimizer} is not supported under FSDP; use adamw")


def shard_objective(
    accelerator: Any, objective: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> list[str]:
    """Apply ``fully_shard`` to ``objective``'s shard units and to the objective itself, before ``prepare``.

    The units are the ones accelerate's FSDP2 ``prepare`` picks (its auto-wrap policy from the config:
    ``fsdp_min_num_params`` or the layer classes), except ``ModuleList`` / ``ModuleDict`` containers, which
    ``fully_shard`` refuses (they have no ``forward``): accelerate's size-based policy selects them as soon as
    their contents pass the threshold, and an SDXL UNet's ``down_blocks`` holds hundreds of millions of
    parameters. A module reached from two parents (a frozen VAE shared by two parts of the objective) is one
    unit. ``optimizer`` (still without state) is switched to the sharded parameters; ``prepare`` then finds a
    sharded model and keeps it. Trainable parameters become fp32 under mixed precision, as in ``prepare``.

    Returns:
        The names of the units below the objective, children before parents.
    """
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    if optimizer.state:
        raise ValueError("shard the objective before the optimizer state is loaded")
    plugin = accelerator.state.fsdp_plugin
    plugin.set_auto_wrap_policy(objective)
    policy = fsdp2_prepare_auto_wrap_policy(plugin, objective)
    names = {id(parameter): name for name, parameter in objective.named_parameters()}
    if accelerator.mixed_precision != "no":
        for parameter in objective.parameters():
            if parameter.requires_grad and parameter.dtype != torch.float32:
                parameter.data = parameter.data.to(torch.float32)
    kwargs = {
        "reshard_after_forward": plugin.reshard_after_forward,
        "offload_policy": plugin.cpu_offload,
        "mp_policy": plugin.mixed_precision_policy or MixedPrecisionPolicy(),
    }
    units = []
    for name, module in _children_first(objective):
        if not name or policy is None or isinstance(module, (torch.nn.ModuleList, torch.nn.ModuleDict)):
            continue
        if policy(module) and not isinstance(module, FSDPModule):
            fully_shard(module, **kwargs)
            units.append(name)
    # The root: torch's default keeps its leftovers gathered between forward and backward, as accelerate does.
    fully_shard(objective, **{key: value for key, value in kwargs.items() if key != "reshard_after_forward"})
    sharded = dict(objective.named_parameters())
    for group in optimizer.param_groups:
        group["params"] = [sharded[names[id(parameter)]] for parameter in group["params"]]
    return units


@contextmanager
def gathered(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Gather the weights of the shard units inside a frozen ``module`` that is used without its ``forward``.

    FSDP2 gathers a unit's weights in a hook on the unit's ``forward``. The frozen VAE is called through its
    parts instead (``encode_with_skips``: ``vae.encoder.conv_in``, the down blocks, ``quant_conv``), so when
    it is a unit of its own (the SDXL VAE, 84 M parameters, passes the configs' 50 M threshold) its
    parameters would still be shards there. Inside this context every unit in ``module`` is gathered; they
    are resharded on exit. No-op for a module without units (unsharded runs). For no-grad use only: the
    backward of a gradient through ``module`` would not reduce its gradients.
    """
    from torch.distributed.fsdp import FSDPModule

    units = [unit for unit in module.modules() if isinstance(unit, FSDPModule)]
    for unit in units:
        unit.unshard()
    try:
        yield module
    finally:
        for unit in reversed(units):
            unit.reshard()


def restore_optimizer_parameters(
    optimizer: torch.optim.Optimizer, groups: list[list[torch.nn.Parameter]]
) -> None:
    """Put back the sharded parameters :func:`shard_objective` gave ``optimizer``, after ``prepare``.

    accelerate's ``prepare`` maps the optimizer's parameters to the model's by ``data_ptr``. Every empty
    shard (a parameter with fewer rows than processes: DAEM's (1, C, 1, 1) scales and norms, on 8 GPUs a
    4-row UNet ``conv_out``) has the same one, so on the processes that hold empty shards all of them
    became one parameter: the optimizer held it several times and lacked the others, and the full
    optimizer state gathered at the first checkpoint no longer matched between the processes (gloo:
    "Received data size doesn't match expected size").
    """
    if len(groups) != len(optimizer.param_groups):
        raise ValueError("the optimizer's param groups changed in prepare")
    for group, parameters in zip(optimizer.param_groups, groups, strict=True):
        group["params"] = parameters


def clip_grad_norm_(accelerator: Any, parameters: list[torch.nn.Parameter], max_norm: float) -> None:
    """Clip the gradients of the trained (sharded) ``parameters`` to a total norm of ``max_norm``.

    ``accelerator.clip_grad_norm_`` clips under FSDP only when given every parameter of a prepared model
    (frozen ones included) and otherwise returns without clipping, so the trained subset is clipped here
    with torch's ``clip_grad_norm_``, which reduces the norm over the ``DTensor`` shards.
    """
    accelerator.unscale_gradients()
    torch.nn.utils.clip_grad_norm_(parameters, max_norm)


def full_model_state(
    accelerator: Any, module: torch.nn.Module, trainable_only: bool = False
) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict of ``module`` on the main process, ``{}`` on the others.

    ``module`` is the prepared objective or any module inside it. A collective: call it on every process.
    With ``trainable_only`` (the resumable state) only the parameters that require grad are gathered, one
    at a time, each under its first name in ``named_parameters()``. That also keeps a module held by two
    parts of the objective (stage 2's VAE) from being gathered under both names: torch's full state dict
    serves the second copy from a cache on the main process only, and the processes' collectives then
    no longer match (gloo: "Received data size doesn't match expected size").
    """
    if not trainable_only:
        state = accelerator.get_state_dict(module)
        if not accelerator.is_main_process:
            return {}
        return {name: tensor.detach().cpu().contiguous() for name, tensor in state.items()}
    from torch.distributed.tensor import DTensor

    gathered = {}
    for name, parameter in module.named_parameters():
        if not parameter.requires_grad:
            continue
        full = parameter.full_tensor() if isinstance(parameter, DTensor) else parameter
        if accelerator.is_main_process:
            gathered[_clean(name)] = full.detach().cpu().contiguous()
    return gathered


def full_optimizer_state(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, is_main_process: bool
) -> dict[str, Any]:
    """The full optimizer state of a sharded ``model``, on the main process, in ``optimizer.state_dict()``'s
    layout (state keyed by parameter index in param-group order); ``{}`` on the other processes.

    A collective: call it on every process.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    by_name = get_optimizer_state_dict(model, optimizer, options=options)
    if not is_main_process:
        return {}
    index: dict[str, int] = {}
    groups = []
    for group in by_name["param_groups"]:
        names = list(group["params"])
        groups.append({**group, "params": [index.setdefault(name, len(index)) for name in names]})
    state = {index[name]: dict(values) for name, values in by_name["state"].items()}
    return {"state": state, "param_groups": groups}


def parameter_names(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The names of ``optimizer``'s parameters in param-group order (the index order of its state dict).

    Raises:
        ValueError: An optimizer parameter is not a parameter of ``model``.
    """
    names = {id(parameter): _clean(name) for name, parameter in model.named_parameters()}
    order = []
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            if id(parameter) not in names:
                raise ValueError("an optimizer parameter is not in the model (prepare both together)")
            order.append(names[id(parameter)])
    return order


def load_full_optimizer_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state_dict: Mapping[str, Any] | None,
    is_main_process: bool,
) -> None:
    """Shard a full optimizer state (``optimizer.state_dict()`` layout) into the sharded ``optimizer``.

    Args:
        model: The prepared (sharded) objective.
        optimizer: Its optimizer (not accelerate's wrapper).
        state_dict: The full state on the main process; ignored elsewhere (torch broadcasts it).
        is_main_process: Whether this is the main process.

    A collective: call it on every process.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    by_name: dict[str, Any] = {}
    if is_main_process:
        if state_dict is None:
            raise ValueError("the main process needs the full optimizer state to broadcast")
        names = parameter_names(model, optimizer)
        by_name = {
            "state": {names[int(index)]: values for index, values in state_dict["state"].items()},
            "param_groups": [
                {**group, "params": [names[int(index)] for index in group["params"]]}
                for group in state_dict["param_groups"]
            ],
        }
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_optimizer_state_dict(model, optimizer, optim_state_dict=by_name, options=options)


def full_weight_modules(
    accelerator: Any, modules: Mapping[str, torch.nn.Module]
) -> dict[str, torch.nn.Module]:
    """Modules to ``save_pretrained``: on the main process, each module with its full weights.

    Unsharded runs get the modules themselves back (``save_pretrained`` writes what it always did).
    Under FSDP each module's weights are gathered (:func:`full_model_state`) into a copy built from its
    diffusers config on the meta device (``load_state_dict(assign=True)``, no second allocation); the other
    processes get ``{}``. A collective: call it on every process.

    Args:
        accelerator: The run's ``Accelerator``.
        modules: Name -> diffusers ``ModelMixin`` trained by the run.
    """
    if not is_sharded(accelerator):
        return dict(modules)
    gathered = {}
    for name, module in modules.items():
        state = full_model_state(accelerator, module)
        if not accelerator.is_main_process:
            continue
        with torch.device("meta"):
            plain = type(module).from_config(module.config)
        plain.load_state_dict(state, strict=True, assign=True)
        gathered[name] = plain
    return gathered


def _children_first(root: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """Every module under ``root`` once (named by its first path), each after all the modules inside it.

    A module held by two parents (stage 2's frozen VAE: ``skip_encoder.vae`` and ``latents.vae``) comes
    before both. Reversed ``named_modules()`` does not ensure that: it lists a shared module once, at its
    first path, so the second parent came first and ``fully_shard`` took the shared weights into it; the
    shared module was then sharded a second time (``fully_shard`` fails on parameters that are shards).
    """
    ordered: list[tuple[str, torch.nn.Module]] = []
    seen: set[int] = set()
    stack: list[tuple[str, torch.nn.Module, bool]] = [("", root, False)]
    while stack:  # iterative post-order depth-first search
        name, module, expanded = stack.pop()
        if expanded:
            ordered.append((name, module))
            continue
        if id(module) in seen:
            continue
        seen.add(id(module))
        stack.append((name, module, True))
        for child_name, child in reversed(list(module.named_children())):
            if id(child) not in seen:
                stack.append((f"{name}.{child_name}" if name else child_name, child, False))
    return ordered


def _clean(name: str) -> str:
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name
