"""Decoder blocks of segmentation recipes: upsampling, FC-DenseNet's transition up, skip
connections to an earlier named output (U-Net, Ronneberger et al. 2015; FC-DenseNet, Jégou
et al. 2017; FPN's lateral connections, Lin et al. 2017) and `branch`, which continues from
an earlier output.

`upsample` and `transition_up` change the shape of their input alone; `skip` and `branch`
read the output of an earlier stage or named step (or an encoder feature map of a
`backbone:`), so the resolver (`cnnbuilder.recipe.resolve`) looks that shape up and calls
`skip_shape` with it, before any layer is built.
"""

from __future__ import annotations

from cnnbuilder.recipe.vocabulary.shapes import pair, spatial
from cnnbuilder.recipe.vocabulary.spec import BlockSpec, Field, ShapeError, register

_POSITIVE = dict(minimum=1)


def _scaled(n, factor):
    return None if n is None else n * factor


def _upsample_shape(shape, f):
    if f["mode"] != "transposed" and (f["filters"] is not None or f["kernel"] is not None):
        raise ShapeError(f"takes `filters` and `kernel` only with mode: transposed (mode is {f['mode']})")
    h, w, c = spatial(shape, lambda n, i: _scaled(n, f["factor"]))
    if f["mode"] == "transposed" and f["filters"] is not None:
        c = f["filters"]
    return h, w, c


def _transition_up_shape(shape, f):
    h, w, c = spatial(shape, lambda n, i: _scaled(n, f["stride"]))
    return h, w, c if f["filters"] is None else f["filters"]


def _skip_alone(shape, f):
    raise ShapeError("needs the shape of the output it reads; the resolver gives it (skip_shape)")


def skip_shape(shape: tuple, source_shape: tuple, f: dict) -> tuple:
    """The output shape of a `skip` block on `shape` that reads an output of `source_shape`.

    The spatial sizes must be equal (or, with `crop: true`, the source's at least as large:
    it is cropped to the centre, as U-Net's valid-padded original does); `merge: add` also
    needs equal channels.

    Raises:
        ShapeError: sizes or channels that do not match, named with both shapes.
    """
    if len(shape) != 3 or len(source_shape) != 3:
        raise ShapeError(f"needs two image-shaped tensors, got {shape} and {source_shape} from {f['from']!r}")
    if f.get("filters") is not None:  # the source through a 1×1 convolution first (FPN's lateral)
        source_shape = (*source_shape[:2], f["filters"])
    if f["crop"] and None in (*shape[:2], *source_shape[:2]):
        raise ShapeError(f"crop: true needs a fixed input size (the current tensor is {shape}, "
                         f"{f['from']!r}'s output {source_shape}); give input_shape a height and width")
    for axis, (mine, theirs) in enumerate(zip(shape[:2], source_shape[:2])):
        if mine is None or theirs is None:
            continue
        if f["crop"] and theirs < mine:
            raise ShapeError(
                f"cannot crop {f['from']!r}'s {source_shape} output to the current {shape} tensor: "
                f"it is smaller ({'height' if axis == 0 else 'width'} {theirs} < {mine})")
        if not f["crop"] and theirs != mine:
            raise ShapeError(
                f"joins the current {shape} tensor with {f['from']!r}'s output {source_shape}: their "
                f"resolutions differ ({'height' if axis == 0 else 'width'} {mine} vs {theirs}); upsample "
                "to the source's size, choose another source or (U-Net's valid padding) `crop: true`")
    if f["merge"] == "add":
        if shape[2] != source_shape[2]:
            raise ShapeError(
                f"merge: add needs equal channels; the current {shape} tensor has {shape[2]}, "
                f"{f['from']!r}'s output {source_shape} has {source_shape[2]}")
        return tuple(shape)
    return shape[0], shape[1], shape[2] + source_shape[2]


register(BlockSpec(
    "upsample", "decoder",
    "Upsampling by an integer `factor`: bilinear or nearest-neighbour interpolation, or a transposed "
    "convolution (U-Net's 2×2 up-convolution: `mode: transposed`, `kernel: 2`, `filters`).",
    (
        Field("factor", "int", 2, "how many times larger the height and width become", **_POSITIVE),
        Field("mode", "choice", "bilinear", "bilinear, nearest, or transposed (a learned Conv2DTranspose "
              "with stride `factor`)", choices=("bilinear", "nearest", "transposed")),
        Field("filters", "int", None, "output channels of the transposed convolution (default: the "
              "input's)", optional=True, **_POSITIVE),
        Field("kernel", "size", None, "kernel of the transposed convolution (default: `factor`)",
              optional=True),
        Field("activation", "activation", None, "activation fused into the transposed convolution",
              optional=True),
    ),
    _upsample_shape, shorthand="factor",
))
register(BlockSpec(
    "transition_up", "decoder",
    "FC-DenseNet transition up (Jégou et al. 2017, Table 1): a 3×3 transposed convolution of stride 2.",
    (
        Field("filters", "int", None, "output channels (default: the input's; FC-DenseNet: the k·L "
              "feature maps of the block below)", optional=True, **_POSITIVE),
        Field("kernel", "size", 3, "kernel size"),
        Field("stride", "int", 2, "how many times larger the height and width become", **_POSITIVE),
    ),
    _transition_up_shape, shorthand="filters",
))
register(BlockSpec(
    "skip", "decoder",
    "Skip connection: joins the current tensor with an earlier output, named by its stage (the "
    "stage's end) or by a step's `name:`; concatenated (U-Net, FC-DenseNet) or added.",
    (
        Field("from", "name", doc="the stage (its last output) or named step whose output is joined"),
        Field("merge", "choice", "concat", "concat (channels of both) or add (equal channels)",
              choices=("concat", "add")),
        Field("crop", "bool", False, "crop the earlier output to the centre when it is larger "
              "(U-Net's valid-padded original)"),
        Field("filters", "int", None, "pass the earlier output through a 1×1 convolution of this many "
              "channels first (FPN's lateral connection, Lin et al. 2017)", optional=True, **_POSITIVE),
    ),
    _skip_alone, shorthand="from", composite=False,
))
register(BlockSpec(
    "branch", "decoder",
    "Continues from an earlier output (a stage's end or a named step), leaving the current tensor "
    "to later skips: a decoder's separate paths, e.g. one per level of a feature pyramid.",
    (Field("from", "name", doc="the stage (its last output) or named step to continue from"),),
    _skip_alone, shorthand="from",
))

__all__ = ["skip_shape"]
