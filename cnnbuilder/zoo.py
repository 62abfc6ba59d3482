"""The registry of named recipes: the YAML files shipped in `recipes/`."""

from __future__ import annotations

import fnmatch
import re
from functools import lru_cache
from pathlib import Path

from cnnbuilder.errors import RecipeError
from cnnbuilder.recipe import Recipe, read_document
from cnnbuilder.recipe import backbone, search_space
from cnnbuilder.recipe.vocabulary import did_you_mean

_PACKAGE_DIR = Path(__file__).resolve().parent


def recipes_dir() -> Path:
    """`cnnbuilder/_recipes` in an installed wheel, `recipes/` in a source checkout."""
    installed = _PACKAGE_DIR / "_recipes"
    if installed.is_dir():
        return installed
    return _PACKAGE_DIR.parent / "recipes"


def _names() -> dict[str, Path]:
    return {p.stem: p for p in sorted(recipes_dir().glob("*.yaml"))}


def _natural_key(name: str) -> list:
    """`resnet18` before `resnet34` before `resnet101`: digit runs compare as numbers (as timm)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def list_recipes(pattern: str = "*") -> list[str]:
    """Names of the shipped recipes matching an fnmatch `pattern`, in natural order."""
    return sorted((name for name in _names() if fnmatch.fnmatch(name, pattern)), key=_natural_key)


def recipe_path(name: str) -> Path:
    """The file of a shipped recipe; a RecipeError with did-you-mean for an unknown name."""
    names = _names()
    if name in names:
        return names[name]
    raise RecipeError(
        f"unknown recipe {name!r}: it is neither a shipped recipe nor a .yaml file."
        + did_you_mean(name, names)
        + f" See `cnnbuilder list` for the {len(names)} shipped recipes."
    )


def _resolve_extends(name: str, relative_to: Path) -> Path | None:
    if name.endswith((".yaml", ".yml")):
        candidate = (relative_to / name) if not Path(name).is_absolute() else Path(name)
        return candidate if candidate.is_file() else None
    return _names().get(name)


@lru_cache(maxsize=256)
def _load_file(path: str, mtime: float) -> Recipe:
    return Recipe(read_document(path, resolve_name=_resolve_extends))


def load_recipe(recipe) -> Recipe:
    """A `Recipe` from a shipped name, a path to a .yaml file, a dict or a Recipe."""
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, dict):
        return Recipe(read_document(recipe, resolve_name=_resolve_extends))
    if isinstance(recipe, Path) or (isinstance(recipe, str) and recipe.endswith((".yaml", ".yml"))):
        path = Path(recipe)
        if path.is_dir():
            raise RecipeError(f"recipe file {path} is a directory; give the path of a .yaml file "
                              "(or a shipped recipe's name).")
        if not path.is_file():
            raise RecipeError(f"recipe file {path} does not exist.")
        path = path.resolve()
        return _load_file(str(path), path.stat().st_mtime)
    if isinstance(recipe, str):
        path = recipe_path(recipe)
        return _load_file(str(path), path.stat().st_mtime)
    raise RecipeError(
        f"a recipe is a name, a path to a .yaml file, a dict or a Recipe; got {type(recipe).__name__}."
    )


# `recipe_space` (cnnbuilder.recipe.search_space) loads names, paths and dicts with this.
search_space.use_loader(load_recipe)
# A segmentation recipe's `backbone:` (cnnbuilder.recipe.backbone) is loaded with it too.
backbone.use_loader(load_recipe)
