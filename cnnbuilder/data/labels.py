"""What a dataset's classes must be, for any source (arrays, folders): names that survive
export (one line each in labels.txt, a JSON string in metadata.json, a model card row),
labels within ``0..classes-1``, and at least two classes present to learn from."""

from __future__ import annotations

import unicodedata

import numpy as np

from cnnbuilder.errors import DataError


def class_name_problem(name: str) -> str | None:
    """Why `name` cannot be a class name (None when it can): empty, surrounding spaces,
    or a control character or line break (labels.txt holds one name per line)."""
    if not name.strip():
        return "it is empty"
    if name != name.strip():
        return "it starts or ends with a space"
    for char in name:
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            return f"it holds the control character {char!r}"
    return None


def check_class_names(names, where: str) -> list[str]:
    """`names` as strings, each exportable; a DataError naming the first that is not."""
    names = [str(n) for n in names]
    for index, name in enumerate(names):
        problem = class_name_problem(name)
        if problem:
            raise DataError(f"{where}: class {index} is named {name!r}, which cannot be exported "
                            f"({problem}; labels.txt holds one name per line). Rename it.")
    return names


def check_labels(splits: dict, classes: int, where: str, *, inferred: bool) -> None:
    """Labels within 0..classes-1 in every split, and at least two classes in train.

    Args:
        splits: {split name: int label array}.
        classes: the class count (given by the class names, or inferred from the labels).
        where: what the message names ("arrays", "class_names").
        inferred: the count was inferred from the labels: then every id below the largest
            must be used, or a stray label (99 among 0..2) would make a 100-class model.
    """
    for split, labels in splits.items():
        if len(labels) and (labels.min() < 0 or labels.max() >= classes):
            bad = labels[(labels < 0) | (labels >= classes)]
            raise DataError(f"The labels of {_part(split, where)} include {int(bad[0])}; with "
                            f"{classes} classes they must lie in 0..{classes - 1}.")
    if inferred:
        used = np.unique(np.concatenate([np.asarray(l) for l in splits.values()]))
        missing = sorted(set(range(classes)) - set(used.tolist()))
        if missing:
            raise DataError(
                f"Labels of {where} go up to {classes - 1} but never use {_ids(missing)}: class "
                f"ids must be 0..K-1 with every class present (a stray label makes a model of "
                f"{classes} classes). Fix the labels, or pass class_names= naming every class.")
    key = "train" if "train" in splits else next(iter(splits))
    present = np.unique(splits[key])
    if len(present) < 2:
        raise DataError(f"The labels of {_part(key, where)} hold {len(present)} class"
                        f"{'' if len(present) == 1 else 'es'} ({_ids(present.tolist())}); a "
                        "classifier needs examples of at least two classes.")


def _part(split: str, where: str) -> str:
    """'the train split of arrays', or just `where` for labels not yet split."""
    return f"the {split} split of {where}" if split in ("train", "validation", "test") else where


def _ids(values) -> str:
    """The first class ids of `values` and a count of the rest, for messages."""
    values = [int(v) for v in values]
    text = ", ".join(map(str, values[:8]))
    return text + (f" and {len(values) - 8} more" if len(values) > 8 else "") if values else "none"
