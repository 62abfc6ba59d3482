"""Reading a recipe document: files, `extends` chains, top-level keys.

A `Document` is the merged YAML of a recipe and its ancestors, with the location of every
value, before params are applied.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnbuilder.errors import RecipeError
from cnnbuilder.recipe.declarations import Declaration, merge_declarations, split_params
from cnnbuilder.recipe.source import Location, Locations, format_path, read_recipe_file
from cnnbuilder.recipe.vocabulary import did_you_mean

TOP_LEVEL_KEYS = (
    "name", "description", "reference", "metadata", "extends", "params", "defaults",
    "stem", "stages", "head", "tune", "training",
    "features",
    "task",
    "backbone",
)
# A chain of `extends` longer than this is refused (the shipped ones are at most 3 deep).
MAX_EXTENDS = 16


@dataclass
class Document:
    """The merged data of a recipe and its `extends` ancestors, with where each value was written.

    `chain` keeps each level's own data, the recipe's first and its root's last: the `tune:`
    section is inherited entry by entry, which needs to know who declared what.
    `declared` holds what the params accept (see `cnnbuilder.recipe.declarations`); `data`
    keeps the plain `params: {name: default}` form."""

    data: dict
    locations: Locations
    source: str  # file path, or "<dict>"
    chain: tuple = ()
    declared: dict = field(default_factory=dict)

    def declaration(self, name: str) -> Declaration | None:
        """What param `name` accepts, or None when it declares nothing."""
        checks = self.declared.get(name)
        if not checks:
            return None
        rest = {k: v for k, v in checks.items() if k != "at"}
        return Declaration(name, rest, checks.get("at")) if rest else None

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
    `_chain` holds the (file, line of its `extends:`) of the recipes that led here.
    """
    if isinstance(source, dict):
        data, locations, label, base_dir = copy.deepcopy(source), Locations(), "<dict>", Path.cwd()
    else:
        path = Path(source).resolve()
        data, locations = read_recipe_file(path)
        label, base_dir = str(path), path.parent
    if not isinstance(data, dict):
        what = {type(None): "nothing (the file holds only comments)", list: "a list",
                str: "a single string"}.get(type(data), type(data).__name__)
        raise RecipeError(
            f"{label}: a recipe must be a YAML mapping with keys such as name, params, stem, "
            f"stages and head; the file holds {what}."
        )
    declared = split_params(data, locations, label)
    document = Document(data, locations, label, (data,), declared)
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise document.error(
                (key,),
                f"unknown top-level key {key!r}. Expected one of: {', '.join(TOP_LEVEL_KEYS)}."
                + did_you_mean(key, TOP_LEVEL_KEYS),
            )
    parent_name = data.get("extends")
    if parent_name is None:
        return _with_defaults(document)
    if not isinstance(parent_name, str) or not parent_name:
        raise document.error(("extends",), f"expected a recipe name or path, got {parent_name!r}.")
    parent_path = resolve_name(parent_name, base_dir)
    if parent_path is None:
        raise document.error(
            ("extends",),
            f"extends {parent_name!r}, which is neither a known recipe nor an existing file.",
        )
    key = str(Path(parent_path).resolve())
    chain = (*_chain, (label, document.locations.near(("extends",))))
    if key in (file for file, _ in chain):
        raise _cycle(chain, key)
    if len(chain) >= MAX_EXTENDS:
        raise RecipeError(f"{chain[0][0]}: the chain of extends is longer than {MAX_EXTENDS} "
                          f"recipes ({' -> '.join(Path(f).stem for f, _ in chain)} -> ...).")
    parent = read_document(parent_path, resolve_name=resolve_name, _chain=chain)
    child = {k: v for k, v in data.items() if k != "extends"}
    merged = merge(parent.data, child)
    merged.pop("extends", None)
    return _with_defaults(Document(merged, _merge_locations(parent.locations, locations, child), label,
                                   (data, *parent.chain), merge_declarations(parent.declared, declared)))


def _with_defaults(document: Document) -> Document:
    """`document`, once every declared param has a default (here or in an ancestor)."""
    params = document.data.get("params")
    for name, checks in document.declared.items():
        if not isinstance(params, dict) or name not in params:
            at = checks.get("at")
            raise RecipeError(f"{at or document.source}, field params.{name}: param {name!r} is declared "
                              "without a default; give it one (`default: ...`).")
    return document


def _cycle(chain, again: str) -> RecipeError:
    """The error of a cyclic `extends`, told from the recipe the user asked for."""
    names = " -> ".join([*(Path(file).stem for file, _ in chain), Path(again).stem])
    steps = []
    for index, (file, at) in enumerate(chain):
        target = chain[index + 1][0] if index + 1 < len(chain) else again
        steps.append(f"{file} (line {at.line if at else '?'}) extends {target}")
    return RecipeError(f"{chain[0][0]}: cyclic extends: {names}: " + "; ".join(steps) + ".")


__all__ = ["Document", "Location", "merge", "read_document", "TOP_LEVEL_KEYS"]
