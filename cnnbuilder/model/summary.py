"""Per-stage summaries of a built model: output shapes, parameters, multiply-adds."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import keras

from cnnbuilder.recipe import Plan
from cnnbuilder.recipe.units import format_count  # noqa: F401  (re-exported)


def layer_macs(layer) -> int:
    """Multiply-accumulate operations of one conv or fully connected layer, per image.

    Args:
        layer: a layer of a built functional model.

    Returns:
        The MACs of a Conv2D (output positions × kernel area × input channels / groups ×
        filters), a Conv2DTranspose (input positions × kernel area × input channels ×
        filters) or Dense layer; 0 for other layers and for unknown spatial sizes.
    """
    if isinstance(layer, keras.layers.Conv2D):
        out = layer.output.shape
        if any(d is None for d in out[1:]):
            return 0
        kh, kw = layer.kernel_size
        in_channels = layer.input.shape[-1]
        return out[1] * out[2] * out[3] * kh * kw * in_channels // layer.groups
    if isinstance(layer, keras.layers.Conv2DTranspose):  # every input position scatters a kernel
        shape = layer.input.shape
        if any(d is None for d in shape[1:]):
            return 0
        kh, kw = layer.kernel_size
        return shape[1] * shape[2] * shape[3] * kh * kw * layer.filters
    if isinstance(layer, keras.layers.Dense):
        positions = math.prod(d for d in layer.output.shape[1:-1] if d is not None) or 1
        return positions * layer.input.shape[-1] * layer.units
    return 0


@dataclass
class StageSummary:
    """One row of `cnnbuilder show`: a stem, stage or head, its blocks, output shape,
    parameters and multiply-adds."""

    name: str
    blocks: list[tuple[str, int]] = field(default_factory=list)  # (block, repeats) in order
    output_shape: tuple = ()
    params: int = 0
    macs: int = 0

    @property
    def blocks_text(self) -> str:
        return ", ".join(b if n == 1 else f"{b} ×{n}" for b, n in self.blocks)


def _owner(layer_name: str, step_names: list[str]) -> str | None:
    best = None
    for step in step_names:
        if layer_name == step or layer_name.startswith(step + "_"):
            if best is None or len(step) > len(best):
                best = step
    return best


def summarize(model: keras.Model, plan: Plan) -> list[StageSummary]:
    """One `StageSummary` per stem, stage and head, from the layers each step created.

    A layer belongs to the step whose name is the longest prefix of its own
    (`conv2_block1_0_bn` to step `conv2`); layers of no step (the builder's pooling) count
    in the head, but for a plan over a backbone (`plan.encoder`) the backbone's layers are
    one first row, ``encoder``.

    Args:
        model: the model built from `plan`.
        plan: the resolved plan.

    Returns:
        The summaries in network order.
    """
    stage_of_step = {s.name: s.stage for s in plan.steps}
    stages: dict[str, StageSummary] = {}
    encoder = None
    if getattr(plan, "encoder", ()):  # a backbone's feature maps: one row before the decoder
        encoder = StageSummary("encoder", [(f"{plan.backbone} (features_only)", 1)],
                               tuple(plan.encoder[-1].shape))
        stages["encoder"] = encoder
    for step in plan.steps:
        summary = stages.setdefault(step.stage, StageSummary(step.stage))
        # A dense block is one step of many layers: say how many.
        label = f"dense ({step.fields['layers']} layers)" if step.block == "dense" else step.block
        if summary.blocks and summary.blocks[-1][0] == label:
            summary.blocks[-1] = (label, summary.blocks[-1][1] + 1)
        else:
            summary.blocks.append((label, 1))
        summary.output_shape = step.output_shape
    names = list(stage_of_step)
    for layer in model.layers:
        owner = _owner(layer.name, names)
        stage = stage_of_step[owner] if owner else "head"
        if owner is None and encoder is not None and layer.name not in ("avg_pool", "max_pool"):
            encoder.params += layer.count_params()
            encoder.macs += layer_macs(layer)
            continue
        summary = stages.setdefault(stage, StageSummary(stage))
        summary.params += layer.count_params()
        summary.macs += layer_macs(layer)
        if owner is None and not isinstance(layer, keras.layers.InputLayer):
            summary.blocks.append((layer.__class__.__name__, 1))
            summary.output_shape = tuple(layer.output.shape[1:])
    return list(stages.values())
