"""Command-line argument values: `--set`/`--training` assignments, shapes, positive
numbers, augmentation lists. Each turns a malformed value into a `UsageError` (or an
argparse error) naming the option."""

from __future__ import annotations

import argparse

import yaml

from cnnbuilder.errors import UsageError


def parse_assignments(items: list[str] | None, option: str = "--set") -> dict:
    """`--set growth_rate=12 --set blocks=[6,12,32,32]` -> {"growth_rate": 12, ...}
    (values are read as YAML: numbers, true/false, lists)."""
    values = {}
    example = "growth_rate=12" if option == "--set" else "learning_rate=0.01"
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{option} expects NAME=VALUE (for example {option} {example}), got {item!r}.")
        try:
            values[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise UsageError(f"{option} {key}: cannot read the value {text!r} (write numbers, true/false or [1, 2, 3]).") from None
    return values


def parse_shape(text: str | None) -> tuple | None:
    """`--input-shape 32,32,3` as a tuple (`none` for an unknown size)."""
    if text is None:
        return None
    try:
        shape = tuple(None if p.strip().lower() in ("none", "") else int(p) for p in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or any(d is not None and d < 1 for d in shape):
        raise UsageError(f"--input-shape expects HEIGHT,WIDTH,CHANNELS such as 32,32,3; got {text!r}.")
    return shape


def _positive(text: str, convert, what: str):
    """`text` converted by `convert` when the result is above 0, else an argparse error
    saying what was expected."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive {what}, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive {what}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    return _positive(text, int, "integer")


def positive_float(text: str) -> float:
    """An argparse type: a number > 0."""
    return _positive(text, float, "number")


def parse_augment(text: str | None):
    """`--augment crop,flip` (or `none`) as a list of known augmentations."""
    if text is None:
        return None
    names = [] if text.strip().lower() == "none" else [p.strip() for p in text.split(",") if p.strip()]
    from cnnbuilder.recipe.training import AUGMENTATIONS

    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise UsageError(f"--augment: unknown augmentation {unknown[0]!r}; use a comma-separated list of {', '.join(AUGMENTATIONS)}, or none.")
    return names
