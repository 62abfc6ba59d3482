"""DenseNet blocks (Huang et al. 2017): the dense block and the transition layer."""

from __future__ import annotations

from keras import layers

from cnnbuilder.blocks import register


def dense_layer(x, *, nn, name, growth_rate, bn_size, bottleneck, dropout):
    """BN-ReLU-Conv1×1(bn_size·k)-BN-ReLU-Conv3×3(k); returns the k new channels."""
    act = nn.activation
    y = nn.bn(x, name=f"{name}_0_bn")
    y = nn.act(y, name=f"{name}_0_{act}")
    if bottleneck:
        y = nn.conv(y, bn_size * growth_rate, 1, bn_follows=True, name=f"{name}_1_conv")
        if dropout:
            y = layers.Dropout(dropout, name=f"{name}_1_dropout")(y)
        y = nn.bn(y, name=f"{name}_1_bn")
        y = nn.act(y, name=f"{name}_1_{act}")
    y = nn.conv(y, growth_rate, 3, name=f"{name}_2_conv")
    if dropout:
        y = layers.Dropout(dropout, name=f"{name}_2_dropout")(y)
    return y


@register("dense")
def dense_block(x, *, nn, name, layers: int, growth_rate, bn_size, bottleneck, dropout):
    for i in range(layers):
        layer_name = f"{name}_layer{i + 1}"
        y = dense_layer(x, nn=nn, name=layer_name, growth_rate=growth_rate, bn_size=bn_size,
                        bottleneck=bottleneck, dropout=dropout)
        x = _concat(x, y, name=f"{layer_name}_concat")
    return x


def _concat(x, y, *, name):
    return layers.Concatenate(axis=-1, name=name)([x, y])


@register("transition")
def transition(x, *, nn, name, compression, dropout):
    x = nn.bn(x, name=f"{name}_bn")
    x = nn.act(x, name=f"{name}_{nn.activation}")
    x = nn.conv(x, int(x.shape[-1] * compression), 1, name=f"{name}_conv")
    if dropout:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return layers.AveragePooling2D(2, strides=2, name=f"{name}_pool")(x)
