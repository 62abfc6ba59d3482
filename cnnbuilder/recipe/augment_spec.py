"""The `augment` setting's entries: the names, their options with defaults and checks, and
how a person reads them. Pure Python (`cnnbuilder.recipe.training` uses it; the pipeline's
`cnnbuilder.data.augment` implements the same names).

An entry is a name (``crop``, ``mixup``: its defaults) or a one-key mapping of a name to its
options (``{mixup: {alpha: 0.2}}``).
"""

from __future__ import annotations

import math

from cnnbuilder.recipe.vocabulary import did_you_mean

AUGMENTATIONS = ("crop", "flip", "translate", "randaugment", "mixup", "cutmix", "random_erasing")
# Augmentations that mix two images and their labels: the targets become soft.
MIXING = ("mixup", "cutmix")


def _number(value) -> bool:
    """A finite int or float."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def _fraction(v) -> bool:
    """A number in [0, 1]."""
    return _number(v) and 0 <= v <= 1


# Each augmentation's options: option -> (default, accepts, what it expects). Defaults are
# timm's (RandAugment n=2 m=9 p=0.5; mixup 0.8 is timm's CLI default, 0.2 RSB-A1's: 0.2
# here; CutMix 1.0 switching with probability 0.5; random erasing p=0.25, DeiT's).
AUGMENT_OPTIONS: dict[str, dict[str, tuple]] = {
    "crop": {}, "flip": {}, "translate": {},
    "randaugment": {
        "n": (2, lambda v: _integer(v) and 1 <= v <= 10, "an integer from 1 to 10 (ops per image)"),
        "m": (9, lambda v: _number(v) and 0 <= v <= 10, "a number in [0, 10] (the magnitude)"),
        "std": (0.0, lambda v: _number(v) and v >= 0, "a number >= 0 (the magnitude's noise)"),
        "p": (0.5, _fraction, "a probability in [0, 1] (of each op)"),
    },
    "mixup": {"alpha": (0.2, lambda v: _number(v) and v > 0, "a number > 0 (Beta(alpha, alpha))")},
    "cutmix": {
        "alpha": (1.0, lambda v: _number(v) and v > 0, "a number > 0 (Beta(alpha, alpha))"),
        "switch": (0.5, _fraction, "a probability in [0, 1] (of CutMix rather than mixup, "
                                   "when both are on)"),
    },
    "random_erasing": {
        "p": (0.25, _fraction, "a probability in [0, 1] (of erasing a box of an image)"),
        "max_area": (1 / 3, lambda v: _number(v) and 0.02 < v < 1, "a fraction in (0.02, 1)"),
    },
}


def augment_item(item) -> tuple[str, dict] | None:
    """(name, options with defaults) of one `augment` entry (a name or a one-key mapping),
    None when it is neither."""
    if isinstance(item, str) and item in AUGMENT_OPTIONS:
        return item, {k: spec[0] for k, spec in AUGMENT_OPTIONS[item].items()}
    if isinstance(item, dict) and len(item) == 1:
        (name, options), = item.items()
        if name in AUGMENT_OPTIONS and isinstance(options, (dict, type(None))):
            defaults = {k: spec[0] for k, spec in AUGMENT_OPTIONS[name].items()}
            return name, {**defaults, **(options or {})}
    return None


def augment_problem(value) -> str | None:
    """None when `value` is a good `augment` list, else the message body."""
    expected = (f"a list of {', '.join(AUGMENTATIONS)}, each a name or a mapping of its "
                "options (e.g. {mixup: {alpha: 0.2}})")
    if not isinstance(value, (list, tuple)):
        return f"augment = {value!r}: expected {expected}."
    seen = set()
    for item in value:
        parsed = augment_item(item)
        if parsed is None:
            word = next(iter(item)) if isinstance(item, dict) and item else item
            return (f"augment: {item!r}: expected {expected}."
                    + (did_you_mean(word, AUGMENTATIONS) if isinstance(word, str) else ""))
        name, options = parsed
        if name in seen:
            return f"augment: {name} is given twice."
        seen.add(name)
        for option, option_value in options.items():
            if option not in AUGMENT_OPTIONS[name]:
                known = ", ".join(AUGMENT_OPTIONS[name]) or "none"
                return (f"augment: {name} has no option {option!r} (its options: {known})."
                        + did_you_mean(option, AUGMENT_OPTIONS[name]))
            _, accepts, what = AUGMENT_OPTIONS[name][option]
            if not accepts(option_value):
                return f"augment: {name} {option} = {option_value!r}: expected {what}."
    return None


def augment_label(item) -> str:
    """An `augment` entry as a person reads it: ``crop``, ``mixup(alpha=0.2)``."""
    parsed = augment_item(item)
    if parsed is None:
        return str(item)
    name, options = parsed
    return name + (f"({', '.join(f'{k}={v:g}' for k, v in options.items())})" if options else "")


__all__ = ["AUGMENTATIONS", "AUGMENT_OPTIONS", "MIXING", "augment_item", "augment_label",
           "augment_problem"]
