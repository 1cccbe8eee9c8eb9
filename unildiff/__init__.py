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
