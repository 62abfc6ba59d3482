"""GoogLeNet's inception module (Szegedy et al. 2015, Table 1 columns)."""

from __future__ import annotations

from keras import layers

from cnnbuilder.model.blocks import register


@register("inception")
def inception(x, *, nn, name, b1, b3_reduce, b3, b5_reduce, b5, pool_proj, b5_kernel,
              batch_norm):
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
