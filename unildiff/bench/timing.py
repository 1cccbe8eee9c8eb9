"""Timing primitives of ``unildiff bench``: medians, FLOP counts, peak memory, graph-call accounting.

Per backend, size and step count it reports the median wall time, images/s, the peak memory, the
FLOPs of one call (counted once on the torch modules with ``torch.utils.flop_counter.FlopCounterMode``:
the computation is the same whichever backend runs it) and the achieved FLOP/s. End to end it also
reports the sampling-loop overhead: the pipeline's wall time minus the time spent inside graph calls
and prompt encoding, as a percentage.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` (reset per measurement; TensorRT and ONNX
Runtime allocations outside torch are not seen); on CPU the process's RSS high-water mark
(``resource.getrusage``), which only grows, so it bounds rather than isolates each measurement.
"""

from __future__ import annotations

import functools
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


def synchronize(device: str) -> None:
    """Wait for queued CUDA work so wall-clock timings are honest."""
    if device == "cuda":
        torch.cuda.synchronize()


def _cpu_flash_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of ``aten._scaled_dot_product_flash_attention_for_cpu``: QK^T and PV, as on CUDA."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# FlopCounterMode knows the CUDA attention kernels but not the CPU one that F.scaled_dot_product_attention
# dispatches to, which it counted as 0 FLOPs (the tiny denoiser at 128 px: 2.2 of 6.5 GFLOP counted).
CPU_ATTENTION_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention_flops}


def count_flops(function: Callable[[], object]) -> int:
    """FLOPs of one call of ``function`` (matmuls, convolutions, attention) with FlopCounterMode."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter, torch.no_grad():
        function()
    return int(counter.get_total_flops())


def peak_memory_bytes(device: str) -> int:
    """CUDA: bytes allocated by torch at peak since the last reset; CPU: the process RSS high-water."""
    if device == "cuda":
        return int(torch.cuda.max_memory_allocated())
    scale = 1 if platform.system() == "Darwin" else 1024  # ru_maxrss is KiB on Linux, bytes on macOS
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale)


@dataclass(frozen=True)
class Timing:
    """Median and all repeat times (ms) of one measurement plus its peak memory (bytes)."""

    median_ms: float
    times_ms: tuple[float, ...]
    peak_memory_bytes: int


def measure(function: Callable[[], object], *, repeats: int, warmup: int, device: str) -> Timing:
    """Call ``function`` ``warmup`` times untimed, then ``repeats`` times timed; returns the median."""
    with torch.no_grad():
        for _ in range(warmup):
            function()
        synchronize(device)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            function()
            synchronize(device)
            times.append((time.perf_counter() - start) * 1000.0)
    return Timing(statistics.median(times), tuple(times), peak_memory_bytes(device))


@dataclass(frozen=True)
class ComponentResult:
    """One row of ``reports/bench.json``."""

    median_ms: float
    images_per_s: float
    peak_memory_mb: float
    flops_per_call: int
    achieved_gflops_per_s: float

    @classmethod
    def from_timing(cls, timing: Timing, images: int, flops: int) -> ComponentResult:
        seconds = timing.median_ms / 1000.0
        return cls(
            median_ms=round(timing.median_ms, 4),
            images_per_s=round(images / seconds, 4),
            peak_memory_mb=round(timing.peak_memory_bytes / 2**20, 2),
            flops_per_call=flops,
            achieved_gflops_per_s=round(flops / seconds / 1e9, 4),
        )

    def to_dict(self) -> dict:
        return asdict(self)


class TimedGraphs:
    """Wrap ``RestorationGraphs`` and add up the wall time spent inside its calls (for loop overhead)."""

    def __init__(self, graphs, device: str) -> None:
        self.graphs = graphs
        self.device = device
        self.pixel_multiple = graphs.pixel_multiple
        self.seconds = 0.0
        self.calls = 0
        self.denoise_calls = 0

    def _timed(self, method, *args):
        synchronize(self.device)
        start = time.perf_counter()
        result = method(*args)
        synchronize(self.device)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return result

    def encode_lq(self, lq):
        return self._timed(self.graphs.encode_lq, lq)

    def denoise(self, *args):
        self.denoise_calls += 1
        return self._timed(self.graphs.denoise, *args)

    def decode(self, latents, skips):
        return self._timed(self.graphs.decode, latents, skips)

    def timed_prompt_encoder(self, prompt_encoder):
        """``prompt_encoder`` whose time also counts as graph time (it is a model call, not loop work)."""

        @functools.wraps(prompt_encoder)
        def encode(prompts):
            return self._timed(prompt_encoder, prompts)

        return encode


def host_description(device: str) -> dict:
    """The machine the numbers come from."""
    description = {
        "device": device,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if device == "cuda":
        description["gpu"] = torch.cuda.get_device_name()
    try:
        import onnxruntime

        description["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        description["onnxruntime"] = None
    return description
