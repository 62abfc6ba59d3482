"""DenseNet blocks (Huang et al. 2017): the dense block and the transition layer.

Layer names follow keras.applications' `densenet.py`, so a recipe that names its blocks
as keras does (`name: conv2` for the first dense block, `name: pool2` for the transition
after it) has exactly the layer names of `keras.applications.DenseNet121`:
`conv2_block1_0_bn`, `conv2_block1_0_relu`, `conv2_block1_1_conv`, `conv2_block1_1_bn`,
`conv2_block1_1_relu`, `conv2_block1_2_conv`, `conv2_block1_concat`; `pool2_bn`,
`pool2_relu`, `pool2_conv`, `pool2_pool`. In those names `0` is the input's BN-ReLU,
`1` the 1×1 bottleneck convolution and its BN-ReLU, `2` the 3×3 convolution.
"""

from __future__ import annotations

from keras import layers

from cnnbuilder.model.blocks import register
from cnnbuilder.model.layers import DenseLayerBottleneck  # also registers it for .keras loading


def dense_layer(x, *, nn, name, growth_rate, bn_size, bottleneck, dropout):
    """One layer of a dense block, without its concatenation (Huang et al. 2017, §3).

    Builds `<name>_0_bn`, `<name>_0_relu`; with the bottleneck (DenseNet-B, §3
    "Bottleneck layers") `<name>_1_conv` (1×1, bn_size·k channels), `<name>_1_dropout`
    (only when `dropout`), `<name>_1_bn`, `<name>_1_relu`; then `<name>_2_conv` (3×3, k
    channels) and `<name>_2_dropout` (only when `dropout`). The activation part of the
    names is the recipe's activation (`relu`).

    Args:
        x: the concatenation of the block input and every earlier layer's output.
        nn: the `LayerFactory` with the recipe's defaults.
        name: the layer's name prefix (`conv2_block1`).
        growth_rate: k, the channels the layer adds.
        bn_size: the bottleneck has `bn_size * growth_rate` channels (4k in the paper).
        bottleneck: build the 1×1 bottleneck convolution.
        dropout: rate of the dropout after each convolution (§4.1: 0.2 on the CIFAR
            networks trained without augmentation); 0 for none.

    Returns:
        The k new feature maps (the caller concatenates them to `x`).
    """
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
                memory_efficient=False, output="all"):
    """A DenseNet dense block (Huang et al. 2017, §3 "Dense connectivity", Fig. 2).

    Layer ℓ receives the concatenation of the block input and the outputs of layers
    1…ℓ-1 and adds k channels, so a block of L layers on C channels ends with C + L·k.
    Builds, for i = 1…`layers`, the layers of `dense_layer` named `<name>_block<i>_...`
    followed by `<name>_block<i>_concat` (as keras.applications' `dense_block` and
    `conv_block`).

    With `memory_efficient` (Pleiss et al. 2017) the same network is built so that the
    backward pass recomputes each layer instead of storing its concatenation and the
    results of its BatchNorms, ReLUs and convolutions: layer i is one `DenseLayerBottleneck`
    over the list of earlier outputs, named `<name>_block<i>_0_bn_relu_1_conv_bn_relu_2_conv`
    (the whole bottleneck layer, recomputed from its inputs; only its k output channels
    are kept) or, without the bottleneck, `<name>_block<i>_0_bn_relu_2_conv`. With dropout
    the unit stops before the first dropout, whose random mask a recomputation would
    not repeat: `<name>_block<i>_0_bn_relu_1_conv`, then the plain rest of the layer. The
    BatchNorms and Conv2Ds inside keep the plain names (`<name>_block<i>_0_bn`,
    `<name>_block<i>_1_conv`, ...), and one `<name>_concat` joins the block's outputs at
    its end. Weights (shapes and graph order) are those of the plain block, so
    `transfer_weights` works between the two.

    Args:
        x: the input tensor.
        nn: the `LayerFactory` with the recipe's defaults.
        name: the block's name prefix, keras.applications' `conv2` ... `conv5`.
        layers: L, the number of dense layers.
        growth_rate, bn_size, bottleneck, dropout: those of `dense_layer`.
        memory_efficient: build the recomputed form.
        output: ``"all"`` (the paper's block) or ``"new"``: only the L·k maps the layers
            add, concatenated as `<name>_new_concat` (the layer itself when L = 1) —
            FC-DenseNet's up-path (Jégou et al. 2017, §3.2: "the input of a dense block is
            not concatenated with its output").

    Returns:
        The concatenation of the input and the outputs of all L layers (C + L·k
        channels), or with ``output="new"`` of the L outputs only (L·k channels).
    """
    if memory_efficient:
        return _efficient_dense_block(x, nn=nn, name=name, layers=layers, growth_rate=growth_rate,
                                      bn_size=bn_size, bottleneck=bottleneck, dropout=dropout,
                                      output=output)
    new = []
    for i in range(layers):
        layer_name = f"{name}_block{i + 1}"
        y = dense_layer(x, nn=nn, name=layer_name, growth_rate=growth_rate, bn_size=bn_size,
                        bottleneck=bottleneck, dropout=dropout)
        # Stochastic depth of a dense layer: its k new feature maps, per example.
        y = nn.drop_path(y, name=f"{layer_name}_drop_path")
        new.append(y)
        if output == "new" and i == layers - 1:
            break  # the last layer's concatenation with the input is not used
        x = _concat([x, y], name=f"{layer_name}_concat")
    if output == "new":
        return new[0] if len(new) == 1 else _concat(new, name=f"{name}_new_concat")
    return x


def _efficient_dense_block(x, *, nn, name, layers: int, growth_rate, bn_size, bottleneck,
                           dropout, output="all"):
    """`dense_block` with `memory_efficient=True` (see there)."""
    act = nn.activation
    features = [x]
    for i in range(layers):
        layer_name = f"{name}_block{i + 1}"
        if bottleneck and not dropout:
            # The whole layer in one recomputed unit: only its k output channels are kept.
            y = _whole_layer(nn, bn_size * growth_rate, growth_rate, name=layer_name)(features)
        elif bottleneck:
            # Dropout after the 1×1 convolution cannot be recomputed identically (its
            # random mask), so the unit ends there and the rest of the layer is plain.
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
        # Outside the recomputed unit, like dropout: a recomputation would redraw it.
        y = nn.drop_path(y, name=f"{layer_name}_drop_path")
        features.append(y)
    if output == "new":
        return features[1] if layers == 1 else _concat(features[1:], name=f"{name}_new_concat")
    return _concat(features, name=f"{name}_concat")


def _bottleneck(nn, filters, kernel, *, name, conv_name, bn_follows) -> DenseLayerBottleneck:
    """A DenseLayerBottleneck whose BN and Conv2D are those `nn.bn` and `nn.conv` build,
    named `<name>_0_bn` and `<name>_<conv_name>`."""
    norm = nn.bn_layer(name=f"{name}_0_bn")
    conv = nn.conv_layer(filters, kernel, bn_follows=bn_follows, name=f"{name}_{conv_name}")
    return DenseLayerBottleneck(norm, conv, activation=nn.activation,
                                name=f"{name}_0_bn_{nn.activation}_{conv_name}")


def _whole_layer(nn, bottleneck_filters, growth_rate, *, name) -> DenseLayerBottleneck:
    """A DenseLayerBottleneck for a whole DenseNet-B layer: its BNs and Conv2Ds are those
    `nn` builds, named as in the plain layer (`<name>_0_bn`, `<name>_1_conv`, `<name>_1_bn`,
    `<name>_2_conv`)."""
    act = nn.activation
    return DenseLayerBottleneck(
        nn.bn_layer(name=f"{name}_0_bn"),
        nn.conv_layer(bottleneck_filters, 1, bn_follows=True, name=f"{name}_1_conv"),
        activation=act, norm2=nn.bn_layer(name=f"{name}_1_bn"),
        conv2=nn.conv_layer(growth_rate, 3, name=f"{name}_2_conv"),
        name=f"{name}_0_bn_{act}_1_conv_bn_{act}_2_conv")


def _dropout(x, rate, *, name):
    """`x` through a Dropout layer `name` (in `dense_block` the `layers` argument hides the
    keras module)."""
    return layers.Dropout(rate, name=name)(x)


def _concat(tensors, *, name):
    """Channel concatenation of `tensors` as a Concatenate layer `name`."""
    return layers.Concatenate(axis=-1, name=name)(tensors)


@register("transition")
def transition(x, *, nn, name, compression, dropout, pool="avg"):
    """A DenseNet transition layer (Huang et al. 2017, §3 "Pooling layers", "Compression").

    Builds `<name>_bn`, `<name>_relu`, `<name>_conv` (1×1, ⌊θ·C⌋ channels),
    `<name>_dropout` (only when `dropout`) and `<name>_pool` (2×2 average pooling, stride
    2), as keras.applications' `transition_block` (`name: pool2` gives `pool2_conv`).

    Args:
        x: the input tensor, C channels.
        nn: the `LayerFactory` with the recipe's defaults.
        name: the layer name prefix.
        compression: θ, the fraction of channels kept (0.5 in DenseNet-BC, 1 in DenseNet).
        dropout: rate of the dropout after the convolution; 0 for none.
        pool: ``"avg"`` (DenseNet) or ``"max"`` (FC-DenseNet's transition down, Jégou et
            al. 2017, Table 1: BN, ReLU, 1×1 conv, dropout 0.2, 2×2 max pooling).

    Returns:
        The downsampled tensor of ⌊θ·C⌋ channels and half the height and width.
    """
    x = nn.bn(x, name=f"{name}_bn")
    x = nn.act(x, name=f"{name}_{nn.activation}")
    x = nn.conv(x, int(x.shape[-1] * compression), 1, name=f"{name}_conv")
    if dropout:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    if pool == "max":
        return layers.MaxPooling2D(2, strides=2, name=f"{name}_pool")(x)
    return layers.AveragePooling2D(2, strides=2, name=f"{name}_pool")(x)
