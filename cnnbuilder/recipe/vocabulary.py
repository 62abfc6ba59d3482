"""The block vocabulary of the recipe language: every block, its fields, types and defaults.

This table is pure Python so recipes can be validated (and documented) without importing
TensorFlow; `cnnbuilder.model.blocks` registers one implementation per entry, and a test checks
that the two agree. Each block also knows how it changes the shape of its input, which
lets the resolver reject a network that shrinks its input to nothing before any layer is
built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

REQUIRED = object()

ACTIVATIONS = frozenset(
    "relu relu6 sigmoid softmax tanh elu selu gelu silu swish linear leaky_relu "
    "hard_sigmoid hard_silu softplus softsign mish exponential log_softmax".split()
)
INITIALIZERS = frozenset(
    "glorot_uniform glorot_normal he_normal he_uniform lecun_normal lecun_uniform zeros "
    "ones orthogonal truncated_normal random_normal random_uniform variance_scaling".split()
)


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # int | float | bool | choice | size | padding | activation | initializer | str
    default: Any = REQUIRED
    doc: str = ""
    minimum: float | None = None  # inclusive
    maximum: float | None = None  # inclusive
    below: float | None = None  # exclusive upper bound
    above: float | None = None  # exclusive lower bound
    choices: tuple = ()
    optional: bool = False  # None is accepted

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def describe_type(self) -> str:
        text = {
            "int": "integer",
            "float": "number",
            "bool": "true or false",
            "choice": " | ".join(str(c) for c in self.choices),
            "size": "integer or [height, width]",
            "padding": "integer, [height, width] or [[top, bottom], [left, right]]",
            "activation": "activation name",
            "initializer": "initializer name",
            "str": "string",
        }[self.kind]
        bounds = []
        if self.minimum is not None:
            bounds.append(f">= {self.minimum:g}")
        if self.above is not None:
            bounds.append(f"> {self.above:g}")
        if self.maximum is not None:
            bounds.append(f"<= {self.maximum:g}")
        if self.below is not None:
            bounds.append(f"< {self.below:g}")
        if bounds:
            text += " " + " and ".join(bounds)
        if self.optional:
            text += " or null"
        return text


@dataclass(frozen=True)
class BlockSpec:
    name: str
    family: str
    doc: str
    fields: tuple[Field, ...]
    shape: Callable[[tuple, dict], tuple]  # (h, w, c) or (c,) -> output shape
    shorthand: str | None = None  # field set by `- block: value`
    composite: bool = False  # named `<stage>_block<k>` rather than `<stage>_<type><k>`
    field_map: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        self.field_map.update({f.name: f for f in COMMON_FIELDS + self.fields})

    def field(self, name: str) -> Field | None:
        return self.field_map.get(name)


COMMON_FIELDS = (
    Field("name", "str", None, "layer-name prefix (default: derived from the stage and position)", optional=True),
    Field("repeat", "int", 1, "how many times the block is applied in sequence", minimum=0),
)

# ----------------------------------------------------------------------------- shapes


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _conv_size(n, kernel, stride, padding, dilation=1):
    if n is None:
        return None
    effective = (kernel - 1) * dilation + 1
    if padding == "same":
        return math.ceil(n / stride)
    if padding == "symmetric":
        n += 2 * (effective // 2)
    return (n - effective) // stride + 1


def _spatial(shape, fn):
    if len(shape) != 3:
        raise ShapeError(f"needs an image-shaped input (height, width, channels), got {shape}")
    h, w, c = shape
    return fn(h, 0), fn(w, 1), c


class ShapeError(ValueError):
    """The block cannot take an input of this shape."""


def _conv_shape(shape, f):
    k, s, d = _pair(f["kernel"]), _pair(f["stride"]), _pair(f["dilation"])
    h, w, c = _spatial(shape, lambda n, i: _conv_size(n, k[i], s[i], f["padding"], d[i]))
    if c is not None and c % f["groups"]:
        raise ShapeError(f"{c} input channels cannot be split into groups={f['groups']}")
    if f["filters"] % f["groups"]:
        raise ShapeError(f"filters={f['filters']} is not divisible by groups={f['groups']}")
    return h, w, f["filters"]


def _pool_shape(shape, f):
    size = _pair(f["size"])
    stride = _pair(f["stride"] if f["stride"] is not None else f["size"])
    return _spatial(shape, lambda n, i: _conv_size(n, size[i], stride[i], f["padding"]))


def _pad_amounts(padding) -> tuple[tuple[int, int], tuple[int, int]]:
    if isinstance(padding, int):
        return (padding, padding), (padding, padding)
    if all(isinstance(p, int) for p in padding):
        return (padding[0], padding[0]), (padding[1], padding[1])
    return tuple(map(tuple, padding))


def _pad_shape(shape, f):
    amounts = _pad_amounts(f["padding"])
    return _spatial(shape, lambda n, i: None if n is None else n + sum(amounts[i]))


def _vector_shape(shape, f):
    return (shape[-1],) if len(shape) == 3 else shape


def _flatten_shape(shape, f):
    if any(d is None for d in shape):
        raise ShapeError(
            f"flatten needs a fixed input size, got {shape}; give input_shape with a "
            "height and width, or use global_pool"
        )
    return (math.prod(shape),)


def _same_shape(shape, f):
    return shape


def _fc_shape(shape, f):
    return shape[:-1] + (f["units"],)


def _residual_shape(shape, f):
    stride = f.get("stride", 1)
    h, w, c = _spatial(shape, lambda n, i: None if n is None else math.ceil(n / stride))
    bottleneck = f.get("bottleneck", True)
    out = f["filters"] * (f["expansion"] if bottleneck else 1)
    width = f["width"] if f["width"] is not None else f["filters"]
    if bottleneck and width % f["groups"]:
        raise ShapeError(f"width={width} is not divisible by groups={f['groups']}")
    shortcut = f.get("shortcut", "identity")
    if shortcut == "identity" and (stride != 1 or (c is not None and c != out)):
        raise ShapeError(
            f"an identity unit must keep the shape, but its input has {c} channels and its "
            f"output {out} (use `convolutional`, or `bottleneck` which picks the shortcut)"
        )
    if shortcut == "pad" and c is not None and c > out:
        raise ShapeError(f"shortcut: pad cannot reduce {c} channels to {out}")
    return h, w, out


def _dense_shape(shape, f):
    h, w, c = _spatial(shape, lambda n, i: n)
    return h, w, None if c is None else c + f["layers"] * f["growth_rate"]


def _transition_shape(shape, f):
    h, w, c = _spatial(shape, lambda n, i: None if n is None else n // 2)
    if (h is not None and h < 1) or (w is not None and w < 1):
        return h, w, c
    out = None if c is None else int(c * f["compression"])
    if out is not None and out < 1:
        raise ShapeError(f"compression {f['compression']} leaves no channels out of {c}")
    return h, w, out


def _inception_shape(shape, f):
    h, w, c = _spatial(shape, lambda n, i: n)
    return h, w, f["b1"] + f["b3"] + f["b5"] + f["pool_proj"]


# ----------------------------------------------------------------------------- fields

_POSITIVE = dict(minimum=1)
_STYLE = Field("style", "choice", "v1", "v1: post-activation (He et al. 2015); v2: pre-activation (He et al. 2016)", choices=("v1", "v2"))
_KERNEL = Field("kernel", "int", 3, "kernel size of the spatial convolutions", minimum=1)
_EXPANSION = Field("expansion", "int", 4, "bottleneck output channels = filters × expansion", **_POSITIVE)
_GROUPS = Field("groups", "int", 1, "groups of the 3×3 convolution (ResNeXt cardinality)", **_POSITIVE)
_WIDTH = Field("width", "int", None, "channels of the 3×3 convolution (default: filters; ResNeXt and wide ResNets set it)", optional=True, **_POSITIVE)
_STRIDE_ON = Field("stride_on", "choice", "3x3", "which convolution of a bottleneck carries the stride: 1x1 (Keras/Caffe ResNet v1) or 3x3 (torchvision, ResNet v1.5)", choices=("1x1", "3x3"))
_BOTTLENECK = Field("bottleneck", "bool", False, "1×1-3×3-1×1 bottleneck unit instead of two 3×3 convolutions")

BLOCKS: dict[str, BlockSpec] = {}


def _register(spec: BlockSpec) -> None:
    BLOCKS[spec.name] = spec


_register(BlockSpec(
    "conv", "basic", "A 2-D convolution.",
    (
        Field("filters", "int", doc="output channels", **_POSITIVE),
        Field("kernel", "size", 3, "kernel size"),
        Field("stride", "size", 1, "stride"),
        Field("padding", "choice", "same", "same (TensorFlow style), valid, or symmetric (explicit zero padding of kernel//2 on every side, then valid, as PyTorch)", choices=("same", "valid", "symmetric")),
        Field("groups", "int", 1, "grouped convolution", **_POSITIVE),
        Field("dilation", "size", 1, "dilation rate"),
        Field("use_bias", "choice", True, "add a bias; auto: only when no BatchNorm follows", choices=(True, False, "auto")),
        Field("activation", "activation", None, "activation fused into the layer (as VGG in keras.applications)", optional=True),
        Field("kernel_initializer", "initializer", "glorot_uniform", "kernel initializer"),
    ),
    _conv_shape, shorthand="filters",
))
_register(BlockSpec(
    "pool", "basic", "Max or average pooling.",
    (
        Field("type", "choice", "max", "max or avg", choices=("max", "avg")),
        Field("size", "size", 2, "window size"),
        Field("stride", "size", None, "stride (default: the window size)", optional=True),
        Field("padding", "choice", "valid", "valid or same", choices=("valid", "same")),
    ),
    _pool_shape, shorthand="type",
))
_register(BlockSpec(
    "global_pool", "basic", "Global average or max pooling to a vector.",
    (Field("type", "choice", "avg", "avg or max", choices=("avg", "max")),),
    _vector_shape, shorthand="type",
))
_register(BlockSpec(
    "fc", "basic", "A fully connected layer (keras Dense).",
    (
        Field("units", "int", doc="output units", **_POSITIVE),
        Field("activation", "activation", None, "activation", optional=True),
        Field("use_bias", "bool", True, "add a bias"),
        Field("kernel_initializer", "initializer", "glorot_uniform", "kernel initializer"),
    ),
    _fc_shape, shorthand="units",
))
_register(BlockSpec(
    "dropout", "basic", "Dropout.",
    (Field("rate", "float", doc="fraction of units dropped", minimum=0, below=1),),
    _same_shape, shorthand="rate",
))
_register(BlockSpec("flatten", "basic", "Flatten to a vector.", (), _flatten_shape))
_register(BlockSpec(
    "pad", "basic", "Zero padding of height and width.",
    (Field("padding", "padding", doc="pixels added on each side"),),
    _pad_shape, shorthand="padding",
))
_register(BlockSpec(
    "bn", "basic", "Batch normalization.",
    (
        Field("epsilon", "float", 1e-3, "added to the variance", above=0),
        Field("momentum", "float", 0.99, "moving-average momentum", minimum=0, maximum=1),
    ),
    _same_shape,
))
_register(BlockSpec(
    "activation", "basic", "An activation function.",
    (Field("function", "activation", "relu", "activation name"),),
    _same_shape, shorthand="function",
))
_register(BlockSpec(
    "identity", "residual",
    "Residual unit whose output shape equals its input: identity shortcut (or none, for plain networks).",
    (
        Field("filters", "int", doc="channels of the unit (bottleneck: of the 1×1 reduce)", **_POSITIVE),
        _BOTTLENECK, _STYLE, _EXPANSION, _GROUPS, _WIDTH, _KERNEL, _STRIDE_ON,
        Field("shortcut", "choice", "identity", "identity, or none for a plain (non-residual) network", choices=("identity", "none")),
    ),
    _residual_shape, composite=True,
))
_register(BlockSpec(
    "convolutional", "residual",
    "Residual unit that changes channels and/or stride.",
    (
        Field("filters", "int", doc="channels of the unit (bottleneck: of the 1×1 reduce)", **_POSITIVE),
        Field("stride", "int", 2, "stride of the unit", **_POSITIVE),
        _BOTTLENECK, _STYLE, _EXPANSION, _GROUPS, _WIDTH, _KERNEL, _STRIDE_ON,
        Field("shortcut", "choice", "projection", "projection (1×1 conv + BN), pad (CIFAR option A: strided identity plus zero channels), or none", choices=("projection", "pad", "none")),
    ),
    _residual_shape, composite=True,
))
_register(BlockSpec(
    "bottleneck", "residual",
    "Bottleneck residual unit 1×1 reduce → 3×3 (grouped) → 1×1 expand; shortcut chosen from the shapes.",
    (
        Field("filters", "int", doc="channels of the 1×1 reduce; output is filters × expansion", **_POSITIVE),
        Field("stride", "int", 1, "stride of the unit", **_POSITIVE),
        _GROUPS, _WIDTH, _EXPANSION, _STYLE, _KERNEL, _STRIDE_ON,
        Field("shortcut", "choice", "auto", "auto (identity when shapes match, else projection), projection, pad or none", choices=("auto", "projection", "pad", "none")),
    ),
    lambda shape, f: _residual_shape(shape, {**f, "bottleneck": True, "shortcut": "projection" if f["shortcut"] == "auto" else f["shortcut"]}),
    composite=True,
))
_register(BlockSpec(
    "dense", "dense",
    "DenseNet dense block: `layers` layers of BN-ReLU-Conv1×1(bn_size·k)-BN-ReLU-Conv3×3(k), each concatenated to its input.",
    (
        Field("layers", "int", doc="number of layers in the block", **_POSITIVE),
        Field("growth_rate", "int", doc="k: channels each layer adds", **_POSITIVE),
        Field("bn_size", "int", 4, "the 1×1 bottleneck has bn_size × k channels", **_POSITIVE),
        Field("bottleneck", "bool", True, "use the 1×1 bottleneck (DenseNet-B); false for the original DenseNet"),
        Field("dropout", "float", 0.0, "dropout after each convolution", minimum=0, below=1),
        Field("memory_efficient", "bool", False, "recompute the concatenation, BN, ReLU and 1×1 convolution of each layer in the backward pass instead of storing them (Pleiss et al. 2017)"),
    ),
    _dense_shape, composite=True,
))
_register(BlockSpec(
    "transition", "dense",
    "DenseNet transition: BN-ReLU-Conv1×1(⌊θ·C⌋)-AvgPool 2×2.",
    (
        Field("compression", "float", 0.5, "θ: fraction of channels kept", above=0, maximum=1),
        Field("dropout", "float", 0.0, "dropout after the convolution", minimum=0, below=1),
    ),
    _transition_shape, composite=True,
))
_register(BlockSpec(
    "inception", "inception",
    "GoogLeNet inception module: 1×1, 1×1→3×3, 1×1→5×5 and 3×3 max-pool→1×1 branches, concatenated.",
    (
        Field("b1", "int", doc="#1×1", **_POSITIVE),
        Field("b3_reduce", "int", doc="#3×3 reduce", **_POSITIVE),
        Field("b3", "int", doc="#3×3", **_POSITIVE),
        Field("b5_reduce", "int", doc="#5×5 reduce", **_POSITIVE),
        Field("b5", "int", doc="#5×5", **_POSITIVE),
        Field("pool_proj", "int", doc="pool proj", **_POSITIVE),
        Field("b5_kernel", "int", 5, "kernel of the '5×5' branch (torchvision uses 3)", minimum=1),
        Field("batch_norm", "bool", False, "BatchNorm after every convolution (torchvision's GoogLeNet)"),
    ),
    _inception_shape, composite=True,
))


def did_you_mean(word: str, options) -> str:
    import difflib

    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""
