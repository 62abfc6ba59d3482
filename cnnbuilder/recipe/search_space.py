"""The `tune:` section of a recipe: a search space over recipe params and training settings.

Pure Python (no TensorFlow, no KerasTuner), so a recipe's search space is checked when the
recipe is tuned or tested, cheaply and with file/line/field in every message.

Syntax
------

Keys directly under ``tune:`` are the recipe's *params* (those of its ``params:`` section);
the keys under ``tune: {training: {...}}`` are *training settings* (those of the
``training:`` section: ``learning_rate``, ``weight_decay``, ``batch_size``, ``momentum``,
``optimizer``, ``schedule``, ``label_smoothing``, ...). ``training`` is therefore never
read as a param name. Each entry is one of three forms::

    tune:
      growth_rate: {choice: [12, 24, 40]}        # one of the listed values
      depth: {int: [40, 100], step: 12}          # integers low..high (both included), every `step`
      compression: {float: [0.3, 0.7]}           # numbers in [low, high]
      dropout: {float: [0.0, 0.3], step: 0.1}    # ...or on a grid of `step`
      widths: {choice: [[8, 16, 32], [16, 32, 64]]}   # lists, booleans, strings: any value the param takes
      training:
        learning_rate: {float: [1.0e-3, 0.3], log: true}   # sampled uniformly in log space
        weight_decay: {float: [1.0e-5, 1.0e-3], log: true}
        batch_size: {choice: [64, 128]}

Optional keys: ``step`` (int and float), ``log: true`` (int and float; not together with
``step``; ``low`` must be > 0) and ``default`` (every form; a value of the range or list,
the value a tuner tries first where it has a notion of a first value).

A child recipe (``extends:``) inherits the parent's ``tune:`` entries, replaces one by
declaring it again (whole: nothing of the parent's entry is kept) and removes one with
``name: null``. ``epochs`` is not tunable (it is the tuner's budget:
``--epochs``; hyperband varies it itself).

Invalid networks are kept out in two ways. A range can only produce valid values by
construction: DenseNet-BC's depth must be 6n+4, so ``depth: {int: [40, 100], step: 6}``
(40, 46, ..., 100) never yields another depth. And every trial's params are checked with
`Recipe.plan` before a layer is built: a combination the recipe rejects is recorded as a
*skipped* trial, with the recipe's message, and never trained.
"""

from __future__ import annotations

import copy
from typing import Callable

from cnnbuilder.errors import RecipeError
from cnnbuilder.recipe.params import type_name as _type_name
from cnnbuilder.recipe.recipe import Recipe
from cnnbuilder.recipe.space import TRAINING, Dimension, SearchSpace
from cnnbuilder.recipe.space import is_int as _is_int
from cnnbuilder.recipe.space import is_number as _is_number
from cnnbuilder.recipe.training import CHECKS as TRAINING_CHECKS
from cnnbuilder.recipe.vocabulary import did_you_mean

KINDS = ("choice", "int", "float")
OPTIONS = {"choice": ("default",), "int": ("step", "log", "default"), "float": ("step", "log", "default")}
# The tuner's budget, not a hyperparameter (hyperband varies it itself).
UNTUNABLE_TRAINING = {
    "epochs": "epochs is the tuner's budget (set it with --epochs / epochs=), not a hyperparameter",
    "iterations": "the length of a trial is the tuner's budget (set it with --epochs / epochs=), not a hyperparameter",
}
FORMS = "{choice: [a, b, ...]}, {int: [low, high], step: s} or {float: [low, high], log: true}"

_ErrorFactory = Callable[[tuple, str], Exception]


# ----------------------------------------------------------------------------- parsing


def parse_space(section, *, params: dict, training_checks: dict | None = None,
                error: _ErrorFactory | None = None, source: str = "tune",
                declaration: Callable | None = None) -> SearchSpace:
    """Check a `tune:` mapping and return its `SearchSpace`.

    `params` maps the recipe's declared params to their raw defaults (a `${...}` default
    is not type-checked). `training_checks` maps training settings to (check, expected)
    as in `cnnbuilder.recipe.training`. `error(path, message)` builds the exception
    (a recipe's `document.error` names file, line and field); paths start with "tune".
    `declaration(name)` is what a param declares it accepts (`Document.declaration`): a
    value of the space outside it is the `tune:` entry's error, reported there.
    """
    if training_checks is None:
        training_checks = TRAINING_CHECKS
    error = error or (lambda path, message: RecipeError(f"field {_format(path)}: {message}"))
    if section is None:
        return SearchSpace((), source)
    if not isinstance(section, dict):
        raise error(("tune",), f"expected a mapping of param: {FORMS}, got {section!r}.")
    dimensions = []
    for name, spec in section.items():
        if name == TRAINING:
            if spec is None:
                continue
            if not isinstance(spec, dict):
                raise error(("tune", TRAINING), f"expected a mapping of training setting: {FORMS}, got {spec!r}.")
            for setting, sub in spec.items():
                path = ("tune", TRAINING, setting)
                if setting in UNTUNABLE_TRAINING:
                    raise error(path, UNTUNABLE_TRAINING[setting] + ".")
                if setting not in training_checks:
                    known = [k for k in training_checks if k not in UNTUNABLE_TRAINING]
                    raise error(path, f"unknown training setting {setting!r}. Tunable settings: "
                                      f"{', '.join(known)}." + did_you_mean(setting, known))
                if sub is None:
                    continue
                dimensions.append(_dimension(path, str(setting), TRAINING, sub, error,
                                             check=training_checks[setting]))
            continue
        path = ("tune", name)
        if not isinstance(name, str) or name not in params:
            known = ", ".join(sorted(params)) or "none"
            raise error(path, f"unknown param {name!r} (this recipe's params: {known}; training "
                              f"settings go under tune.training)." + did_you_mean(str(name), params))
        if spec is None:
            continue
        dimensions.append(_dimension(path, name, "params", spec, error, default=params[name],
                                     declared=declaration(name) if declaration else None))
    return SearchSpace(tuple(dimensions), source)


def _format(path) -> str:
    return ".".join(str(p) for p in path)


def _dimension(path, name, section, spec, error, *, default=None, check=None,
               declared=None) -> Dimension:
    """One entry of a `tune:` section checked: its form, and its values against what the
    param or setting accepts (its type, and its declaration `declared`)."""
    what = f"param {name!r}" if section == "params" else f"training setting {name!r}"
    if not isinstance(spec, dict):
        raise error(path, f"expected {FORMS} to tune {what}, got {spec!r}.")
    kinds = [k for k in spec if k in KINDS]
    if len(kinds) != 1:
        found = f"found {', '.join(kinds)}" if kinds else f"got {spec!r}"
        raise error(path, f"expected exactly one of choice, int, float ({FORMS}); {found}.")
    kind = kinds[0]
    for key in spec:
        if key != kind and key not in OPTIONS[kind]:
            allowed = [kind, *OPTIONS[kind]]
            raise error(path + (key,), f"unknown key {key!r} in a {kind} range (keys: "
                                       f"{', '.join(allowed)})." + did_you_mean(str(key), allowed))
    accepts = _acceptor(what, default, check, declared)
    if kind == "choice":
        values = spec["choice"]
        if not isinstance(values, list) or not values:
            raise error(path + ("choice",), f"expected a non-empty list of values for {what}, got {values!r}.")
        for index, value in enumerate(values):
            if value is None or isinstance(value, dict):
                raise error(path + ("choice", index), f"expected a number, boolean, string or list, got {value!r}.")
            if values.index(value) != index or any(_same(value, v) for v in values[:index]):
                raise error(path + ("choice", index), f"{value!r} is listed twice.")
            problem = accepts(value)
            if problem:
                raise error(path + ("choice", index), problem)
        choice_default = spec.get("default")
        if choice_default is not None and not any(_same(choice_default, v) for v in values):
            raise error(path + ("default",), f"default {choice_default!r} is not one of the choices {values!r}.")
        return Dimension(name, section, "choice", values=tuple(values), default=choice_default)

    bounds = spec[kind]
    if not (isinstance(bounds, list) and len(bounds) == 2):
        raise error(path + (kind,), f"expected [low, high], got {bounds!r}.")
    low, high = bounds
    is_kind = _is_int if kind == "int" else _is_number
    expected = "integers" if kind == "int" else "numbers"
    if not (is_kind(low) and is_kind(high)):
        raise error(path + (kind,), f"expected [low, high] of {expected}, got {bounds!r}.")
    if low > high or (kind == "float" and low == high):
        raise error(path + (kind,), f"expected low {'<=' if kind == 'int' else '<'} high, got {bounds!r}.")
    step, log = spec.get("step"), spec.get("log", False)
    if not isinstance(log, bool):
        raise error(path + ("log",), f"expected true or false, got {log!r}.")
    if step is not None:
        if not (is_kind(step) and step > 0):
            raise error(path + ("step",), f"expected a positive {'integer' if kind == 'int' else 'number'}, got {step!r}.")
        if log:
            raise error(path + ("step",), "step and log: true cannot be combined; use one of them.")
    if log and low <= 0:
        raise error(path + (kind,), f"log: true needs low > 0, got {bounds!r}.")
    if section == "params" and not _expression(default):
        if kind == "int" and not _is_number(default):
            raise error(path + (kind,), f"{what} is {_type_name(default)} (default {default!r}); "
                                        f"use {{choice: [...]}} to tune it.")
        if kind == "float" and not isinstance(default, float):
            hint = "{int: [low, high]}" if _is_int(default) else "{choice: [...]}"
            raise error(path + (kind,), f"{what} is {_type_name(default)} (default {default!r}); "
                                        f"use {hint} to tune it.")
    for label, value in (("low", low), ("high", high)):
        problem = accepts(value)
        if problem:
            raise error(path + (kind,), f"{label} {value!r}: {problem}")
    if kind == "float":
        low, high = float(low), float(high)
    range_default = spec.get("default")
    if range_default is not None:
        if not is_kind(range_default) or not low <= range_default <= high:
            raise error(path + ("default",), f"default {range_default!r} is not a value of [{low}, {high}].")
    return Dimension(name, section, kind, low=low, high=high, step=step, log=log, default=range_default)


def _same(a, b) -> bool:
    return a == b and type(a) is type(b)


def _expression(value) -> bool:
    return isinstance(value, str) and "${" in value


def _acceptor(what, default, check, declared=None):
    """A function value -> None if `value` suits the param/setting, else what was expected."""
    if declared is not None:
        by_type = _acceptor(what, default, check)

        def accepts_declared(value):
            problem = declared.problem(value)
            if problem:
                at = f" at {declared.where}" if declared.where else ""
                return f"{what} accepts {declared.describe()} (declared{at}), got {value!r}."
            return by_type(value)

        return accepts_declared
    if check is not None:
        test, expected = check

        def accepts_setting(value):
            try:
                ok = test(value)
            except TypeError:
                ok = False
            return None if ok else f"{what} expects {expected}, got {value!r}."

        return accepts_setting

    def accepts_param(value):
        if _expression(default):
            return None
        if isinstance(default, bool) or isinstance(value, bool):
            ok = isinstance(value, bool) and isinstance(default, bool)
        elif isinstance(default, float):
            ok = _is_number(value)
        elif isinstance(default, list):
            ok = isinstance(value, list)
        else:
            ok = isinstance(value, type(default))
        return None if ok else f"{what} expects {_type_name(default)} (default {default!r}), got {value!r}."

    return accepts_param


# ----------------------------------------------------------------------------- recipes


def tune_section(recipe: Recipe) -> dict:
    """The `tune:` section of a loaded recipe with its `extends` chain applied entry by entry.

    Elsewhere maps merge key by key, but a search-space entry a recipe declares replaces
    its parent's entry whole: `depth: {choice: [10, 16]}` under a parent's
    `depth: {int: [40, 100], step: 6, default: 100}` must not inherit `int`, `step` or a
    `default` that is not among its choices. Under `training:` each setting is an entry."""
    chain = recipe.document.chain
    if not chain:  # a Document made by hand: only its merged section is known
        return copy.deepcopy(recipe.tune or {})
    section: dict = {}
    for raw in reversed(chain):  # the root first, the recipe itself last
        own = raw.get("tune")
        if not isinstance(own, dict):
            if own is not None:
                section = own  # malformed: parse_space names it
            continue
        if not isinstance(section, dict):
            section = {}
        for key, spec in own.items():
            if key == TRAINING and isinstance(spec, dict) and isinstance(section.get(TRAINING), dict):
                section[TRAINING] = {**section[TRAINING], **copy.deepcopy(spec)}
            else:
                section[key] = copy.deepcopy(spec)
    return section


# How a name, path or dict becomes a `Recipe`: `cnnbuilder.zoo` (which knows the shipped
# recipes, and comes after this package) installs its `load_recipe` here when it is imported,
# so this package never imports it.
_loader: Callable[[object], Recipe] | None = None


def use_loader(load: Callable[[object], Recipe]) -> None:
    """Set the function `recipe_space` loads a recipe that is not yet a `Recipe` with."""
    global _loader
    _loader = load


def recipe_space(recipe, section=None, *, load: Callable[[object], Recipe] | None = None) -> SearchSpace:
    """The search space of a recipe: its own `tune:` section (`tune_section`), or `section`
    (a mapping in the same syntax, e.g. from Python) checked against the recipe's params.

    `recipe` is a `Recipe`, or what `load` (default: `cnnbuilder.load_recipe`) accepts: a
    shipped name, a path or a dict."""
    if not isinstance(recipe, Recipe):
        load = load or _loader
        if load is None:
            raise RecipeError(f"recipe_space got {recipe!r}, not a Recipe, and no loader: pass "
                              "load=cnnbuilder.load_recipe or a loaded Recipe.")
        recipe = load(recipe)
    declared = recipe.document.data.get("params") or {}
    if section is None:
        return parse_space(tune_section(recipe), params=declared, error=recipe.document.error,
                           source=f"the tune: section of {recipe.name}",
                           declaration=recipe.document.declaration)
    where = f"the search space given for {recipe.name}"

    def error(path, message):
        return RecipeError(f"{where}, field {_format(path)}: {message}")

    return parse_space(section, params=declared, error=error, source=where,
                       declaration=recipe.document.declaration)


def check_reachable(space: SearchSpace, check: Callable[[dict, dict], str | None], *,
                    limit: int = 64) -> None:
    """Raise RecipeError when no point of a small finite space gives a valid network.

    `check(params, training)` returns None for a valid point, else the reason. Spaces with
    a continuous dimension or more than `limit` points are left to the per-trial check.
    """
    points = space.combinations(limit)
    if not points:
        return
    reasons = []
    for params, training in points:
        reason = check(params, training)
        if reason is None:
            return
        reasons.append((params, reason))
    params, reason = reasons[0]
    raise RecipeError(
        f"{space.source}: none of its {len(points)} combinations gives a valid network, so "
        f"every trial would be skipped. For example {params}: {reason}"
    )


__all__ = ["Dimension", "SearchSpace", "parse_space", "recipe_space", "tune_section",
           "check_reachable", "use_loader", "FORMS", "KINDS", "OPTIONS", "TRAINING", "UNTUNABLE_TRAINING"]
