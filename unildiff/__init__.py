"""UniLDiff: all-in-one image restoration with latent-diffusion priors."""

import logging

__version__ = "0.1.0"

#: bitsandbytes (a dependency of pyiqa, imported by diffusers whenever it is installed) logs this at
#: import on CPUs with AVX512-BF16: an optional 4-bit CPU kernel, which UniLDiff never uses, is missing.
BITSANDBYTES_KERNEL_NOTICE = "Failed to load CPU gemm_4bit_forward from kernels-community"


class _DropMessage(logging.Filter):
    """Drops the records whose message starts with ``prefix``; every other record passes."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


# Attached before diffusers imports bitsandbytes (getLogger returns the logger bitsandbytes will use).
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_DropMessage(BITSANDBYTES_KERNEL_NOTICE))

#: Public names, imported on first use so that ``import unildiff`` (and ``unildiff --help``) stays fast.
#: diffusers resolves a model folder's components by name in this namespace (model_index.json lists
#: ``["unildiff", "DAFF"]`` etc.).
_LAZY = {
    "UniLDiffPipeline": "unildiff.pipeline_unildiff",
    "UniLDiffPipelineOutput": "unildiff.pipeline_unildiff",
    "LQEncoder": "unildiff.models.lq_encoder",
    "DAFF": "unildiff.models.daff",
    "DAEMDecoder": "unildiff.models.decoder",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'unildiff' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
