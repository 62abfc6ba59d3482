"""Segmentation masks as files: the class list (``classes.txt`` or the palette
``classes.csv``) and the one mask reader.

A mask is a PNG of the same size as its image. Two forms:

- **Label map** (with ``classes.txt``, one class name per line, line index = label): a
  grey (``L``) or palette-indexed (``P``, as Pascal VOC's) PNG whose pixel values are the
  class indices; 255 is the void label (ignored by the loss and the metrics).
- **Colour mask** (with ``classes.csv``, one ``name,r,g,b`` row per class, row index =
  label; an optional first row ``name,r,g,b``): an RGB (or palette) PNG whose colours are
  mapped to classes. A row named ``void`` (any case) is not a class: its colour (several
  ``void`` rows are allowed) becomes the void label 255.

Both read to uint8 (H, W) label maps with `read_mask`, the function the checks on load
and the training pipeline share, so training sees exactly what was checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from cnnbuilder.errors import DataError

__all__ = ["CLASSES_CSV", "CLASSES_TXT", "VOID", "ClassList", "read_class_list", "read_mask"]

CLASSES_TXT = "classes.txt"
CLASSES_CSV = "classes.csv"
# The void label of folder and palette masks: pixels carrying it are ignored.
VOID = 255
_VOID_NAMES = ("void",)


class ClassList(NamedTuple):
    """The classes of a segmentation folder: names, and the palette of colour masks
    (a tuple of (r, g, b) per class, and the void colours) or None for label maps."""

    names: list[str]
    palette: tuple[tuple[int, int, int], ...] | None
    void_colours: tuple[tuple[int, int, int], ...] = ()


def read_class_list(root: Path) -> ClassList:
    """The class list of a segmentation folder, from ``classes.txt`` or ``classes.csv``.

    Raises:
        DataError: neither or both files, an empty or blank line, a repeated class name,
            fewer than two classes or more than 255, a malformed row, a colour given to
            two rows, or a class given two colours (naming file and line).
    """
    txt, csv = root / CLASSES_TXT, root / CLASSES_CSV
    if txt.is_file() and csv.is_file():
        raise DataError(
            f"Segmentation folder {root} has both {CLASSES_TXT} (label-map masks) and "
            f"{CLASSES_CSV} (colour masks); keep the one that describes its masks.")
    if txt.is_file():
        names = _read_names(txt)
        palette = None
        voids: tuple = ()
    elif csv.is_file():
        names, palette, voids = _read_palette(csv)
    else:
        raise DataError(
            f"Segmentation folder {root} has no {CLASSES_TXT} (one class name per line, line "
            f"index = label, for masks whose pixel values are labels) nor {CLASSES_CSV} "
            "(name,r,g,b rows, for colour masks). Add one of them.")
    source = csv if palette is not None else txt
    if len(names) < 2:
        raise DataError(f"{source} names {len(names)} class(es); a segmentation needs at "
                        "least two (e.g. background and object).")
    if len(names) > VOID:
        raise DataError(f"{source} names {len(names)} classes; at most {VOID} fit in 8-bit "
                        f"masks beside the void label {VOID}.")
    return ClassList(names, palette, voids)


def _lines(path: Path) -> list[str]:
    """The lines of a text file, the final newline not counting as a blank line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"Cannot read {path}: {error}.") from None
    return text.splitlines()


def _check_unique(path: Path, names: list[str], lines: list[int], what: str) -> None:
    """Refuse a class name met twice (file and both lines named)."""
    first: dict[str, int] = {}
    for name, line in zip(names, lines):
        if name in first:
            raise DataError(
                f"{path}, line {line}: class {name!r} again (first on line {first[name]}); "
                f"{what}")
        first[name] = line


def _read_names(path: Path) -> list[str]:
    """classes.txt: one class name per line; line index = label."""
    names = []
    for number, line in enumerate(_lines(path), 1):
        name = line.strip()
        if not name:
            raise DataError(
                f"{path}, line {number}: blank line. Each line names the class whose label is "
                "its index (first line: label 0), so a blank line would shift every label "
                "after it; remove it.")
        names.append(name)
    _check_unique(path, names, list(range(1, len(names) + 1)),
                  "each label needs its own name.")
    return names


def _read_palette(path: Path):
    """classes.csv: name,r,g,b rows; row index (void rows skipped) = label."""
    names, colours, lines, voids = [], [], [], []
    owner: dict[tuple, tuple[str, int]] = {}
    for number, line in enumerate(_lines(path), 1):
        fields = [f.strip() for f in line.split(",")]
        if number == 1 and [f.lower() for f in fields] == ["name", "r", "g", "b"]:
            continue  # the header row
        if len(fields) != 4 or not fields[0]:
            raise DataError(
                f"{path}, line {number}: {line!r} is not a 'name,r,g,b' row (a class name "
                "and its mask colour as three integers 0-255).")
        try:
            colour = tuple(int(v) for v in fields[1:])
        except ValueError:
            colour = ()
        if len(colour) != 3 or not all(0 <= v <= 255 for v in colour):
            raise DataError(
                f"{path}, line {number}: colour {','.join(fields[1:])!r} of class "
                f"{fields[0]!r} is not three integers 0-255.")
        if colour in owner:
            name, first = owner[colour]
            raise DataError(
                f"{path}, line {number}: colour {colour} is given to {fields[0]!r} and already "
                f"to {name!r} on line {first}; a colour must mean one class.")
        owner[colour] = (fields[0], number)
        if fields[0].lower() in _VOID_NAMES:
            voids.append(colour)
            continue
        names.append(fields[0])
        colours.append(colour)
        lines.append(number)
    _check_unique(path, names, lines,
                  "the palette maps two colours to one class. Give each class one colour "
                  "(or recolour the masks).")
    return names, tuple(colours), tuple(voids)


def _colour_lookup(classes: ClassList):
    """(sorted colour codes, their labels) of a palette, void colours -> VOID."""
    codes = [(r << 16) | (g << 8) | b for r, g, b in classes.palette]
    codes += [(r << 16) | (g << 8) | b for r, g, b in classes.void_colours]
    labels = list(range(len(classes.palette))) + [VOID] * len(classes.void_colours)
    order = np.argsort(codes)
    return np.asarray(codes, np.int64)[order], np.asarray(labels, np.uint8)[order]


def read_mask(path, classes: ClassList) -> np.ndarray:
    """A mask file as a uint8 (H, W) label map (void = `VOID`).

    Raises:
        DataError: the file cannot be read, is a colour image where label maps are
            expected, or holds a colour the palette does not list (naming it).
    """
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as image:
            mode = image.mode
            if classes.palette is None:
                if mode not in ("L", "P", "1") and not mode.startswith("I"):
                    raise DataError(
                        f"Mask {path} is a {mode} colour image, but the folder's {CLASSES_TXT} "
                        "says masks are label maps (grey or palette-indexed PNGs whose pixel "
                        f"values are labels). Save label maps, or describe the colours in "
                        f"{CLASSES_CSV} (name,r,g,b).")
                values = np.asarray(image)
                if values.size and (values.min() < 0 or values.max() > 255):
                    raise DataError(f"Mask {path} holds values outside 0-255 "
                                    f"({values.min()}..{values.max()}).")
                return values.astype(np.uint8)
            rgb = np.asarray(image.convert("RGB"), dtype=np.int64)
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise DataError(f"Cannot read the mask {path}: {error}. Expected a PNG label map.") from None
    codes, labels = _colour_lookup(classes)
    flat = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    where = np.clip(np.searchsorted(codes, flat), 0, len(codes) - 1)
    known = codes[where] == flat
    if not known.all():
        code = int(flat[~known][0])
        colour = (code >> 16, (code >> 8) & 255, code & 255)
        raise DataError(
            f"Mask {path} has {int((~known).sum())} pixels of colour {colour}, which "
            f"{CLASSES_CSV} does not list; add it as a class (or as a 'void' row), or "
            "recolour the mask.")
    return labels[where]
