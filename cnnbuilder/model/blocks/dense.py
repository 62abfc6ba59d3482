"""DenseNet blocks (Huang et al. 2017): the dense block and the transition layer."""

from __future__ import annotations

from keras import layers

from cnnbuilder.model.blocks import register
from cnnbuilder.model.layers import DenseLayerBottleneck  # also registers it for .keras loading


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
def dense_block(x, *, nn, name, layers: int, growth_rate, bn_size, bottleneck, dropout,
                memory_efficient=False):
    if memory_efficient:
        return _efficient_dense_block(x, nn=nn, name=name, layers=layers, growth_rate=growth_rate,
                                      bn_size=bn_size, bottleneck=bottleneck, dropout=dropout)
    for i in range(layers):
        layer_name = f"{name}_layer{i + 1}"
        y = dense_layer(x, nn=nn, name=layer_name, growth_rate=growth_rate, bn_size=bn_size,
                        bottleneck=bottleneck, dropout=dropout)
        x = _concat(x, y, name=f"{layer_name}_concat")
    return x


def _efficient_dense_block(x, *, nn, name, layers: int, growth_rate, bn_size, bottleneck,
                           dropout):
    """The same network, memory-efficient (Pleiss et al. 2017).

    Each layer's concatenation, BN, activation and first convolution form one
    `DenseLayerBottleneck` over the list of earlier feature maps, recomputed in the backward
    pass; the block's output is one concatenation of all of them. Weights (shapes and graph
    order) are those of the plain block, so `transfer_weights` works between the two.
    """
    act = nn.activation
    features = [x]
    for i in range(layers):
        layer_name = f"{name}_layer{i + 1}"
        if bottleneck:
            y = _bottleneck(nn, bn_size * growth_rate, 1, name=layer_name, conv_name="1_conv",
                            bn_follows=True)(features)
            if dropout:
                y = _dropout(y, dropout, name=f"{layer_name}_1_dropout")
            y = nn.bn(y, name=f"{layer_name}_1_bn")
            y = nn.act(y, name=f"{layer_name}_1_{act}")
            y = nn.conv(y, growth_rate, 3, name=f"{layer_name}_2_conv")
        else:
            y = _bottleneck(nn, growth_rate, 3, name=layer_name, conv_name="2_conv",
                            bn_follows=False)(features)
        if dropout:
            y = _dropout(y, dropout, name=f"{layer_name}_2_dropout")
        features.append(y)
    return _concat_all(features, name=f"{name}_concat")


def _bottleneck(nn, filters, kernel, *, name, conv_name, bn_follows) -> DenseLayerBottleneck:
    """A DenseLayerBottleneck whose BN and Conv2D follow the recipe's layer defaults, as
    `nn.bn` and `nn.conv` would build them."""
    padding = nn.conv_defaults["padding"]
    if padding == "symmetric":  # stride 1, odd kernel: kernel//2 on every side is "same"
        padding = "same" if kernel > 1 else "valid"
    use_bias = nn.conv_defaults["use_bias"]
    if use_bias == "auto":
        use_bias = not bn_follows
    norm = layers.BatchNormalization(axis=-1, epsilon=nn.bn_defaults["epsilon"],
                                     momentum=nn.bn_defaults["momentum"], name=f"{name}_0_bn")
    conv = layers.Conv2D(filters, kernel, padding=padding, use_bias=use_bias,
                         kernel_initializer=nn.conv_defaults["kernel_initializer"],
                         name=f"{name}_{conv_name}")
    return DenseLayerBottleneck(norm, conv, activation=nn.activation,
                                name=f"{name}_0_bn_{nn.activation}_{conv_name}")


def _dropout(x, rate, *, name):
    return layers.Dropout(rate, name=name)(x)


def _concat_all(tensors, *, name):
    return layers.Concatenate(axis=-1, name=name)(tensors)


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
