"""What a model costs, known before any weight is allocated: parameters, activation memory
per example, multiply-adds, and the bound `build` (so `train` and `tune`) holds a model to.

The network is first built as a skeleton inside `keras.StatelessScope(initialize_variables=
False)`: every layer and variable exists with its shape, but no variable holds memory
(Keras defers initialising variables created in a stateless scope). The counts are read
from those shapes; `build` then either initialises the variables (the model is within the
bound) or drops them (`discard_skeleton`) and refuses.

The bound (docs: `cnnbuilder help limits`):
- ``CNNBUILDER_MAX_PARAMS`` — at most this many parameters (default 2,000,000,000);
- ``CNNBUILDER_MAX_MEMORY`` — at most this many bytes of estimated training memory
  (default: the machine's available memory); ``0`` or ``none`` turns a bound off.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
from dataclasses import dataclass

import keras

from cnnbuilder.errors import RecipeError
from cnnbuilder.model.summary import _owner, layer_macs

DEFAULT_MAX_PARAMS = 2_000_000_000
# Training memory, estimated: weights, their gradients and two optimizer slots (Adam's
# moments; SGD with momentum keeps one) in float32, plus each layer's output, kept in
# float32 for the backward pass (gradients of activations are transient). A floor rather
# than a ceiling, so that a refusal means the run cannot fit.
BYTES_PER_PARAM = 16
BYTES_PER_ACTIVATION = 4
# The batch the memory estimate assumes; `train` on the command line sets the run's.
_BATCH_SIZE = contextvars.ContextVar("cost_batch_size", default=1)


@dataclass
class Cost:
    """A model's size: parameters, activation values per example (every layer's output),
    multiply-adds per example (0 where the input size is unknown), and the step (recipe
    block) holding the most parameters and the one with the largest output."""

    params: int
    activations: int
    macs: int
    params_by_step: dict
    activations_by_step: dict

    def training_memory(self, batch_size: int = 1) -> int:
        """Estimated bytes to train with `batch_size` examples per step."""
        return BYTES_PER_PARAM * self.params + BYTES_PER_ACTIVATION * self.activations * batch_size


@contextlib.contextmanager
def batch_size_for_bound(batch_size: int | None):
    """Within the block, the memory bound assumes `batch_size` examples per step."""
    token = _BATCH_SIZE.set(batch_size or 1)
    try:
        yield
    finally:
        _BATCH_SIZE.reset(token)


def model_cost(model, plan=None) -> Cost:
    """The `Cost` of a built (or skeleton) model, from its layers' shapes only.

    Args:
        model: a functional Keras model.
        plan: its `Plan`, to attribute layers to recipe steps (by name prefix).
    """
    names = [s.name for s in plan.steps] if plan is not None else []
    params = activations = macs = 0
    params_by_step: dict = {}
    activations_by_step: dict = {}
    for layer in model.layers:
        count = sum(math.prod(w.shape) for w in layer.weights)
        size = 0
        if not isinstance(layer, keras.layers.InputLayer):
            outputs = layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]
            size = sum(math.prod(d or 1 for d in t.shape[1:]) for t in outputs)
        owner = _owner(layer.name, names) or "head"
        params_by_step[owner] = params_by_step.get(owner, 0) + count
        activations_by_step[owner] = activations_by_step.get(owner, 0) + size
        params += count
        activations += size
        macs += layer_macs(layer)
    return Cost(params, activations, macs, params_by_step, activations_by_step)


def skeleton_scope():
    """A scope in which built models hold no memory (their variables stay uninitialised)."""
    return keras.StatelessScope(initialize_variables=False)


def discard_skeleton() -> None:
    """Forget the variables a skeleton created, so no later scope initialises them."""
    # Keras keeps deferred variables in a thread-local list that the next stateless
    # scope's exit initialises; emptying it is the only way to drop them.
    from keras.src.backend.common import global_state

    global_state.set_global_attribute("uninitialized_variables", [])


def allocate_skeleton() -> None:
    """Initialise the variables of the skeleton just built (the outermost stateless
    scope's exit does it)."""
    with keras.StatelessScope():
        pass


def _limit(variable: str, default: int | None) -> int | None:
    """A bound from the environment: an integer, or 0/none for no bound."""
    text = os.environ.get(variable)
    if text is None or not text.strip():
        return default
    if text.strip().lower() in ("0", "none", "off"):
        return None
    try:
        value = int(float(text))
    except ValueError:
        value = 0
    if value < 1:
        from cnnbuilder.errors import UsageError

        raise UsageError(f"{variable}={text!r}: expected a positive integer, or none for no bound.")
    return value


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_bound(cost: Cost, plan, recipe, arguments: dict) -> None:
    """Refuse a model over the bound, naming the recipe line of its largest block and the
    arguments (`--classes 1000000000000`, `input_shape=(...)`) that made it so.

    Args:
        cost: the skeleton's `Cost`.
        plan: its `Plan`.
        recipe: the `Recipe` (for file and line).
        arguments: {"input_shape" or "classes": its label} for the build arguments the
            user gave (not the recipe's own values), as messages name them.
    """
    max_params = _limit("CNNBUILDER_MAX_PARAMS", DEFAULT_MAX_PARAMS)
    max_memory = _limit("CNNBUILDER_MAX_MEMORY", available_memory())
    batch = _BATCH_SIZE.get()
    memory = cost.training_memory(batch)
    if max_params is not None and cost.params > max_params:
        what = (f"the model would have {cost.params:,} parameters, over the bound of {max_params:,} "
                "(set CNNBUILDER_MAX_PARAMS to raise it)")
        by_step, by_activations = cost.params_by_step, False
    elif max_memory is not None and memory > max_memory:
        what = (f"training the model would need about {_gib(memory)} of memory ({cost.params:,} "
                f"parameters, {cost.activations:,} activation values per example, batch {batch}), "
                f"more than the {_gib(max_memory)} available (use a smaller batch size or input, "
                "or set CNNBUILDER_MAX_MEMORY, in bytes, or none, to change the bound)")
        by_activations = cost.activations * BYTES_PER_ACTIVATION * batch > memory / 2
        by_step = cost.activations_by_step if by_activations else cost.params_by_step
    else:
        return
    raise RecipeError(_culprit_message(what, by_step, plan, recipe, arguments, by_activations))


def _culprit_message(what: str, by_step: dict, plan, recipe, arguments: dict,
                     by_activations: bool) -> str:
    """`what`, told from the arguments the user gave and the recipe line of the step that
    holds most of it."""
    from cnnbuilder.recipe.fields import blame

    steps = {s.name: s for s in plan.steps}
    largest = max(by_step, key=by_step.get)
    step = steps.get(largest)
    total = sum(by_step.values()) or 1
    share = f"{100 * by_step[largest] / total:.0f}%"
    causes = []
    if step is not None:
        # The class count sizes the blocks that use it; the input size sizes every
        # activation, and the parameters of a block after a flatten.
        flattened = any(s.block == "flatten" for s in plan.steps[:plan.steps.index(step)])
        if "classes" in arguments and "classes" in str(step.raw):
            causes.append(arguments["classes"])
        if "input_shape" in arguments and (by_activations or flattened):
            causes.append(arguments["input_shape"])
        # Only what the user gave (--set, keywords), not the recipe's own params lines.
        causes += [part for part in blame(step.raw, plan.params).split(" and ")
                   if part and ", line " not in part]
        where = (f"{recipe.document.where(step.path)} (block {step.block!r}, {step.name}, "
                 f"{share} of it)")
    else:
        where = f"{recipe.document.source} (its head, {share} of it)"
    prefix = f"{' and '.join(causes)} gives, at " if causes else ""
    return f"{prefix}{where}: {what}. Reduce the input shape, classes or the block's size."


def _gib(size: int) -> str:
    """Bytes as GiB with one decimal, for messages."""
    return f"{size / 2**30:,.1f} GiB"


def bounded(recipe, plan, make):
    """`make()` (a function building the model of `plan`) run as a skeleton, its cost
    checked against the bound, then its variables allocated; the model.

    Inside a caller's stateless scope (`show` sizing a model) the skeleton is returned
    as it is, unchecked and unallocated."""
    from keras.src.backend.common.stateless_scope import in_stateless_scope

    if in_stateless_scope():
        return make()
    try:
        with skeleton_scope():
            model = make()
        check_bound(model_cost(model, plan), plan, recipe, given_arguments(recipe, plan))
    except BaseException:
        discard_skeleton()
        raise
    allocate_skeleton()
    return model


def given_arguments(recipe, plan) -> dict:
    """{"input_shape"/"classes": label} for the build arguments that differ from the
    recipe's own, as messages name them (`--classes 1000000000000`, `input_shape=(...)`)."""
    from cnnbuilder.recipe.params import argument_label

    given = {}
    if tuple(plan.input_shape) != tuple(recipe.default_input_shape):
        given["input_shape"] = argument_label("input_shape", tuple(plan.input_shape))
    for step in plan.steps:
        units = step.fields.get("units")
        if step.section == "head" and "classes" in str(step.raw) and units != recipe.default_classes:
            given["classes"] = argument_label("classes", units)
    return given


def check_plan(recipe, plan, *, params: dict | None = None) -> None:
    """Check the model of a resolved `plan` against the bound before anything is allocated
    or any data is read at its size (a huge `input_shape` would otherwise first exhaust
    memory resizing the dataset): a skeleton, dropped after the check."""
    from cnnbuilder.model.builder import build_planned

    try:
        with skeleton_scope():
            model = build_planned(recipe, plan, params=params)
        check_bound(model_cost(model, plan), plan, recipe, given_arguments(recipe, plan))
    finally:
        discard_skeleton()
