"""A recipe's feature taps: the plan steps whose outputs `features_only=True` returns.

A recipe may declare them in a top-level `features:` list, in network order, one entry per
feature map (as timm's `feature_info`: for a ResNet the stem's ReLU at /2, then each stage's
end at /4 .. /32):

```yaml
features:
  - stem_activation1            # a step name: that step's output
  - conv2                       # a stage name: the output of the stage's last step
  - {step: conv3}               # explicitly a step (when a stage has the same name)
  - {stage: conv4}              # explicitly a stage's end
  - {stage: block1, last: conv} # the output of the stage's last `conv` step
  - {stage: conv2, index: -2}   # the stage's steps by position (negative from its end)
```

A plain name that is both a step and a stage whose outputs differ (DenseNet's dense block
`conv2` in stage `conv2`, which ends with its transition) is refused as ambiguous. Without
`features:` the taps are the ends of the stages. Every problem is a `RecipeError` with the
file and line of the entry, raised when the recipe is planned (before any layer is built).
Pure Python: importing this module imports no TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnnbuilder.errors import RecipeError
from cnnbuilder.recipe.vocabulary import did_you_mean

FEATURES_KEY = "features"
ENTRY_KEYS = ("step", "stage", "last", "index")


@dataclass(frozen=True)
class Tap:
    """One feature map: `name` as the recipe declares it (the stage name for a default
    tap), the plan `step` whose output it is, and that step's `stage` (``"stem"`` or a
    stage name)."""

    name: str
    step: str
    stage: str


def feature_taps(document, plan) -> list[Tap]:
    """The feature taps of `plan` (a `Plan` of `document`), in network order.

    Args:
        document: the recipe's `Document` (for `features:` and error locations).
        plan: a `Plan` resolved from it (the head, if planned, is never a tap).

    Returns:
        One `Tap` per declared entry, or one per stage end when `features:` is absent.

    Raises:
        RecipeError: a malformed entry, a name that is not a step or stage of the network
            (or is in the head), an ambiguous name, a repeated tap or one out of order;
            the message starts with the entry's file, line and field.
    """
    steps = [step for step in plan.steps if step.section != "head"]
    declared = document.data.get(FEATURES_KEY)
    if declared is None:
        return [Tap(stage, _stage_end(steps, stage).name, stage) for stage in plan.stages]
    if not isinstance(declared, list) or not declared:
        raise document.error((FEATURES_KEY,), "expected a non-empty list of feature taps: step "
                             "names, stage names or {stage: NAME, last: BLOCK}; got "
                             f"{declared!r}.")
    index_of = {step.name: i for i, step in enumerate(steps)}
    head = {step.name for step in plan.steps if step.section == "head"}
    taps, positions = [], []
    for number, entry in enumerate(declared):
        path = (FEATURES_KEY, number)
        label, step = _resolve_entry(document, path, entry, steps, plan.stages, head)
        position = index_of[step.name]
        if position in positions:
            raise document.error(path, f"feature tap {label!r} is the output of step {step.name!r}, "
                                       f"already tapped by entry {positions.index(position)}.")
        if positions and position < positions[-1]:
            raise document.error(path, f"feature tap {label!r} (step {step.name!r}) comes before "
                                       f"the previous tap in the network; list the taps in network "
                                       "order (input to output), as timm's feature_info.")
        positions.append(position)
        taps.append(Tap(label, step.name, step.stage))
    return taps


def select_taps(taps: list, out_indices) -> list:
    """The taps `out_indices` picks, as timm's `out_indices` (0 is the first tap; negative
    indices count from the end); all of them for None.

    Args:
        taps: the network's taps (`feature_taps`), or any list with a `name` per entry.
        out_indices: None or a non-empty sequence of distinct integer indices.

    Raises:
        RecipeError: indices that are not integers, out of range or repeated; the message
            lists the taps with their indices.
    """
    if out_indices is None:
        return list(taps)
    listing = ", ".join(f"{i}: {getattr(t, 'name', t)}" for i, t in enumerate(taps))
    try:
        indices = list(out_indices)
    except TypeError:
        indices = None
    if not indices or any(isinstance(i, bool) or not isinstance(i, int) for i in indices):
        raise RecipeError(f"`out_indices` must be a non-empty sequence of feature indices "
                          f"({listing}). Received: out_indices={out_indices!r}")
    bad = [i for i in indices if not -len(taps) <= i < len(taps)]
    if bad:
        raise RecipeError(f"`out_indices` {bad} out of range: this network has {len(taps)} "
                          f"feature maps ({listing}). Received: out_indices={out_indices!r}")
    chosen = [i % len(taps) for i in indices]
    if len(set(chosen)) != len(chosen):
        raise RecipeError(f"`out_indices` names a feature map twice ({listing}). "
                          f"Received: out_indices={out_indices!r}")
    return [taps[i] for i in chosen]


def _stage_end(steps, stage):
    return [step for step in steps if step.stage == stage][-1]


def _resolve_entry(document, path, entry, steps, stages, head):
    """(label, step) of one `features:` entry."""
    by_name = {step.name: step for step in steps}
    known = f"steps such as {', '.join(list(by_name)[:6])}, ...; stages {', '.join(stages)}"
    if isinstance(entry, str):
        entry_kind, name, last, index = None, entry, None, None
    elif isinstance(entry, dict) and entry and all(k in ENTRY_KEYS for k in entry) \
            and (("step" in entry) != ("stage" in entry)) \
            and not ("step" in entry and ("last" in entry or "index" in entry)) \
            and not ("last" in entry and "index" in entry):
        entry_kind = "step" if "step" in entry else "stage"
        name, last, index = entry[entry_kind], entry.get("last"), entry.get("index")
        if last is not None and not isinstance(last, str):
            raise document.error(path + ("last",), f"expected a block type such as conv, got {last!r}.")
        if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
            raise document.error(path + ("index",), f"expected an integer position, got {index!r}.")
    else:
        unknown = [k for k in entry if k not in ENTRY_KEYS] if isinstance(entry, dict) else []
        hint = did_you_mean(unknown[0], ENTRY_KEYS) if unknown else ""
        raise document.error(path, "a feature tap is a step or stage name, {step: NAME}, "
                                   "{stage: NAME}, {stage: NAME, last: BLOCK} or {stage: NAME, index: N}; "
                                   f"got {entry!r}.{hint}")
    if not isinstance(name, str) or not name:
        raise document.error(path, f"expected a step or stage name, got {name!r}.")
    is_step, is_stage = name in by_name, name in stages or name == "stem"
    if entry_kind is None and is_step and is_stage and by_name[name] is not _stage_end(steps, name):
        raise document.error(path, f"{name!r} is both a step and a stage whose last output is "
                                   f"another step ({_stage_end(steps, name).name!r}); write "
                                   f"{{step: {name}}} or {{stage: {name}}}.")
    if entry_kind == "stage" or (entry_kind is None and is_stage and not is_step):
        if not is_stage or not any(step.stage == name for step in steps):
            raise _unknown(document, path, name, "stage", list(stages) + ["stem"], known, head)
        in_stage = [step for step in steps if step.stage == name]
        if index is not None:
            if not -len(in_stage) <= index < len(in_stage):
                raise document.error(path + ("index",), f"stage {name!r} has {len(in_stage)} steps "
                                                        f"here; index {index} is out of range.")
            return f"{name}[{index}]", in_stage[index]
        if last is None:
            return name, in_stage[-1]
        matching = [step for step in in_stage if step.block == last]
        if not matching:
            blocks = sorted({step.block for step in in_stage})
            raise document.error(path + ("last",), f"stage {name!r} has no {last!r} step (its "
                                                   f"blocks: {', '.join(blocks)})."
                                 + did_you_mean(last, blocks))
        return f"{name}.{last}", matching[-1]
    if not is_step:
        raise _unknown(document, path, name, "step", by_name, known, head)
    return name, by_name[name]


def _unknown(document, path, name, kind, options, known, head) -> RecipeError:
    if name in head:
        return document.error(path, f"feature tap {name!r} is in the head, which features_only "
                                    "models leave out; tap a step of the stem or the stages.")
    return document.error(path, f"feature tap {name!r} is not a {kind} of this network ({known})."
                          + did_you_mean(name, options))


__all__ = ["ENTRY_KEYS", "FEATURES_KEY", "Tap", "feature_taps", "select_taps"]
