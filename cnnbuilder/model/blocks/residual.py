"""Residual units (He et al. 2015, 2016; Xie et al. 2017; Zagoruyko & Komodakis 2016).

One function, `residual_unit`, builds every variant: basic (two k×k convolutions) or
bottleneck (1×1 → k×k grouped → 1×1 × expansion), post-activation (v1) or pre-activation
(v2), with a projection, zero-padding (CIFAR option A), identity or no shortcut. The
recipe blocks `identity`, `convolutional` and `bottleneck` are thin names over it.
"""

from __future__ import annotations

from keras import layers

from cnnbuilder.model.blocks import register


def pad_channels(x, channels: int, *, name: str):
    """Zero channels appended to reach `channels`, from standard layers only.

    The CIFAR ResNets' option A shortcut (He et al. 2015, §4.2: "the shortcut still
    performs identity mapping, with extra zero entries padded for increasing dimensions").
    ZeroPadding2D pads the two middle axes, so the channel axis is moved there and back:
    `<name>_to_chw` (Permute), `<name>_zeros` (ZeroPadding2D), `<name>_to_hwc` (Permute).
    The model stays free of Lambda and custom layers (loadable in safe mode anywhere).

    Args:
        x: the input tensor (channels last).
        channels: the channel count to reach.
        name: the prefix of the three layer names.

    Returns:
        `x` with zero channels appended (`x` itself when it already has `channels`).
    """
    missing = channels - x.shape[-1]
    if missing <= 0:
        return x
    x = layers.Permute((3, 1, 2), name=f"{name}_to_chw")(x)
    x = layers.ZeroPadding2D(padding=((0, missing), (0, 0)), name=f"{name}_zeros")(x)
    return layers.Permute((2, 3, 1), name=f"{name}_to_hwc")(x)


def _shortcut(x, source, kind, out_channels, stride, *, nn, name, v2):
    """The shortcut branch of a residual unit (He et al. 2015, §3.3, options A and B).

    `kind` "projection" builds `<name>_0_conv` (1×1, stride `stride`) and, in v1,
    `<name>_0_bn`; reading `source` (v2: the unit's pre-activation, as keras'
    ResNetV2). "identity" and "pad" subsample with `<name>_0_subsample` (1×1 max pool, a
    strided identity) when `stride` > 1; "pad" appends zero channels (`pad_channels`).
    "none" has no shortcut.

    Returns:
        The shortcut tensor, or None for "none".
    """
    if kind == "none":
        return None
    if kind == "projection":
        shortcut = nn.conv(source, out_channels, 1, stride=stride, bn_follows=not v2,
                           name=f"{name}_0_conv")
        return shortcut if v2 else nn.bn(shortcut, name=f"{name}_0_bn")
    shortcut = x
    if stride > 1:
        # A 1×1 max pool with stride s is x[:, ::s, ::s]: the strided identity.
        shortcut = layers.MaxPooling2D(1, strides=stride, name=f"{name}_0_subsample")(shortcut)
    if kind == "pad":
        shortcut = pad_channels(shortcut, out_channels, name=f"{name}_0_pad")
    return shortcut


def residual_unit(x, *, nn, name, filters, stride=1, bottleneck=False, style="v1",
                  expansion=4, groups=1, width=None, kernel=3, stride_on="3x3",
                  shortcut="identity"):
    """A residual unit, every variant of ResNet, ResNeXt and Wide ResNet.

    Post-activation (v1, He et al. 2015, "Deep Residual Learning", Fig. 2 and Fig. 5) or
    pre-activation (v2, He et al. 2016, "Identity Mappings in Deep Residual Networks",
    Fig. 1b and 4e); basic (two k×k convolutions, Fig. 5 left) or bottleneck (1×1 → k×k →
    1×1, Fig. 5 right) with ResNeXt's grouped k×k (Xie et al. 2017, Fig. 3c, `groups`) and
    Wide ResNet's width (Zagoruyko & Komodakis 2016, `width`). Layers, in order:

    - v2 only: `<name>_preact_bn`, `<name>_preact_relu` (the pre-activation);
    - the shortcut (`_shortcut`): `<name>_0_conv` (+ `<name>_0_bn` in v1) for a projection,
      `<name>_0_subsample` / `<name>_0_pad` for a strided or padded identity;
    - basic: `<name>_1_conv`, `<name>_1_bn`, `<name>_1_relu`, `<name>_2_conv` (+ `<name>_2_bn`
      in v1); bottleneck: `<name>_1_*` (1×1, `width` channels), `<name>_2_*` (k×k,
      `groups`), `<name>_3_conv` (1×1, `filters·expansion`, + `<name>_3_bn` in v1);
    - `<name>_add` (shortcut + residual) and, in v1, `<name>_out` (the activation).

    These are keras.applications' ResNet/ResNetV2 names (`conv2_block1_0_conv`, ...).

    Args:
        x: the input tensor.
        nn: the `LayerFactory` with the recipe's defaults.
        name: the unit's name prefix (`conv2_block1`).
        filters: channels of the basic unit; of the bottleneck's inner convolutions
            (`width` overrides them) before the ×`expansion` of the last 1×1.
        stride: the unit's stride (on the first convolution of a basic unit; for a
            bottleneck see `stride_on`) and its shortcut's.
        bottleneck: build the 1×1 → k×k → 1×1 form.
        style: "v1" (post-activation) or "v2" (pre-activation).
        expansion: output channels of a bottleneck are `filters * expansion`.
        groups: groups of the bottleneck's k×k convolution (ResNeXt cardinality).
        width: channels of the bottleneck's inner convolutions (default `filters`).
        kernel: k, the size of the spatial convolutions.
        stride_on: "1x1" (Caffe/keras v1: the first 1×1 strides) or "3x3" (torchvision,
            ResNet v1.5).
        shortcut: "identity", "projection", "pad" (CIFAR option A), "none" (a plain
            network, §4.1 "Plain Networks") or "auto" (identity when shapes match, else
            projection).

    Returns:
        The unit's output tensor.
    """
    v2 = style == "v2"
    out_channels = filters * expansion if bottleneck else filters
    if shortcut == "auto":
        same = stride == 1 and x.shape[-1] == out_channels
        shortcut = "identity" if same else "projection"
    act = nn.activation

    if v2:
        source = nn.bn(x, name=f"{name}_preact_bn")
        source = nn.act(source, name=f"{name}_preact_{act}")
    else:
        source = x
    residual = _shortcut(x, source, shortcut, out_channels, stride, nn=nn, name=name, v2=v2)

    if bottleneck:
        width = width or filters
        first_stride, middle_stride = (stride, 1) if stride_on == "1x1" else (1, stride)
        y = nn.conv_bn_act(source, width, 1, stride=first_stride, name=f"{name}_1")
        y = nn.conv_bn_act(y, width, kernel, stride=middle_stride, groups=groups, name=f"{name}_2")
        last_filters, last_name = out_channels, f"{name}_3"
    else:
        y = nn.conv_bn_act(source, filters, kernel, stride=stride, name=f"{name}_1")
        last_filters, last_name = filters, f"{name}_2"
    if v2:
        y = nn.conv(y, last_filters, 1 if bottleneck else kernel, name=f"{last_name}_conv")
    else:
        y = nn.conv_bn_act(y, last_filters, 1 if bottleneck else kernel, act=False, name=last_name)

    if residual is not None:
        # Stochastic depth drops the residual branch, never the shortcut (Huang et al. 2016).
        y = nn.drop_path(y, name=f"{name}_drop_path")
        y = layers.Add(name=f"{name}_add")([residual, y])
    if not v2:
        y = nn.act(y, name=f"{name}_out")
    return y


@register("identity", "convolutional")
def residual(x, *, nn, name, filters, bottleneck, style, expansion, groups, width, kernel,
             stride_on, shortcut, stride=1):
    """The recipe blocks `identity` and `convolutional`: one `residual_unit`.

    `identity` keeps the input's shape (identity shortcut); `convolutional` changes the
    channels and/or the stride (projection or `shortcut: pad`). Both are basic units unless
    `bottleneck: true`. Arguments and layers are those of `residual_unit`.

    Returns:
        The unit's output tensor.
    """
    return residual_unit(x, nn=nn, name=name, filters=filters, stride=stride,
                         bottleneck=bottleneck, style=style, expansion=expansion,
                         groups=groups, width=width, kernel=kernel, stride_on=stride_on,
                         shortcut=shortcut)


@register("bottleneck")
def bottleneck(x, *, nn, name, filters, stride, groups, width, expansion, style, kernel,
               stride_on, shortcut):
    """The recipe block `bottleneck`: a bottleneck `residual_unit` (He et al. 2015, Fig. 5
    right; ResNeXt with `groups`, Wide ResNet with `width`), the shortcut chosen from the
    shapes by default. Arguments and layers are those of `residual_unit`.

    Returns:
        The unit's output tensor.
    """
    return residual_unit(x, nn=nn, name=name, filters=filters, stride=stride, bottleneck=True,
                         style=style, expansion=expansion, groups=groups, width=width,
                         kernel=kernel, stride_on=stride_on, shortcut=shortcut)
