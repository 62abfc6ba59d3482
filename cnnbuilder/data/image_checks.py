"""Image files are untrusted input: every file of a folder dataset is checked up front.

A folder's images are decoded lazily by tf.data while a model trains, where a bad file
would stop training in the middle of an epoch. So `load_folder` checks every candidate
before anything trains, in two passes:

1. **Header** (Pillow, no pixels decoded): the file must be a PNG, JPEG, BMP or GIF
   (by content: a JPEG named ``.png`` is fine, a TIFF named ``.jpg`` is not), at most
   `MAX_IMAGE_PIXELS` pixels, all frames of a GIF counted (a decompression bomb is
   refused before it is decoded, whatever Pillow's own ``Image.MAX_IMAGE_PIXELS``;
   TensorFlow decodes every frame of a GIF to keep the first), not empty, and not a colour
   palette BMP (TensorFlow's BMP decoder returns the palette indices of those as grey
   values, silently). The header also says whether the image is grey.
2. **Decode** (in parallel under tf.data): `cnnbuilder.data.images.decode_path`, the
   very function the training pipeline maps over the files — the one decoder, which
   `predict` uses too, EXIF orientation applied — runs once over every file that passed;
   a file that fails (truncated, corrupt...) or decodes to another size than its header
   states (turned upright) is bad. What passes decodes the same way during training, so
   an epoch cannot fail on a file that was there when the dataset was loaded.

Grey, palette, RGBA, 16-bit and CMYK images mix freely: they are decoded to the
dataset's channel count (3 when any image has colour, else 1); alpha is dropped,
palettes expanded, 16-bit samples scaled to 8 bits.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import tensorflow as tf

from cnnbuilder.data.folder_walk import BadImage
from cnnbuilder.errors import DataError

__all__ = [
    "MAX_IMAGE_PIXELS",
    "Header",
    "bad_images_error",
    "list_bad_files",
    "read_header",
    "undecodable",
]

# Our bound on pixels per image, below Pillow's decompression-bomb warning (~89.5 M):
# 40 M pixels is an 8000x5000 photo, 120 MB as uint8 RGB, and tf.data decodes several
# files at once.
MAX_IMAGE_PIXELS = 40_000_000
# The formats TensorFlow's decode_image reads (WebP only as colour, so it is left out).
_FORMATS = ("PNG", "JPEG", "BMP", "GIF")
# PIL modes whose pixels carry no colour; everything else (RGB, RGBA, P, CMYK...) is colour.
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
# The EXIF tag of a photo's orientation (1 upright; 6 turned 90 degrees: phone photos).
_ORIENTATION = 0x0112
# Bad files named in an error message; the rest are counted.
_LISTED = 10


class Header(NamedTuple):
    """What an image file's header says: its (height, width) and whether it is grey."""

    size: tuple[int, int]
    grey: bool


def read_header(path: Path | str) -> Header | BadImage:
    """The header of an image file, or why the file is not a usable image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow warns of large images; MAX_IMAGE_PIXELS decides here instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                # The decoder turns the image upright (EXIF orientation 5-8 swap its sides).
                if _orientation(image) in (5, 6, 7, 8):
                    width, height = height, width
                header_format, grey = image.format, _is_grey(image)
                # TensorFlow decodes every frame of a GIF, even to keep only the first.
                frames = getattr(image, "n_frames", 1) if image.format == "GIF" else 1
                palette_bmp = image.format == "BMP" and image.mode == "P"
    except Image.DecompressionBombError as error:
        return BadImage(str(path), f"too large to decode safely ({error})")
    except PermissionError as error:
        return BadImage(str(path), f"cannot be read: {error.strerror}")
    except UnidentifiedImageError:
        return BadImage(str(path), "not an image (no PNG, JPEG, BMP or GIF data)")
    except (OSError, ValueError, SyntaxError) as error:
        # Pillow raises SyntaxError (!) for some malformed headers.
        return BadImage(str(path), f"unreadable image header, truncated or corrupt ({error})")
    if header_format not in _FORMATS:
        return BadImage(
            str(path), f"a {header_format} image, which TensorFlow cannot decode; "
            f"convert it to PNG or JPEG")
    if width * height * frames > MAX_IMAGE_PIXELS:
        shape = f"{width}x{height}" + (f" x {frames} frames" if frames > 1 else "")
        return BadImage(
            str(path), f"{shape} = {width * height * frames:,} pixels, over the bound of "
            f"{MAX_IMAGE_PIXELS:,} pixels per image (a possible decompression bomb); "
            "downscale it" + (" or keep its first frame" if frames > 1 else ""))
    if width == 0 or height == 0:
        return BadImage(str(path), f"an empty {width}x{height} image")
    if palette_bmp:
        return BadImage(
            str(path), "a palette (indexed-colour) BMP, which TensorFlow's decoder reads "
            "wrongly; save it as PNG")
    return Header((height, width), grey)


def _orientation(image) -> int:
    """The EXIF orientation of an opened image, read without decoding its pixels (Pillow's
    `getexif` loads a PNG whole; its eXIf chunk, when it comes first, is in `info`)."""
    from PIL import Image

    if image.format == "JPEG":
        return image.getexif().get(_ORIENTATION, 1)
    raw = image.info.get("exif")
    if not raw:
        return 1
    exif = Image.Exif()
    exif.load(raw)
    return exif.get(_ORIENTATION, 1)


def _is_grey(image) -> bool:
    """Whether a PIL image has no colour; palette images count when their palette is grey."""
    if image.mode in ("P", "PA"):
        # Grey GIFs open as palette images; reading the palette loads only this image.
        palette = image.getpalette("RGB") or []
        return palette[0::3] == palette[1::3] == palette[2::3]
    return image.mode in _GREY_MODES


def undecodable(
    paths: Sequence[str], sizes: Sequence[tuple[int, int]], channels: int
) -> list[BadImage]:
    """The files `decode_path` fails on or decodes to another size than `sizes` says.

    Every file is decoded once, in parallel, by the training pipeline's decoder.
    """
    if not paths:
        return []
    indexed = tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), list(paths)))

    from cnnbuilder.data.images import decode_path

    def decoded_size(index, path):
        return index, tf.shape(decode_path(path, channels))[:2]

    # ignore_errors drops the files that fail; which ones is told by the missing indices.
    survivors = (
        indexed.map(decoded_size, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
        .ignore_errors()
        .batch(4096)
    )
    decoded = {}
    for indices, shapes in survivors.as_numpy_iterator():
        decoded.update(zip(indices.tolist(), map(tuple, shapes.tolist())))
    bad = []
    for index, path in enumerate(paths):
        if index not in decoded:
            bad.append(BadImage(path, _decode_failure(path, channels)))
        elif decoded[index] != tuple(sizes[index]):
            (h, w), (dh, dw) = sizes[index], decoded[index]
            bad.append(BadImage(path, f"its header says {w}x{h} but it decodes to {dw}x{dh}"))
    return bad


def _decode_failure(path: str, channels: int) -> str:
    """The decoder's reason for failing on one file."""
    from cnnbuilder.data.images import read_image, to_channels

    try:
        to_channels(read_image(path), channels)
    except (DataError, OSError, ValueError) as error:
        message = " ".join(str(error).split())
        return f"truncated, corrupt or in a form that cannot be decoded ({message})"
    return "cannot be decoded (it failed once while checking; it may have changed since)"


def list_bad_files(bad: Sequence[BadImage]) -> str:
    """"path: reason; ..." of the first few bad files, and how many more there are."""
    listed = "; ".join(f"{b.path}: {b.reason}" for b in bad[:_LISTED])
    return listed + (f"; and {len(bad) - _LISTED} more" if len(bad) > _LISTED else "")


def bad_images_error(root: Path, bad: Sequence[BadImage], total: int) -> DataError:
    """The error naming the bad files of a dataset folder (the first few, and a count)."""
    return DataError(
        f"{len(bad)} of the {total} image files in the dataset folder {root} cannot be "
        f"used: {list_bad_files(bad)}. Remove or replace them, or pass skip_bad_images=True "
        "(cnnbuilder train --skip-bad-images) to leave them out and count them."
    )
