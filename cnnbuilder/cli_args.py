"""Command-line argument values: `--set`/`--training` assignments, shapes, positive
numbers, augmentation lists. Each turns a malformed value into a `UsageError` (or an
argparse error) naming the option."""

from __future__ import annotations

import argparse

import yaml

from cnnbuilder.errors import UsageError
from cnnbuilder.recipe import checks


class Parser(argparse.ArgumentParser):
    """argparse, with a malformed flag told in one paragraph (no usage block) and exit
    status 2, as every other bad input."""

    def error(self, message):
        """Print `message` in one paragraph with where to find the usage; exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (`{self.prog} --help` lists the flags)\n")


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


def parse_shape(text: str | None, option: str = "--input-shape") -> tuple | None:
    """`--input-shape 32,32,3` as a tuple (`none` for an unknown height or width)."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    shape = tuple(None if p.lower() in ("none", "") else p for p in parts)
    try:
        shape = tuple(d if d is None else int(d) for d in shape)
    except ValueError:
        shape = ()
    try:
        return checks.input_shape(shape, option)
    except UsageError:
        raise UsageError(f"{option} expects HEIGHT,WIDTH,CHANNELS of positive integers at most "
                         f"{checks.DIMENSION_MAX:,}, such as 32,32,3; got {text!r}.") from None


def _argparse_type(check, **options):
    """An argparse type from a `recipe.checks` helper: its message without the label
    (argparse names the flag itself)."""
    def convert(text: str):
        """`text` checked, or an argparse error with the helper's message."""
        try:
            return check(text, "", **options)
        except UsageError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(": ")) from None
    convert.__name__ = check.__name__
    convert.__doc__ = f"An argparse type: `recipe.checks.{check.__name__}`."
    return convert


# argparse types: each flag refuses what the matching Python keyword refuses.
positive_float = _argparse_type(checks.positive_number)
non_negative_float = _argparse_type(checks.positive_number, allow_zero=True)
seed = _argparse_type(checks.seed)
classes = _argparse_type(checks.classes)


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        return checks.integer_in_range(text, "", 1)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(": ")) from None


def parse_augment(text: str | None):
    """`--augment crop,flip` (or `none` alone) as a list of known augmentations."""
    if text is None:
        return None
    from cnnbuilder.recipe.training import AUGMENTATIONS

    names = [p.strip() for p in text.split(",") if p.strip()]
    if [n.lower() for n in names] == ["none"]:
        return []
    if not names or "none" in (n.lower() for n in names):
        raise UsageError(f"--augment {text!r}: write none alone, or a comma-separated list of "
                         f"{', '.join(AUGMENTATIONS)}.")
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise UsageError(f"--augment: unknown augmentation {unknown[0]!r}; write a comma-separated "
                         f"list of {', '.join(AUGMENTATIONS)} (or none alone).")
    return names


def training_preset(text: str) -> str:
    """An argparse type: the name of a training preset (`cnnbuilder.recipe.presets`), with
    did-you-mean for a misspelt one."""
    from cnnbuilder.recipe.presets import preset_problem

    problem = preset_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text
