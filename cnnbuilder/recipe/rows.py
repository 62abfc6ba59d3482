"""A residual stage written as one row of the paper's table.

    stages:
      - {name: conv3, residual: [convolutional, "${blocks[1]}", 128, 2]}   # unit, count, filters, stride

reads like the row "conv3_x ... × blocks[1], stride 2" of He et al.'s Table 1 and expands, in the
resolver, to the units one would write by hand (as keras' `stack_residual_blocks_v1(x, filters,
blocks, stride1)` and timm's `ByoBlockCfg(type, d, c, s)`):

- `convolutional`: a `convolutional` unit that carries the stride (and projects), then
  count - 1 `identity` units;
- `identity`: count `identity` units (a stage that keeps the shape; stride 1);
- `bottleneck`: count `bottleneck` units, the first carrying the stride (each picks its
  shortcut from the shapes, as torchvision's ResNeXt and wide ResNets).

A fifth element (or, in the mapping form `residual: {unit: ..., count: ..., filters: ...,
stride: ...}`, any other key) gives fields to every unit (`groups`, `width`, `style`...); the
recipe's `defaults:` for the unit blocks keep applying to the rest. `stride_at: last` puts
the stride on the last unit instead (keras.applications' ResNetV2 `stack2`: the first
unit projects at stride 1, the last subsamples with a strided identity, `shortcut: pad`).
The units are named like hand-written ones: `<stage>_block1`, `<stage>_block2`, ...
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cnnbuilder.recipe.document import Document
from cnnbuilder.recipe.fields import origin, substitute_all, traced
from cnnbuilder.recipe.vocabulary import did_you_mean

UNITS = {
    "convolutional": "a `convolutional` unit carrying the stride (it projects), then count − 1 `identity` units",
    "identity": "count `identity` units: the stage keeps the shape (stride 1)",
    "bottleneck": "count `bottleneck` units, the first carrying the stride; each picks its shortcut from the shapes",
}
ROW = ("unit", "count", "filters", "stride")  # the list form, in this order
STRIDE_AT = ("first", "last")
RESERVED = ROW + ("stride_at", "name", "repeat")


@dataclass(frozen=True)
class BlockItem:
    """One block to resolve: its kind, raw fields, where it was written (for messages) and,
    for fields written elsewhere than `path + (field,)`, where each one was."""

    kind: str
    raw: dict
    path: tuple
    paths: dict = field(default_factory=dict)
    counted_by: tuple = ()  # the raw values (`${blocks[1]}`) its count was computed from


def _row_entries(document: Document, path: tuple, row) -> tuple[dict, dict]:
    """({key: raw value}, {key: path}) of a row in either form."""
    if isinstance(row, list):
        if len(row) not in (4, 5) or (len(row) == 5 and not isinstance(row[4], dict)):
            raise document.error(
                path, "a residual row is [unit, count, filters, stride] with an optional mapping "
                f"of unit fields as fifth element, e.g. [convolutional, 4, 128, 2]; got {row!r}.")
        entries = dict(zip(ROW, row))
        paths = {key: path + (i,) for i, key in enumerate(ROW)}
        for key, value in (row[4] if len(row) == 5 else {}).items():
            if key in ROW:
                raise document.error(path + (4, key), f"{key!r} is the row's element {ROW.index(key) + 1}; "
                                                      "it cannot be given again among the unit fields.")
            entries[key], paths[key] = value, path + (4, key)
        return entries, paths
    if isinstance(row, dict):
        missing = [key for key in ROW if key not in row]
        if missing:
            raise document.error(path, f"a residual row needs {', '.join(ROW)}; {', '.join(missing)} "
                                       f"missing in {row!r}.")
        return dict(row), {key: path + (key,) for key in row}
    raise document.error(path, "expected a residual row [unit, count, filters, stride] or a mapping "
                               f"{{unit: ..., count: ..., filters: ..., stride: ...}}, got {row!r}.")


def expand_row(document: Document, path: tuple, row, names: dict) -> list[BlockItem]:
    """The units of one `residual:` row, in order."""
    entries, paths = _row_entries(document, path, row)

    def value(key, default=None):
        raw = entries.get(key, default)
        return raw, substitute_all(document, paths.get(key, path), raw, names)

    _, unit = value("unit")
    if not isinstance(unit, str) or unit not in UNITS:
        raise document.error(paths["unit"], f"unknown residual unit {unit!r}; a row's unit is one of "
                                            f"{', '.join(UNITS)}." + did_you_mean(unit, UNITS))
    numbers, told = {}, {}
    for key in ("count", "stride"):
        raw, number = value(key)
        told[key] = f"{key} = {number!r}{origin(raw, names)}"
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            raise traced(document, paths[key], f"residual row {told[key]}: expected integer >= 1.", raw, names)
        numbers[key] = number
    count, stride = numbers["count"], numbers["stride"]
    _, stride_at = value("stride_at", "first")
    if stride_at not in STRIDE_AT:
        raise document.error(paths["stride_at"], f"stride_at = {stride_at!r}: expected first or last.")
    for key in ("name", "repeat"):
        if key in entries:
            raise document.error(paths[key], f"a residual row names and counts its units itself; "
                                             f"{key!r} is not a unit field here.")
    if unit == "identity" and stride != 1:
        raise document.error(paths["stride"], f"identity units keep the shape, so an identity row has "
                                              f"stride 1, got {told['stride']}; use convolutional or bottleneck.")
    if stride_at == "last" and unit != "convolutional":
        raise document.error(paths["stride_at"], "stride_at: last is for convolutional rows (the "
                                                 "first unit projects, the last subsamples).")
    if stride_at == "last" and stride > 1 and count < 2:
        raise document.error(paths["count"], f"stride_at: last needs count >= 2 (a projecting first "
                                             f"unit and a subsampling last one), got {told['count']}.")

    fields = {k: v for k, v in entries.items() if k not in RESERVED}
    fields["filters"] = entries["filters"]
    field_paths = {k: paths[k] for k in fields}
    at_stride = {**field_paths, "stride": paths["stride"]}
    at_count = {**field_paths, "repeat": paths["count"]}

    def item(kind, where, **extra):
        return BlockItem(kind, {**fields, **extra}, path, where, (entries["count"],))

    if unit == "identity":
        return [item("identity", at_count, repeat=count)]
    rest = "identity" if unit == "convolutional" else "bottleneck"
    rest_fields = {} if rest == "identity" else {"stride": 1}
    if stride_at == "last" and stride > 1:
        units = [item("convolutional", at_stride, stride=1)]
        if count > 2:
            units.append(item(rest, at_count, repeat=count - 2, **rest_fields))
        return units + [item("convolutional", at_stride, stride=stride, shortcut="pad")]
    units = [item(unit, at_stride, stride=stride)]
    if count > 1:
        units.append(item(rest, at_count, repeat=count - 1, **rest_fields))
    return units
