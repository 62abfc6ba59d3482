"""Reading a recipe document: files, `extends` chains, top-level keys.

A `Document` is the merged YAML of a recipe and its ancestors, with the location of every
value, before params are applied.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnbuilder.errors import RecipeError
from cnnbuilder.recipe.source import Location, Locations, format_path, read_recipe_file
from cnnbuilder.recipe.vocabulary import did_you_mean

TOP_LEVEL_KEYS = (
    "name", "description", "reference", "metadata", "extends", "params", "defaults",
    "stem", "stages", "head", "tune", "training",
)


@dataclass
class Document:
    """The merged data of a recipe and its `extends` ancestors, with where each value was written.

    `chain` keeps each level's own data, the recipe's first and its root's last: the `tune:`
    section is inherited entry by entry, which needs to know who declared what."""

    data: dict
    locations: Locations
    source: str  # file path, or "<dict>"
    chain: tuple = ()

    def where(self, path) -> str:
        """'file, line N, field a.b[2]' for error messages."""
        location = self.locations.near(path)
        prefix = str(location) if location else self.source
        return f"{prefix}, field {format_path(path)}" if path else prefix

    def error(self, path, message: str) -> RecipeError:
        """A RecipeError whose message starts with `where(path)`."""
        return RecipeError(f"{self.where(path)}: {message}")


def merge(base: Any, override: Any) -> Any:
    """Maps merge key by key; everything else (lists included) is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    return copy.deepcopy(override)


def _merge_locations(base: Locations, override: Locations, data_override) -> Locations:
    merged = Locations(base)
    # A replaced (non-map) value drops the parent's locations below it.
    for path, location in override.items():
        if path and path[0] not in data_override:
            continue
        if path and not isinstance(_get(data_override, path), dict):
            for old in [p for p in merged if p[: len(path)] == path and len(p) > len(path)]:
                del merged[old]
        merged[path] = location
    return merged


def _get(data, path):
    for part in path:
        data = data[part]
    return data


def read_document(source, *, resolve_name, _chain: tuple = ()) -> Document:
    """Load a recipe from a path or dict and apply its `extends` chain.

    `resolve_name(name, relative_to)` maps an `extends` target to a file path (or None).
    """
    if isinstance(source, dict):
        data, locations, label, base_dir = copy.deepcopy(source), Locations(), "<dict>", Path.cwd()
    else:
        path = Path(source).resolve()
        data, locations = read_recipe_file(path)
        label, base_dir = str(path), path.parent
    if not isinstance(data, dict):
        raise RecipeError(
            f"{label}: a recipe must be a YAML mapping with keys such as name, params, stem, "
            f"stages and head; got {type(data).__name__}."
        )
    document = Document(data, locations, label, (data,))
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise document.error(
                (key,),
                f"unknown top-level key {key!r}. Expected one of: {', '.join(TOP_LEVEL_KEYS)}."
                + did_you_mean(key, TOP_LEVEL_KEYS),
            )
    parent_name = data.get("extends")
    if parent_name is None:
        return document
    if not isinstance(parent_name, str) or not parent_name:
        raise document.error(("extends",), f"expected a recipe name or path, got {parent_name!r}.")
    parent_path = resolve_name(parent_name, base_dir)
    if parent_path is None:
        raise document.error(
            ("extends",),
            f"extends {parent_name!r}, which is neither a known recipe nor an existing file.",
        )
    key = str(Path(parent_path).resolve())
    if key in _chain or key == label:
        cycle = " -> ".join([*(Path(c).stem for c in _chain), Path(label).stem, Path(key).stem])
        raise document.error(("extends",), f"cyclic extends: {cycle}.")
    parent = read_document(parent_path, resolve_name=resolve_name, _chain=(*_chain, label))
    child = {k: v for k, v in data.items() if k != "extends"}
    merged = merge(parent.data, child)
    merged.pop("extends", None)
    return Document(merged, _merge_locations(parent.locations, locations, child), label,
                    (data, *parent.chain))


__all__ = ["Document", "Location", "merge", "read_document", "TOP_LEVEL_KEYS"]
