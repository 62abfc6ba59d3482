"""The one image decoder: an image file as it is stored, uint8 (H, W, C) with C of 1, 2,
3 or 4, EXIF orientation applied (a phone photo is upright, as its viewer shows it).

Training (`decode_path`, mapped over a folder dataset's files by tf.data) and `predict`
(`read_image`) both decode with it, so a model sees the same pixels in both. `predict`
feeds the arrays, unconverted, to the SavedModel's ``serving_default`` signature, whose
`cnnbuilder.data.preprocess` does the rest; training first brings them to the dataset's
channel count by the same rule (`to_channels`: alpha dropped, grey tiled to RGB).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from cnnbuilder.data.image_checks import MAX_IMAGE_PIXELS
from cnnbuilder.errors import DataError

__all__ = ["decode_path", "read_image", "to_channels"]

# Pillow modes -> the mode to convert to first (None: keep); 16-bit and float grey are
# scaled separately in `_grey_to_uint8`.
_MODE_CONVERSIONS = {
    "L": None, "LA": None, "RGB": None, "RGBA": None,
    "1": "L", "La": "LA", "P": "RGB", "PA": "RGBA", "RGBa": "RGBA", "RGBX": "RGB",
}
_WIDE_GREY_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")


def read_image(path) -> np.ndarray:
    """An image file as uint8 (H, W, C): C is 1 grey, 2 grey+alpha, 3 RGB or 4 RGBA.

    EXIF orientation is applied (phone JPEGs); palette images become RGB, bilevel grey,
    16-bit and float grey are scaled to 0..255, other colour spaces (CMYK...) RGB.

    Raises:
        DataError: the file is missing, unreadable or empty.
    """
    from PIL import Image, ImageOps

    path = Path(path)
    if not path.is_file():
        raise DataError(f"Image {path} does not exist (or is not a file); expected a PNG or JPEG file.")
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:  # checked before decoding
                raise DataError(
                    f"The image {path} has {image.width}x{image.height} pixels, more than the "
                    f"{MAX_IMAGE_PIXELS:,} cnnbuilder decodes (a decompression bomb, or a photo "
                    "to shrink first).")
            image = ImageOps.exif_transpose(image)
            array = _to_uint8(image)
    except DataError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise DataError(
            f"Cannot read the image {path}: {error}. Expected a PNG or JPEG file "
            "(anything Pillow can decode)."
        ) from error
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise DataError(f"The image {path} is empty ({array.shape[1]}x{array.shape[0]} pixels).")
    return array


def _to_uint8(image) -> np.ndarray:
    """A decoded Pillow image as uint8 (H, W, C) with C in 1..4."""
    if image.mode in _WIDE_GREY_MODES:
        return _grey_to_uint8(image)
    target = _MODE_CONVERSIONS.get(image.mode, "RGB")
    if target is not None:
        image = image.convert(target)
    array = np.asarray(image, dtype=np.uint8)
    return array[..., np.newaxis] if array.ndim == 2 else array


def _grey_to_uint8(image) -> np.ndarray:
    """16-bit ("I;16", "I") grey scaled 65535 -> 255; float ("F") grey clipped to 0..255."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode != "F":
        values = values / 257.0  # 65535 / 255: full 16-bit range onto full 8-bit range
    return np.clip(np.round(values), 0, 255).astype(np.uint8)[..., np.newaxis]


def to_channels(array: np.ndarray, channels: int) -> np.ndarray:
    """A stored uint8 image brought to `channels` (1 or 3) as `preprocess` does:
    alpha dropped (2 -> 1, 4 -> 3), grey tiled to RGB, RGB to grey with ITU-R 601 luma
    (`tf.image.rgb_to_grayscale`'s weights), rounded."""
    if array.shape[-1] in (2, 4):
        array = array[..., :-1]
    if array.shape[-1] == channels:
        return array
    if channels == 3:
        return np.repeat(array, 3, axis=-1)
    luma = array.astype(np.float64) @ np.array([0.2989, 0.5870, 0.1140])
    return np.clip(np.round(luma), 0, 255).astype(np.uint8)[..., np.newaxis]


def decode_path(path: tf.Tensor, channels: int) -> tf.Tensor:
    """tf.data's decoding of one image file: `read_image` (so EXIF orientation and every
    mode conversion are predict's own) brought to `channels`; a file it cannot read fails
    the op (`undecodable` finds those before training)."""
    def decode(name):
        """The uint8 (H, W, channels) image of the file named by `name` (bytes)."""
        name = name.item() if isinstance(name, np.ndarray) else name  # a 0-d array eagerly
        return to_channels(read_image(name.decode() if isinstance(name, bytes) else str(name)),
                           channels)

    image = tf.numpy_function(decode, [path], tf.uint8, stateful=False)
    return tf.ensure_shape(image, (None, None, channels))
