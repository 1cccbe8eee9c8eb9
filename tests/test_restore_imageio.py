"""Mode-preserving image I/O: RGB, RGBA (alpha kept), grayscale, 16-bit, odd sizes; bad files named."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from unildiff.data.imageio import image_to_tensor, tensor_to_image
from unildiff.errors import DataError
from unildiff.imageio import read_image, write_image


def _write_raw(path, array):
    assert cv2.imwrite(str(path), array)
    return path


@pytest.mark.parametrize(
    ("shape", "dtype", "channels", "bit_depth"),
    [
        ((13, 17, 3), np.uint8, 3, 8),
        ((13, 17, 4), np.uint8, 4, 8),
        ((13, 17), np.uint8, 1, 8),
        ((9, 21), np.uint16, 1, 16),
        ((9, 21, 3), np.uint16, 3, 16),
        ((9, 21, 4), np.uint16, 4, 16),
    ],
)
def test_round_trip_keeps_mode_size_and_values(tmp_path, shape, dtype, channels, bit_depth):
    rng = np.random.default_rng(0)
    array = rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype, endpoint=True)
    source = _write_raw(tmp_path / "in.png", array)
    image = read_image(source)
    assert (image.channels, image.bit_depth, image.height, image.width) == (
        channels,
        bit_depth,
        shape[0],
        shape[1],
    )
    assert image.rgb.shape == (shape[0], shape[1], 3) and image.rgb.dtype == np.float32
    assert (image.alpha is not None) == (channels == 4)
    # through the tensor conversion the pipeline uses, and back to a file
    rgb = tensor_to_image(image_to_tensor(image.rgb))
    written = cv2.imread(str(write_image(tmp_path / "out.png", rgb, like=image)), cv2.IMREAD_UNCHANGED)
    assert written.dtype == dtype and written.shape == array.shape
    tolerance = 1 if dtype == np.uint8 else 2
    assert np.abs(written.astype(np.int64) - array.astype(np.int64)).max() <= tolerance


def test_alpha_is_copied_not_restored(tmp_path):
    array = np.zeros((8, 8, 4), np.uint8)
    array[..., 3] = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    image = read_image(_write_raw(tmp_path / "in.png", array))
    written = cv2.imread(
        str(write_image(tmp_path / "o.png", np.ones((8, 8, 3), np.float32), like=image)), cv2.IMREAD_UNCHANGED
    )
    assert np.array_equal(written[..., 3], array[..., 3])
    assert (written[..., :3] == 255).all()


def test_corrupt_empty_unsupported_and_budget_errors_name_the_file(tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    with pytest.raises(DataError, match="corrupt.png"):
        read_image(corrupt)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty.png"):
        read_image(empty)
    with pytest.raises(DataError, match="unsupported"):
        read_image(tmp_path / "notes.txt")
    big = _write_raw(tmp_path / "big.png", np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(DataError, match="600 pixels"):
        read_image(big, max_pixels=599)
    assert read_image(big, max_pixels=600).width == 30


def test_write_refuses_size_change(tmp_path):
    image = read_image(_write_raw(tmp_path / "in.png", np.zeros((8, 8, 3), np.uint8)))
    with pytest.raises(DataError, match="differs"):
        write_image(tmp_path / "o.png", np.zeros((8, 9, 3), np.float32), like=image)
    assert not (tmp_path / "o.png").exists()
