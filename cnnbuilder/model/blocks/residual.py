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

    ZeroPadding2D pads the two middle axes, so the channel axis is moved there and back:
    the model stays free of Lambda and custom layers (loadable in safe mode anywhere).
    """
    missing = channels - x.shape[-1]
    if missing <= 0:
        return x
    x = layers.Permute((3, 1, 2), name=f"{name}_to_chw")(x)
    x = layers.ZeroPadding2D(padding=((0, missing), (0, 0)), name=f"{name}_zeros")(x)
    return layers.Permute((2, 3, 1), name=f"{name}_to_hwc")(x)


def _shortcut(x, source, kind, out_channels, stride, *, nn, name, v2):
    """The shortcut branch; `source` is what a projection reads (v2: the pre-activation)."""
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
        y = layers.Add(name=f"{name}_add")([residual, y])
    if not v2:
        y = nn.act(y, name=f"{name}_out")
    return y


@register("identity", "convolutional")
def residual(x, *, nn, name, filters, bottleneck, style, expansion, groups, width, kernel,
             stride_on, shortcut, stride=1):
    return residual_unit(x, nn=nn, name=name, filters=filters, stride=stride,
                         bottleneck=bottleneck, style=style, expansion=expansion,
                         groups=groups, width=width, kernel=kernel, stride_on=stride_on,
                         shortcut=shortcut)


@register("bottleneck")
def bottleneck(x, *, nn, name, filters, stride, groups, width, expansion, style, kernel,
               stride_on, shortcut):
    return residual_unit(x, nn=nn, name=name, filters=filters, stride=stride, bottleneck=True,
                         style=style, expansion=expansion, groups=groups, width=width,
                         kernel=kernel, stride_on=stride_on, shortcut=shortcut)
