"""GoogLeNet's inception module (Szegedy et al. 2015, Table 1 columns)."""

from __future__ import annotations

from keras import layers

from cnnbuilder.model.blocks import register


@register("inception")
def inception(x, *, nn, name, b1, b3_reduce, b3, b5_reduce, b5, pool_proj, b5_kernel,
              batch_norm):
    """GoogLeNet's inception module (Szegedy et al. 2015, §5, Fig. 2b; Table 1's columns).

    Four branches on `x`, concatenated along the channels as `<name>_concat`:
    `<name>_1x1` (1×1, `b1`); `<name>_3x3_reduce` (1×1, `b3_reduce`) → `<name>_3x3` (3×3,
    `b3`); `<name>_5x5_reduce` (1×1, `b5_reduce`) → `<name>_5x5` (`b5_kernel`, `b5`);
    `<name>_pool` (3×3 max pool, stride 1) → `<name>_pool_proj` (1×1, `pool_proj`). Each
    convolution unit is `<unit>_conv` then `<unit>_relu` (the paper), or with `batch_norm`
    `<unit>_conv`, `<unit>_bn`, `<unit>_relu` (torchvision's GoogLeNet).

    Args:
        x: the input tensor.
        nn: the `LayerFactory` with the recipe's defaults.
        name: the module's name prefix (`inception3a`).
        b1, b3_reduce, b3, b5_reduce, b5, pool_proj: the channels of Table 1's columns
            "#1×1", "#3×3 reduce", "#3×3", "#5×5 reduce", "#5×5", "pool proj".
        b5_kernel: kernel of the "5×5" branch (torchvision uses 3).
        batch_norm: BatchNorm after every convolution.

    Returns:
        The concatenation, `b1 + b3 + b5 + pool_proj` channels, the input's size.
    """

    def unit(t, filters, kernel, part):
        if batch_norm:
            return nn.conv_bn_act(t, filters, kernel, name=f"{name}_{part}")
        t = nn.conv(t, filters, kernel, name=f"{name}_{part}_conv")
        return nn.act(t, name=f"{name}_{part}_{nn.activation}")

    branch1 = unit(x, b1, 1, "1x1")
    branch3 = unit(unit(x, b3_reduce, 1, "3x3_reduce"), b3, 3, "3x3")
    branch5 = unit(unit(x, b5_reduce, 1, "5x5_reduce"), b5, b5_kernel, "5x5")
    pooled = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_pool")(x)
    branch_pool = unit(pooled, pool_proj, 1, "pool_proj")
    return layers.Concatenate(axis=-1, name=f"{name}_concat")([branch1, branch3, branch5, branch_pool])
