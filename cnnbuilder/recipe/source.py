"""Safe YAML reading that remembers where every value came from.

Recipes are data: only the plain YAML types are accepted (no `!!python/...` or other
tags, which are rejected, never constructed), and every mapping key and list item keeps
its file and line so that errors can point at them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cnnbuilder.errors import RecipeError

_PLAIN_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:map",
}

Path_ = tuple  # a path into the document: ("stages", 0, "blocks", 1, "dense", "layers")


@dataclass(frozen=True)
class Location:
    file: str
    line: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}, line {self.line}"


class Locations(dict):
    """Maps a path inside a recipe document to the `Location` it was written at."""

    def near(self, path: Path_) -> Location | None:
        """The location of `path`, or of its closest ancestor that has one."""
        path = tuple(path)
        while True:
            if path in self:
                return self[path]
            if not path:
                return None
            path = path[:-1]


def format_path(path: Path_) -> str:
    """`("stages", 0, "blocks", 1, "dense")` -> `stages[0].blocks[1].dense`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def load_yaml(text: str, file: str) -> tuple[Any, Locations]:
    """Parse YAML text into plain Python data plus the location of every node."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else "?"
        raise RecipeError(
            f"{file}, line {line}: invalid YAML: {exc.problem or exc}. Expected valid YAML "
            "(hint: inside [...] or {...} quote expressions, e.g. \"${growth_rate}\")."
        ) from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{file}: invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    locations = Locations()
    if node is None:
        return None, locations
    data = _construct(node, (), file, locations, yaml.SafeLoader(""))
    return data, locations


def _construct(node, path, file, locations, constructor) -> Any:
    locations[path] = Location(file, node.start_mark.line + 1)
    if node.tag not in _PLAIN_TAGS:
        raise RecipeError(
            f"{file}, line {node.start_mark.line + 1}, field {format_path(path)}: the YAML tag "
            f"{node.tag!r} is not allowed. Recipes are plain data (strings, numbers, booleans, "
            "lists and mappings); tags such as !!python/object are rejected and never executed."
        )
    if isinstance(node, yaml.MappingNode):
        result = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise RecipeError(
                    f"{file}, line {key_node.start_mark.line + 1}: YAML merge keys (<<) are not "
                    "supported; use `extends:` to inherit from another recipe."
                )
            key = _construct(key_node, path, file, Locations(), constructor)
            if not isinstance(key, (str, int)):
                raise RecipeError(
                    f"{file}, line {key_node.start_mark.line + 1}: mapping keys must be "
                    f"strings, got {key!r}."
                )
            if key in result:
                raise RecipeError(
                    f"{file}, line {key_node.start_mark.line + 1}, field "
                    f"{format_path(path + (key,))}: duplicate key {key!r}."
                )
            result[key] = _construct(value_node, path + (key,), file, locations, constructor)
            # A value is reported at its key's line, where a reader looks for it.
            locations[path + (key,)] = Location(file, key_node.start_mark.line + 1)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _construct(item, path + (i,), file, locations, constructor)
            for i, item in enumerate(node.value)
        ]
    return constructor.construct_object(node, deep=True)


def read_recipe_file(path: Path) -> tuple[Any, Locations]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"recipe file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"recipe file {path} cannot be read: {exc}.") from None
    return load_yaml(text, str(path))
