"""Folder datasets are untrusted input: bad files, links, loops and odd image modes.

Each bad input is tried twice at `load_dataset` level (nothing trains): by default it
is a DataError naming the file before any pipeline exists; with skip_bad_images=True it
is left out and listed in `Dataset.skipped`, and the rest loads. Images are tiny files
written by Pillow (or by hand, for headers Pillow will not write) into tmp_path.
"""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cnnbuilder.data import load_dataset, make_pipeline
from cnnbuilder.data.image_checks import MAX_IMAGE_PIXELS
from cnnbuilder.errors import DataError

GOOD_PER_CLASS = 3


def encoded(array, fmt, mode=None) -> bytes:
    """`array` saved by Pillow in format `fmt` (converted to `mode` first)."""
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def noise(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, np.uint8)


def png_header_only(width, height) -> bytes:
    """A PNG whose header declares width x height grey pixels, with no real pixel data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"x") + chunk(
        b"IEND", b"")


@pytest.fixture
def folder(tmp_path):
    """Two classes of GOOD_PER_CLASS good 8x8 RGB PNGs."""
    root = tmp_path / "data"
    for c, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for i in range(GOOD_PER_CLASS):
            (root / name / f"{i}.png").write_bytes(encoded(noise((8, 8, 3), 10 * c + i), "PNG"))
    return root


def _link(target):
    """A maker of a symbolic link to `target` (relative to the link's folder)."""
    def make(path):
        os.symlink(target, path)
    return make


def _bytes(data):
    def make(path):
        path.write_bytes(data)
    return make


_PNG = encoded(noise((8, 8, 3)), "PNG")
_JPEG = encoded(noise((16, 16, 3)), "JPEG")
_BMP = encoded(noise((8, 8, 3)), "BMP")

# name -> (file under the class folder 'dog', how to make it, words the reason contains)
BAD_FILES = {
    "random bytes": ("x.jpg", _bytes(os.urandom(64)), "not an image"),
    "text named .png": ("notes.png", _bytes(b"just some text\n" * 20), "not an image"),
    "empty file": ("empty.png", _bytes(b""), "not an image"),
    "PNG cut in half": ("half.png", _bytes(_PNG[: len(_PNG) // 2]), "truncated"),
    "JPEG cut in half": ("half.jpg", _bytes(_JPEG[: len(_JPEG) // 2]), "truncated"),
    "JPEG without its end marker": ("end.jpg", _bytes(_JPEG[:-2]), "truncated"),
    "BMP cut short": ("short.bmp", _bytes(_BMP[:-10]), "truncated"),
    "over our pixel bound": (
        "big.png", _bytes(png_header_only(7000, 7000)), f"over the bound of {MAX_IMAGE_PIXELS:,}"),
    "over Pillow's bomb limit": (
        "bomb.png", _bytes(png_header_only(20000, 20000)), "too large to decode safely"),
    "TIFF named .jpg": ("tiff.jpg", _bytes(encoded(noise((8, 8, 3)), "TIFF")), "TIFF image"),
    "colour palette BMP": (
        "palette.bmp", _bytes(encoded(noise((8, 8, 3)), "BMP", "P")), "palette"),
    "zero-width GIF": (
        "flat.gif", _bytes(b"GIF89a\x00\x00\x08\x00\x00\x00\x00;"), "not an image"),
    "named pipe": ("pipe.png", os.mkfifo, "not a regular file"),  # opening it would hang
    "broken link": ("gone.png", _link("nowhere.png"), "broken symbolic link"),
    "link to itself": ("self.png", _link("self.png"), "symbolic link loop"),
    "folder link back to its class": ("again", _link("."), "symbolic link loop"),
    "folder link above the dataset": ("up", _link("../.."), "symbolic link loop"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_is_named_before_training(folder, case):
    name, make, reason = BAD_FILES[case]
    bad = folder / "dog" / name
    make(bad)
    with pytest.raises(DataError) as caught:
        load_dataset(f"folder:{folder}")
    message = str(caught.value)
    assert f"{bad}: " in message and reason in message
    assert message.startswith(f"1 of the {2 * GOOD_PER_CLASS + 1} image files")
    assert "skip_bad_images=True" in message


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_file_is_skipped_and_counted(folder, case):
    name, make, _ = BAD_FILES[case]
    make(folder / "dog" / name)
    ds = load_dataset(f"folder:{folder}", skip_bad_images=True, validation_split=0,
                      test_split=0.3)
    assert ds.skipped == (str(folder / "dog" / name),)
    assert sum(ds.sizes.values()) == 2 * GOOD_PER_CLASS
    assert ds.image_shape == (8, 8, 3)


def test_the_pixel_bound_counts_every_frame_of_a_gif(folder, monkeypatch):
    from cnnbuilder.data import image_checks

    frames = [Image.fromarray(noise((8, 8, 3), i)).convert("P") for i in range(3)]
    frames[0].save(folder / "dog" / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(folder / "dog" / "still.gif")
    monkeypatch.setattr(image_checks, "MAX_IMAGE_PIXELS", 100)  # one frame (64) fits
    ds = load_dataset(f"folder:{folder}", skip_bad_images=True)
    assert ds.skipped == (str(folder / "dog" / "anim.gif"),)
    with pytest.raises(DataError, match="8x8 x 3 frames = 192 pixels, over the bound of 100"):
        load_dataset(f"folder:{folder}")


def test_many_bad_files_name_the_first_ten_and_count_the_rest(folder):
    for i in range(13):
        (folder / "cat" / f"bad{i:02}.png").write_bytes(b"nope")
    with pytest.raises(DataError) as caught:
        load_dataset(f"folder:{folder}")
    message = str(caught.value)
    assert message.startswith(f"13 of the {13 + 2 * GOOD_PER_CLASS} image files")
    assert all(f"bad{i:02}.png" in message for i in range(10))
    assert "bad10.png" not in message and "and 3 more" in message


def test_skipped_files_never_reach_a_training_epoch(folder):
    for name, make, _ in BAD_FILES.values():
        make(folder / "cat" / name)
    ds = load_dataset(f"folder:{folder}", skip_bad_images=True, validation_split=0,
                      test_split=0.3)
    assert len(ds.skipped) == len(BAD_FILES)
    pipeline = make_pipeline(ds.train, input_shape=(8, 8, 3), batch_size=2, training=True,
                             repeat=False)
    for _ in range(2):  # two epochs, every file decoded each time
        seen = sum(int(y.shape[0]) for _, y in pipeline)
        assert seen == ds.sizes["train"]


def test_a_class_with_only_bad_images_is_an_error_even_when_skipping(folder):
    (folder / "emu").mkdir()
    (folder / "emu" / "a.png").write_bytes(_PNG[:20])
    with pytest.raises(DataError, match=f"{folder / 'emu'} has no usable images"):
        load_dataset(f"folder:{folder}", skip_bad_images=True)


def test_an_empty_class_folder_is_named(folder):
    (folder / "emu").mkdir()
    with pytest.raises(DataError, match=f"{folder / 'emu'} holds no images"):
        load_dataset(f"folder:{folder}", skip_bad_images=True)


def test_a_single_class_is_refused(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "0.png").write_bytes(_PNG)
    (tmp_path / "cat" / "1.png").write_bytes(_PNG)
    with pytest.raises(DataError, match="single class sub-folder, cat.*at least two"):
        load_dataset(f"folder:{tmp_path}")


def test_a_class_folder_linked_to_the_dataset_itself_is_a_loop(folder):
    os.symlink(folder, folder / "all")
    with pytest.raises(DataError, match=f"{folder / 'all'} is a symbolic link.*loop"):
        load_dataset(f"folder:{folder}")


def test_two_class_folders_that_are_one_folder_are_refused(folder):
    os.symlink("cat", folder / "kitten")
    with pytest.raises(DataError, match="same folder.*two labels"):
        load_dataset(f"folder:{folder}")


def test_a_link_to_a_folder_outside_is_followed(folder, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for i in range(2):
        (outside / f"far{i}.png").write_bytes(encoded(noise((8, 8, 3), 50 + i), "PNG"))
    os.symlink(outside, folder / "dog" / "more")
    ds = load_dataset(f"folder:{folder}", validation_split=0, test_split=0.2)
    assert sum(ds.sizes.values()) == 2 * GOOD_PER_CLASS + 2
    assert ds.skipped == ()


def test_hidden_files_and_folders_are_ignored(folder):
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "cat" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "cat" / "._0.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")  # macOS fork
    (folder / "dog" / ".thumbnails").mkdir()
    (folder / "dog" / ".thumbnails" / "0.png").write_bytes(b"junk")
    (folder / ".trash").mkdir()
    (folder / ".trash" / "x.png").write_bytes(_PNG)
    ds = load_dataset(f"folder:{folder}")
    assert ds.class_names == ["cat", "dog"] and ds.skipped == ()
    assert sum(ds.sizes.values()) == 2 * GOOD_PER_CLASS


def _stored_images(ds):
    """{sum of pixels: image} of every stored image of a folder dataset."""
    images = {}
    for split in (ds.train, ds.validation, ds.test):
        for image, _ in split:
            images[int(image.numpy().astype(np.int64).sum())] = image.numpy()
    return images


def _expected(data: bytes, channels: int) -> np.ndarray:
    """What Pillow makes of an image file at `channels`: 16-bit grey scaled by 1/257."""
    image = Image.open(io.BytesIO(data))
    if image.mode.startswith("I;16"):
        grey = np.round(np.asarray(image, np.float64) / 257)[..., None]
        return np.repeat(grey, channels, axis=-1)
    array = np.asarray(image.convert("RGB" if channels == 3 else "L"), np.float64)
    return array if array.ndim == 3 else array[..., None]


def _sixteen_bit(shape, seed):
    """A 16-bit PNG of random samples (Pillow writes no 16-bit colour PNG)."""
    samples = np.random.default_rng(seed).integers(0, 65536, shape, np.uint16)
    return tf.io.encode_png(tf.constant(samples)).numpy()


# Modes that must load together and decode like Pillow reads them.
MIXED_COLOUR = {
    "rgba.png": encoded(noise((8, 8, 4), 1), "PNG"),
    "palette.png": encoded(noise((8, 8, 3), 2), "PNG", "P"),
    "palette.gif": encoded(noise((8, 8, 3), 3), "GIF", "P"),
    "grey16.png": _sixteen_bit((8, 8, 1), 4),
    "rgb16.png": _sixteen_bit((8, 8, 3), 5),
    "grey.png": encoded(noise((8, 8), 6), "PNG", "L"),
    "grey_alpha.png": encoded(noise((8, 8), 7), "PNG", "LA"),
    "bilevel.png": encoded(noise((8, 8), 8), "PNG", "1"),
    "rgb.bmp": encoded(noise((8, 8, 3), 9), "BMP"),
    "jpeg_named.png": encoded(noise((8, 8, 3), 10), "JPEG"),  # the extension lies, benignly
    "png_named.jpg": encoded(noise((8, 8, 3), 11), "PNG"),
}
GREY_ONLY = ("grey16.png", "grey.png", "grey_alpha.png", "bilevel.png")


@pytest.mark.parametrize("channels", [3, 1])
def test_mixed_modes_load_and_decode_as_pillow_reads_them(tmp_path, channels):
    names = list(MIXED_COLOUR) if channels == 3 else [*GREY_ONLY, "palette_grey.gif"]
    files = dict(MIXED_COLOUR, **{"palette_grey.gif": encoded(noise((8, 8), 12), "GIF", "P")})
    for i, name in enumerate(names):
        (tmp_path / ("a" if i % 2 else "b")).mkdir(exist_ok=True)
        (tmp_path / ("a" if i % 2 else "b") / name).write_bytes(files[name])
    ds = load_dataset(f"folder:{tmp_path}", validation_split=0, test_split=0.25)
    assert ds.image_shape == (8, 8, channels) and ds.skipped == ()
    stored = _stored_images(ds)
    assert len(stored) == len(names)
    for name in names:
        expected = _expected(files[name], channels)
        # JPEG decoders may differ by a level or two; 16-bit samples round either way.
        tolerance = 3 if "jpeg" in name else 1
        match = min(stored.values(), key=lambda image: np.abs(image - expected).max())
        assert np.abs(match - expected).max() <= tolerance, name


def test_a_grey_set_stays_grey_when_its_one_colour_file_is_skipped(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            (tmp_path / cls / f"{i}.png").write_bytes(encoded(noise((6, 6), i), "PNG", "L"))
    (tmp_path / "a" / "colour.png").write_bytes(_PNG[: len(_PNG) // 2])  # colour header, bad data
    ds = load_dataset(f"folder:{tmp_path}", skip_bad_images=True, validation_split=0,
                      test_split=0.25)
    assert ds.skipped == (str(tmp_path / "a" / "colour.png"),)
    assert ds.image_shape == (6, 6, 1)


def test_skip_bad_images_is_a_bool_and_other_sources_skip_nothing():
    with pytest.raises(DataError, match="skip_bad_images must be True or False"):
        load_dataset("digits", skip_bad_images="yes")
    x, y = noise((20, 4, 4, 3)), np.arange(20) % 2
    assert load_dataset((x, y), skip_bad_images=True).skipped == ()


@pytest.mark.slow
def test_train_skips_bad_images_when_asked_and_counts_them(folder, tmp_path):
    """`train(skip_bad_images=True)` / `--skip-bad-images`: the run trains on the usable
    files and metrics.json and run.json say what was left out; without it, nothing runs."""
    import json

    import cnnbuilder
    from helpers import TINY_RECIPE, write

    recipe = write(tmp_path, "tiny.yaml", TINY_RECIPE)
    bad = folder / "cat" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match="broken.png"):
        cnnbuilder.train(recipe, f"folder:{folder}", output=tmp_path / "refused", epochs=1, verbose=0)
    assert not (tmp_path / "refused").exists()
    out = tmp_path / "run"
    result = cnnbuilder.train(recipe, f"folder:{folder}", output=out, epochs=1, batch_size=8,
                              verbose=0, skip_bad_images=True, tensorboard=False)
    assert result.metrics["skipped_images"] == 1
    assert json.loads((out / "metrics.json").read_text())["skipped_images"] == 1
    assert [p.endswith("broken.png") for p in json.loads((out / "run.json").read_text())["skipped_images"]] == [True]
