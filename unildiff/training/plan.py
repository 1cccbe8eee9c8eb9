"""Memory plan of the training stages on paper (``unildiff plan``), recomputable by anyone.

The modules are built on PyTorch's ``meta`` device: they have shapes but no storage, so the SDXL-size
UNet (2.57 B parameters) costs no memory or time to "run". For each training stage this module counts

- trainable and frozen parameters;
- bytes per GPU of weights, gradients and optimizer state under DDP, ZeRO-2 and FSDP (full shard), with
  AdamW (two fp32 moments) or bitsandbytes' 8-bit AdamW (two 1-byte moments);
- activation bytes per sample: the tensors autograd saves for the backward pass, counted with
  ``torch.autograd.graph.saved_tensors_hooks`` during one forward pass on ``meta`` tensors at the planned
  image size, with and without gradient checkpointing of the UNet and the DAEM decoder (diffusers' switch;
  with it, the peak while the backward recomputes one checkpointed block, :func:`checkpointed_peak_bytes`).

Assumptions, stated in the output too: trainable weights are fp32 master weights (4 B), frozen weights
are held in the mixed-precision dtype (2 B for bf16); gradients are fp32; activations are counted in the
module dtype given (bf16 approximates autocast, which keeps a few reductions in fp32). Activation counts
are an **estimate**: allocator fragmentation, temporary buffers and CUDA kernels' workspaces are not
saved tensors and are not counted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

#: Optimizer-state bytes per trainable parameter: AdamW keeps two fp32 moments; bitsandbytes'
#: 8-bit AdamW keeps two uint8 moments (plus per-block scales, under 1 %).
OPTIMIZER_BYTES = {"adamw": 8, "adamw_8bit": 2}
STRATEGIES = ("ddp", "zero2", "fsdp")


@dataclass(frozen=True)
class StageModules:
    """What one training stage holds: its trainable and frozen modules and a forward pass.

    Attributes:
        stage: DVC stage name.
        trainable: Modules whose parameters the stage trains.
        frozen: Modules the stage keeps resident without training them.
        forward: Runs one training forward pass for ``batch`` samples of ``image_size``² on the meta
            device and returns the output tensor (autograd's saved tensors are what is counted).
    """

    stage: str
    trainable: tuple[torch.nn.Module, ...]
    frozen: tuple[torch.nn.Module, ...]
    forward: Callable[[int, int], torch.Tensor]


@dataclass(frozen=True)
class StagePlan:
    """Per-GPU memory of one stage.

    Attributes:
        stage: DVC stage name.
        trainable_parameters: Parameters trained.
        frozen_parameters: Parameters held frozen.
        state_bytes: ``{strategy: {"weights", "gradients", "optimizer"}}`` bytes per GPU.
        activation_bytes: Saved-for-backward bytes per sample without gradient checkpointing.
        checkpointed_activation_bytes: The peak with gradient checkpointing on (UNet, DAEM decoder), while
            the backward recomputes the block that needs most (:func:`checkpointed_peak_bytes`).
    """

    stage: str
    trainable_parameters: int
    frozen_parameters: int
    state_bytes: dict[str, dict[str, int]]
    activation_bytes: int
    checkpointed_activation_bytes: int


def _count(modules: tuple[torch.nn.Module, ...]) -> int:
    seen: set[int] = set()
    total = 0
    for module in modules:
        for parameter in module.parameters():
            if id(parameter) not in seen:
                seen.add(id(parameter))
                total += parameter.numel()
    return total


def state_bytes(
    trainable: int, frozen: int, gpus: int, optimizer: str, frozen_bytes: int = 2
) -> dict[str, dict[str, int]]:
    """Bytes per GPU of weights, gradients and optimizer state for each of :data:`STRATEGIES`.

    Args:
        trainable: Trainable parameters (fp32 master weights and fp32 gradients).
        frozen: Frozen parameters (``frozen_bytes`` each, never sharded under DDP and ZeRO-2).
        gpus: Data-parallel processes the state is sharded over.
        optimizer: A key of :data:`OPTIMIZER_BYTES`.
        frozen_bytes: Bytes per frozen parameter (2 for bf16/fp16, 4 for fp32).

    Returns:
        ``{"ddp" | "zero2" | "fsdp": {"weights", "gradients", "optimizer"}}``. DDP replicates everything;
        ZeRO-2 shards gradients and optimizer state; FSDP full shard also shards the weights (frozen ones
        included: they are wrapped in the same units).
    """
    if optimizer not in OPTIMIZER_BYTES:
        raise ValueError(f"optimizer must be one of {tuple(OPTIMIZER_BYTES)}, got {optimizer!r}")
    if gpus < 1:
        raise ValueError(f"gpus must be >= 1, got {gpus}")
    weights = 4 * trainable + frozen_bytes * frozen
    gradients = 4 * trainable
    moments = OPTIMIZER_BYTES[optimizer] * trainable
    return {
        "ddp": {"weights": weights, "gradients": gradients, "optimizer": moments},
        "zero2": {"weights": weights, "gradients": -(-gradients // gpus), "optimizer": -(-moments // gpus)},
        "fsdp": {
            "weights": -(-weights // gpus),
            "gradients": -(-gradients // gpus),
            "optimizer": -(-moments // gpus),
        },
    }


def saved_activation_bytes(forward: Callable[[], torch.Tensor]) -> int:
    """Bytes of the activations autograd saves for backward during ``forward()`` (meta tensors welcome).

    A saved tensor counts with the tensor it is a view of (what the backward pass keeps alive), once
    however often it is saved. Parameters, and views of them (a linear layer saves its weight, or its
    transpose), are not activations: they are resident anyway and counted as weights.
    """
    counter = _SavedBytes()
    with counter, _fused_attention_on_meta():
        forward()
    return counter.total


def checkpointed_peak_bytes(forward: Callable[[], torch.Tensor], modules: tuple[torch.nn.Module, ...]) -> int:
    """Peak saved-activation bytes of ``forward()`` with gradient checkpointing on in ``modules``.

    The forward saves only what the checkpointed regions do not (their inputs and everything outside
    them). The backward then recomputes the regions one at a time, last first: while region i's
    backward runs, its own activations are saved again, next to what was saved before region i began
    (what came after it is already freed). The peak is therefore the larger of the forward's total and
    the largest (saved before region i + region i's own activations). Each region (a function handed to
    diffusers' ``_gradient_checkpointing_func``) is counted by running it once more without
    checkpointing; its output is discarded.
    """
    outer = _SavedBytes()
    peak = 0
    patched = []

    def counting(original: Callable) -> Callable:
        def run(function: Callable, *args, **kwargs):
            nonlocal peak
            region = _SavedBytes()
            with region:
                function(*args, **kwargs)
            peak = max(peak, outer.total + region.total)
            return original(function, *args, **kwargs)

        return run

    for module in {id(m): m for root in modules for m in root.modules()}.values():
        original = module.__dict__.get("_gradient_checkpointing_func")
        if original is not None and getattr(module, "gradient_checkpointing", False):
            module._gradient_checkpointing_func = counting(original)
            patched.append((module, original))
    try:
        with outer, _fused_attention_on_meta():
            forward()
    finally:
        for module, original in patched:
            module._gradient_checkpointing_func = original
    return max(peak, outer.total)


class _SavedBytes:
    """``saved_tensors_hooks`` that add up the bytes of the distinct saved activations (context manager)."""

    def __init__(self) -> None:
        self.total = 0
        self._seen: set[int] = set()
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor)

    def __enter__(self) -> _SavedBytes:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        base = tensor
        while base._base is not None:
            base = base._base
        if isinstance(base, torch.nn.Parameter):
            return tensor
        if base.device.type == "meta":
            key, size = id(base), base.numel() * base.element_size()
        else:
            storage = base.untyped_storage()
            key, size = storage.data_ptr(), storage.nbytes()
        if key not in self._seen:
            self._seen.add(key)
            self.total += size
        return tensor


@contextlib.contextmanager
def _fused_attention_on_meta() -> Iterator[None]:
    """Count attention as the fused kernels that training runs, not as the math fallback.

    On the meta device ``F.scaled_dot_product_attention`` takes the math path, which saves the
    (B, heads, N, N) attention weights; on CUDA (flash / memory-efficient) and on CPU (flash) it saves
    q, k, v, the output and the log-sum-exp. Measured at 1/16 of SDXL's width, 128², stage 1a: 36.5 MiB
    counted with the math path, 19.5 MiB with the fused one, 18.0 MiB in one real CPU step
    (``docs/scaling.md``). Meta inputs are routed to the fused CPU kernel, whose meta implementation
    saves what the fused kernels save.
    """
    functional = torch.nn.functional
    original = functional.scaled_dot_product_attention

    def fused(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        if query.device.type != "meta" or kwargs.get("enable_gqa"):
            return original(query, key, value, attn_mask, dropout_p, is_causal, scale=scale, **kwargs)
        kernel = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
        return kernel(query, key, value, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)[0]

    functional.scaled_dot_product_attention = fused
    try:
        yield
    finally:
        functional.scaled_dot_product_attention = original


def plan_stage(
    modules: StageModules,
    image_size: int,
    gpus: int,
    optimizer: str,
    checkpointing: Callable[[bool], None],
    frozen_bytes: int = 2,
) -> StagePlan:
    """The :class:`StagePlan` of one stage: parameter counts, state bytes and activations per sample.

    Args:
        modules: The stage's modules and forward pass (built on the meta device).
        image_size: Training crop side in pixels (512 for the paper).
        gpus: Data-parallel processes.
        optimizer: ``adamw`` or ``adamw_8bit``.
        checkpointing: Switches gradient checkpointing (UNet, DAEM decoder) on (``True``) or off.
        frozen_bytes: Bytes per frozen parameter.
    """
    for module in modules.trainable:
        module.requires_grad_(True).train()
    for module in modules.frozen:
        module.requires_grad_(False).eval()
    trainable, frozen = _count(modules.trainable), _count(modules.frozen)
    checkpointing(False)
    plain = saved_activation_bytes(lambda: modules.forward(1, image_size))
    checkpointing(True)
    everything = (*modules.trainable, *modules.frozen)
    checkpointed = checkpointed_peak_bytes(lambda: modules.forward(1, image_size), everything)
    checkpointing(False)
    return StagePlan(
        stage=modules.stage,
        trainable_parameters=trainable,
        frozen_parameters=frozen,
        state_bytes=state_bytes(trainable, frozen, gpus, optimizer, frozen_bytes),
        activation_bytes=plain,
        checkpointed_activation_bytes=checkpointed,
    )


def micro_batch(plan: StagePlan, strategy: str, gpu_bytes: int, checkpointed: bool) -> int:
    """Samples per GPU and micro-step that fit ``gpu_bytes`` beside the resident state (0: none fits)."""
    resident = sum(plan.state_bytes[strategy].values())
    per_sample = plan.checkpointed_activation_bytes if checkpointed else plan.activation_bytes
    return max(0, (gpu_bytes - resident) // max(per_sample, 1))


def format_plan(plans: list[StagePlan], gpus: int, optimizer: str, image_size: int, global_batch: int,
                gpu_gib: float, dtype: str) -> str:  # fmt: skip
    """A Markdown report of ``plans`` (GiB = 2³⁰ bytes): per strategy, the resident state, activations
    per sample and the micro-batch and gradient accumulation that reach ``global_batch`` on ``gpus``
    GPUs of ``gpu_gib`` each."""

    def gib(value: float) -> str:
        return f"{value / 2**30:.2f}"

    per_gpu = -(-global_batch // gpus)

    def schedule(plan: StagePlan, strategy: str, checkpointed: bool) -> str:
        fits = micro_batch(plan, strategy, int(gpu_gib * 2**30), checkpointed)
        if fits == 0:
            return "does not fit"
        micro = max(size for size in range(1, min(fits, per_gpu) + 1) if per_gpu % size == 0)
        return f"{micro} × {per_gpu // micro}"

    lines = [
        f"# Memory plan (estimate): {gpus} GPU(s) of {gpu_gib:g} GiB, {optimizer}, {image_size}² crops, "
        f"global batch {global_batch}, {dtype}",
        "",
        "Trainable weights fp32 (master), frozen weights in the training dtype, gradients fp32.",
        "Activations: tensors saved for backward per sample, counted on the meta device (an estimate: no",
        "allocator fragmentation, temporary buffers or kernel workspaces; with ckpt, the peak while the",
        "backward recomputes one block). ckpt = train.gradient_checkpointing (UNet, DAEM decoder).",
        f"Micro-batch × accumulation = {per_gpu} samples per GPU and optimizer step.",
        "",
        "| stage | trainable | frozen | strategy | weights | gradients | optimizer | activations/sample "
        "(no ckpt / ckpt) | micro-batch × accumulation (no ckpt / ckpt) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for plan in plans:
        for strategy in STRATEGIES:
            state = plan.state_bytes[strategy]
            lines.append(
                f"| {plan.stage} | {plan.trainable_parameters / 1e6:.1f} M | "
                f"{plan.frozen_parameters / 1e6:.1f} M | {strategy} | {gib(state['weights'])} | "
                f"{gib(state['gradients'])} | {gib(state['optimizer'])} | "
                f"{gib(plan.activation_bytes)} / {gib(plan.checkpointed_activation_bytes)} | "
                f"{schedule(plan, strategy, False)} / {schedule(plan, strategy, True)} |"
            )
    return "\n".join(lines) + "\n"


def stage_modules(
    unet_config: dict,
    vae_config: dict,
    daff_config,
    daem_config,
    dtype: torch.dtype = torch.bfloat16,
    device: str = "meta",
) -> tuple[list[StageModules], Callable[[bool], None]]:
    """The three training stages of UniLDiff on the meta device, for :func:`plan_stage` (or on a real
    device with random weights and inputs, to measure a training step against the plan).

    Text encoders are not resident during training (the prompt table is computed once), and stage 1
    reads cached latents, so the VAE appears only in stage 2 (its encoder gives the LQ skips).

    Args:
        unet_config: ``UNet2DConditionModel`` config (SDXL's for the paper).
        vae_config: ``AutoencoderKL`` config.
        daff_config: ``DAFFConfig``.
        daem_config: ``DAEMConfig``.
        dtype: Module and activation dtype of the estimate.
        device: ``meta`` (shapes only) or a real device (random weights and standard-normal inputs).

    Returns:
        The stages ``stage1a``, ``stage1b``, ``stage2`` and the checkpointing switch of the UNet
        and the DAEM decoder (``train.gradient_checkpointing``).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from unildiff.models.conditioner import encode_with_skips
    from unildiff.models.daff import DAFF
    from unildiff.models.decoder import DAEMDecoder
    from unildiff.models.denoiser import UniLDiffDenoiser
    from unildiff.models.lq_encoder import LQEncoder

    def cast(module: torch.nn.Module) -> torch.nn.Module:
        # nn.Module.to: ModelMixin.to warns about fp32-kept modules, which these classes do not have.
        return torch.nn.Module.to(module, dtype)

    with torch.device(device):
        unet = cast(UNet2DConditionModel(**unet_config))
        vae = cast(AutoencoderKL(**vae_config))
        lq_encoder = cast(LQEncoder.from_vae(vae, num_scales=daff_config.lq_scales))
        daff = cast(DAFF.from_unet(unet, daff_config, lq_encoder.scale_channels))
        decoder = cast(DAEMDecoder.from_vae(vae, daem_config))
    denoiser = UniLDiffDenoiser(unet, daff)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    time_dims = 6 * unet.config.addition_time_embed_dim
    pooled_dim = unet.config.projection_class_embeddings_input_dim - time_dims

    def meta(*shape: int) -> torch.Tensor:  # (random values off the meta device)
        return torch.randn(*shape, device=device, dtype=dtype)

    def denoise(batch: int, size: int) -> torch.Tensor:
        lq = meta(batch, 3, size, size)
        latent = meta(batch, unet.config.in_channels, size // factor, size // factor)
        timesteps = torch.full((batch,), 500, dtype=torch.long, device=device)
        text = meta(batch, 77, unet.config.cross_attention_dim)
        return denoiser(latent, timesteps, lq_encoder(lq), text, meta(batch, pooled_dim), meta(batch, 6))

    def decode(batch: int, size: int) -> torch.Tensor:
        with torch.no_grad():
            skips = encode_with_skips(vae, meta(batch, 3, size, size))[1]
        latent = meta(batch, vae.config.latent_channels, size // factor, size // factor)
        return decoder(latent, skips).sample

    def checkpointing(enabled: bool) -> None:  # train.gradient_checkpointing: the UNet and the DAEM decoder
        for module in (unet, decoder):
            if enabled:
                module.enable_gradient_checkpointing()
            else:
                module.disable_gradient_checkpointing()

    stages = [
        StageModules("stage1a", (daff,), (unet, lq_encoder), denoise),
        StageModules("stage1b", (lq_encoder, daff, unet), (), denoise),
        StageModules("stage2", (decoder,), (vae.encoder,), decode),
    ]
    return stages, checkpointing
