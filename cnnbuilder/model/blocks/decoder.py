"""Decoder blocks of segmentation recipes: `upsample`, `transition_up` (FC-DenseNet) and
`skip` (U-Net, FC-DenseNet), as declared in `cnnbuilder.recipe.vocabulary.decoder`.

`skip` joins the current tensor with an earlier output; `cnnbuilder.model.builder.apply_plan`
keeps the outputs of stages and steps and passes the one a skip names as `source`.
"""

from __future__ import annotations

from keras import layers

from cnnbuilder.model.blocks import register


def _transposed(x, nn, *, filters, kernel, stride, activation, name):
    """A `Conv2DTranspose` (`same` padding: the output is exactly `stride` times larger) with
    the recipe's kernel initializer and bias (``use_bias: auto`` gives a bias: no BN follows)."""
    use_bias = nn.conv_defaults["use_bias"]
    return layers.Conv2DTranspose(
        filters if filters is not None else x.shape[-1], kernel, strides=stride, padding="same",
        use_bias=True if use_bias == "auto" else use_bias, activation=activation,
        kernel_initializer=nn.conv_defaults["kernel_initializer"], name=name)(x)


@register("upsample")
def upsample(x, *, nn, name, factor, mode, filters, kernel, activation):
    """Upsampling by an integer factor.

    Builds `<name>` — an `UpSampling2D` (``mode`` bilinear or nearest: no weights, the
    channels kept) or a `Conv2DTranspose` of stride `factor`, kernel `kernel` (default
    `factor`: U-Net's "2×2 up-convolution that halves the number of feature channels",
    Ronneberger et al. 2015, §2) and `filters` channels.

    Args:
        x: the input tensor (height, width, channels).
        nn: the `LayerFactory` with the recipe's defaults (initializer and bias).
        name: the layer name.
        factor: how many times larger the height and width become.
        mode: "bilinear", "nearest" or "transposed".
        filters: the transposed convolution's channels (None: the input's).
        kernel: the transposed convolution's kernel (None: `factor`).
        activation: an activation of the transposed convolution (None for linear).

    Returns:
        The upsampled tensor, `factor` times the height and width.
    """
    if mode == "transposed":
        return _transposed(x, nn, filters=filters, kernel=kernel if kernel is not None else factor,
                           stride=factor, activation=activation, name=name)
    return layers.UpSampling2D(size=factor, interpolation=mode, name=name)(x)


@register("transition_up")
def transition_up(x, *, nn, name, filters, kernel, stride):
    """FC-DenseNet's transition up (Jégou et al. 2017, §3.2 and Table 1: "3×3 Transposed
    Convolution stride = 2").

    Builds `<name>_conv` (Conv2DTranspose, `same` padding, so the output is exactly
    `stride` times the input's size; the authors' Theano code crops its one extra pixel
    when it concatenates the skip connection).

    Args:
        x: the input tensor: in FC-DenseNet the k·L new feature maps of the block below.
        nn: the `LayerFactory` with the recipe's defaults (initializer and bias).
        name: the layer name prefix.
        filters: output channels (None: the input's, as FC-DenseNet).
        kernel: kernel size (3).
        stride: the upsampling factor (2).

    Returns:
        The upsampled tensor.
    """
    return _transposed(x, nn, filters=filters, kernel=kernel, stride=stride, activation=None,
                       name=f"{name}_conv")


@register("skip")
def skip(x, *, nn, name, source, merge, crop, filters=None):
    """A skip connection: `x` joined with `source`, an earlier output of the network.

    Builds `<name>_crop` (Cropping2D, only with `crop` and a larger source: the centre of
    `source` at the size of `x`, U-Net's "cropping is necessary due to the loss of border
    pixels in every convolution", Ronneberger et al. 2015, §2), then `<name>` — a
    Concatenate of ``[x, source]`` along the channels or an Add.

    Args:
        x: the current tensor.
        nn: the `LayerFactory` (unused; blocks share one signature).
        name: the layer name.
        source: the earlier tensor the recipe's `from:` names (the builder passes it).
        merge: "concat" or "add".
        crop: crop a larger `source` to the centre.
        filters: pass `source` through `<name>_lateral`, a 1×1 convolution of this many
            channels, first (FPN's lateral connection, Lin et al. 2017, §3); None: as it is.

    Returns:
        The joined tensor.
    """
    if filters is not None:
        source = nn.conv(source, filters, 1, name=f"{name}_lateral")
    if crop:  # the resolver has checked that the sizes are known and the source larger
        dh = source.shape[1] - x.shape[1]
        dw = source.shape[2] - x.shape[2]
        if dh or dw:
            source = layers.Cropping2D(((dh // 2, dh - dh // 2), (dw // 2, dw - dw // 2)),
                                       name=f"{name}_crop")(source)
    if merge == "add":
        return layers.Add(name=name)([x, source])
    return layers.Concatenate(axis=-1, name=name)([x, source])


@register("branch")
def branch(x, *, nn, name, source):
    """Continue from `source`, an earlier output (a stage's end, a named step or an encoder
    feature map); the current tensor `x` stays readable by later skips. Builds no layer.

    Args:
        x: the current tensor (left as it is).
        nn: the `LayerFactory` (unused; blocks share one signature).
        name: the step's name (unused: no layer).
        source: the earlier tensor the recipe's `from:` names (the builder passes it).

    Returns:
        `source`.
    """
    return source
