"""``params.yaml: bench`` (:class:`BenchConfig`) and its JSON form, which crosses the process boundary of
the per-backend bench and is recorded in ``reports/bench.json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from unildiff.backends import Backend
from unildiff.errors import ConfigError
from unildiff.export.config import SIZE_MULTIPLE, OnnxRuntimeConfig


@dataclass(frozen=True)
class BenchConfig:
    """``params.yaml: bench`` — ``unildiff bench``.

    Attributes:
        sizes: square image sides (pixels, multiples of 8) to time.
        steps: sampling step counts for the end-to-end timing.
        repeats: timed repetitions per measurement (the median is reported).
        warmup: untimed calls before timing.
        backends: backends to time; unavailable ones are recorded as skipped with the reason.
        device: ``cpu`` or ``cuda``.
        dtype: ``fp32`` | ``bf16`` | ``fp16`` for the torch backend (CUDA only for the half types).
        onnxruntime: ONNX Runtime session options.
        rounds: fresh processes per backend, alternating backends round by round; each row reports
            its median round (process isolation only: ``run_bench_isolated``).
        photo_width: width of the photo row (one restoration with the ``sampling`` settings as they
            are, automatic tiling included, in seconds per megapixel); 0 leaves the row out.
        photo_height: height of the photo row.
        photo_repeats: timed restorations of the photo (the median is reported).
    """

    sizes: tuple[int, ...] = (64,)
    steps: tuple[int, ...] = (4,)
    repeats: int = 5
    warmup: int = 1
    backends: tuple[str, ...] = ("torch", "onnxruntime", "tensorrt")
    device: str = "cpu"
    dtype: str = "fp32"
    onnxruntime: OnnxRuntimeConfig = field(default_factory=OnnxRuntimeConfig)
    rounds: int = 1
    photo_width: int = 1155
    photo_height: int = 866
    photo_repeats: int = 1

    def __post_init__(self) -> None:
        if self.photo_width and (self.photo_width < 16 or self.photo_height < 16 or self.photo_repeats < 1):
            raise ConfigError(
                "bench.photo_width and bench.photo_height must be >= 16 (photo_width 0 = no photo row) and "
                f"bench.photo_repeats >= 1, got {self.photo_width}x{self.photo_height}, {self.photo_repeats}"
            )
        if self.rounds < 1:
            raise ConfigError(f"bench.rounds must be >= 1, got {self.rounds}")
        if not self.sizes or any(size < 16 or size % SIZE_MULTIPLE for size in self.sizes):
            raise ConfigError(f"bench.sizes must be multiples of 8 and >= 16, got {list(self.sizes)}")
        if not self.steps or any(step < 1 for step in self.steps):
            raise ConfigError(f"bench.steps must be positive integers, got {list(self.steps)}")
        if self.repeats < 1 or self.warmup < 0:
            raise ConfigError(
                f"bench.repeats must be >= 1 and bench.warmup >= 0, got {self.repeats}/{self.warmup}"
            )
        known = tuple(backend.value for backend in Backend)
        for backend in self.backends:
            if backend not in known:
                raise ConfigError(f"bench.backends: unknown backend {backend!r} (valid: {', '.join(known)})")
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"bench.device must be cpu or cuda, got {self.device!r}")
        if self.dtype not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"bench.dtype must be fp32, bf16 or fp16, got {self.dtype!r}")
        if self.dtype != "fp32" and self.device != "cuda":
            raise ConfigError(f"bench.dtype={self.dtype} needs bench.device=cuda")


def config_description(config: BenchConfig) -> dict:
    """The bench settings, JSON-ready."""
    values = asdict(config)
    values["onnxruntime"]["optimization"] = config.onnxruntime.optimization.value
    return values


def bench_config_from_dict(values: dict) -> BenchConfig:
    """Inverse of ``config_description``: the JSON form of a ``BenchConfig`` back to the dataclass."""
    values = dict(values)
    onnxruntime = OnnxRuntimeConfig(**values.pop("onnxruntime"))
    for key in ("sizes", "steps", "backends"):
        values[key] = tuple(values[key])
    return BenchConfig(**values, onnxruntime=onnxruntime)
