"""Safe, bounded YAML reading that remembers where every value came from.

Recipes are data, and untrusted: only the plain YAML types are accepted (no `!!python/...`
or other tags, which are rejected, never constructed), anchors and aliases are refused
(an alias can multiply a 30-line file into billions of values), and every cost of reading
is bounded (`LIMITS`: bytes, nesting depth, values, string and number sizes), so a hostile
or broken file ends in a `RecipeError` naming file and line, never in a hang. Every mapping
key and list item keeps its file and line so that errors can point at them.
"""

from __future__ import annotations

import math
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

# The costs a recipe may ask of the reader. The shipped recipes are under 5 KB, 8 levels
# deep and 500 values each, their longest string under 500 characters: the bounds leave
# room for a hand-written recipe ten times larger while keeping a read well under a second.
MAX_BYTES = 64 * 1024
MAX_DEPTH = 32  # nested lists and mappings
MAX_NODES = 10_000  # scalars, lists and mappings
MAX_STRING = 4_000  # characters of one string (a description or an expression)
MAX_NUMBER_TEXT = 24  # characters of one number as written (`1_000_000`, `1.0e-5`)
LIMITS = {"bytes": MAX_BYTES, "depth": MAX_DEPTH, "values": MAX_NODES, "string": MAX_STRING,
          "number": MAX_NUMBER_TEXT}

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


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe composer with the recipe bounds: no anchors or aliases, at most
    `MAX_DEPTH` levels and `MAX_NODES` values, checked as the nodes are composed (before
    anything is constructed, so nothing is ever expanded)."""

    def __init__(self, text: str, file: str):
        super().__init__(text)
        self.file, self.depth, self.nodes = file, 0, 0

    def _refuse(self, mark, message: str):
        raise RecipeError(f"{self.file}, line {mark.line + 1}: {message}")

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            self._refuse(event.start_mark, "YAML anchors and aliases (&name, *name) are not allowed "
                         "in recipes: an alias can expand a short file into billions of values. "
                         "Write the value again, use a param and ${...}, or `extends:` another recipe.")
        self.nodes += 1
        if self.nodes > MAX_NODES:
            self._refuse(event.start_mark, f"the recipe has more than {MAX_NODES:,} values; a recipe "
                         "is at most that large (a network is written with params, `repeat:` and "
                         "residual rows, not value by value).")
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                self._refuse(event.start_mark, f"lists and mappings are nested more than {MAX_DEPTH} "
                             "levels deep; a recipe needs fewer than 10.")
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1
        if isinstance(event, yaml.ScalarEvent) and len(event.value) > MAX_STRING:
            self._refuse(event.start_mark, f"a value of {len(event.value):,} characters; a recipe "
                         f"string is at most {MAX_STRING:,} characters (a number far fewer).")
        return super().compose_node(parent, index)


def load_yaml(text: str, file: str) -> tuple[Any, Locations]:
    """Parse YAML text into plain Python data plus the location of every node."""
    if len(text) > MAX_BYTES:
        raise RecipeError(f"{file}: the recipe has {len(text):,} characters; a recipe is at most "
                          f"{MAX_BYTES:,} (the shipped ones are under 5,000).")
    loader = None
    try:
        loader = _BoundedLoader(text, file)  # its reader refuses control characters at once
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else "?"
        raise RecipeError(
            f"{file}, line {line}: invalid YAML: {exc.problem or exc}. Expected valid YAML "
            "(hint: inside [...] or {...} quote expressions, e.g. \"${growth_rate}\")."
        ) from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{file}: invalid YAML: {' '.join(str(exc).split())}.") from None
    finally:
        if loader is not None:
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
    return _scalar(node, path, file, constructor)


def _scalar(node, path, file, constructor) -> Any:
    """A plain scalar; a number must be short (`1e400`, 5,000 digits or `.nan` are refused)."""
    number = node.tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
    where = f"{file}, line {node.start_mark.line + 1}, field {format_path(path)}"
    if number and len(node.value) > MAX_NUMBER_TEXT:
        raise RecipeError(f"{where}: the number {node.value[:40]}... has {len(node.value)} "
                          f"characters; recipe numbers are at most {MAX_NUMBER_TEXT}.")
    try:
        value = constructor.construct_object(node, deep=True)
    except (ValueError, OverflowError) as exc:
        raise RecipeError(f"{where}: cannot read {node.value!r} as a number: {exc}.") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise RecipeError(f"{where}: {node.value!r} is not a finite number; recipe numbers are "
                          "finite (write a large value such as 1.0e9 instead of .inf).")
    return value


def read_recipe_file(path: Path) -> tuple[Any, Locations]:
    """Read and parse one recipe file, refusing what is not a small UTF-8 text file."""
    path = Path(path)
    if path.is_dir():
        raise RecipeError(f"recipe file {path} is a directory; give the path of a .yaml file "
                          "(or a shipped recipe's name).")
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_BYTES + 1)  # never more: the file might be endless
    except FileNotFoundError:
        raise RecipeError(f"recipe file {path} does not exist.") from None
    except OSError as exc:
        raise RecipeError(f"recipe file {path} cannot be read: {exc.strerror or exc}.") from None
    if len(raw) > MAX_BYTES:
        raise RecipeError(f"{path}: the recipe is larger than {MAX_BYTES:,} bytes; a recipe is at "
                          "most that large (the shipped ones are under 5,000 bytes).")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise RecipeError(
            f"{path}, line {line}: the file is not UTF-8 text (byte 0x{raw[exc.start]:02x} at "
            f"offset {exc.start}); recipes are YAML text files encoded as UTF-8."
        ) from None
    if not text.strip():
        raise RecipeError(f"{path}: the recipe file is empty; a recipe is a YAML mapping with keys "
                          "such as name, params, stem, stages and head.")
    return load_yaml(text, str(path))
