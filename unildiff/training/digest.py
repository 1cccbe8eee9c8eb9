"""Content digests that key resumable states to their inputs (data, prior, earlier stages)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

#: Files larger than this are keyed by name and size only (an SDXL checkpoint would take minutes to hash).
FULL_HASH_LIMIT = 64 * 1024 * 1024


def digest_tensors(*tensors: torch.Tensor) -> str:
    """SHA-256 (first 16 hex digits) of the bytes of ``tensors``."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def digest_strings(*values: str) -> str:
    """SHA-256 (first 16 hex digits) of a sequence of strings."""
    return hashlib.sha256("\x00".join(values).encode()).hexdigest()[:16]


def digest_directory(path: str | Path) -> str:
    """SHA-256 (16 hex digits) of a directory's file names and contents (names + sizes for huge files)."""
    root = Path(path)
    digest = hashlib.sha256()
    for file in sorted(item for item in root.rglob("*") if item.is_file()):
        size = file.stat().st_size
        digest.update(f"{file.relative_to(root)}:{size}".encode())
        if size <= FULL_HASH_LIMIT:
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]
