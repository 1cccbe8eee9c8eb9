"""Data preparation: degradations, settings, sources, folder readers, manifest, dataset and validation.

Public API other areas use: :func:`read_manifest`, :class:`ManifestRow`, :class:`PairedImageDataset`
(import it from ``unildiff.data.dataset``; it needs torch) and :func:`read_image`.
"""

from unildiff.data.imageio import read_image, write_image
from unildiff.data.manifest import ManifestRow, read_manifest

__all__ = ["ManifestRow", "read_image", "read_manifest", "write_image"]
