"""Resize-then-centre-crop, the evaluation transform of PyTorch-world weights
(torchvision's ``Resize(256)`` + ``CenterCrop(224)``, timm's ``crop_pct``), as the step 3 of
`cnnbuilder.data.preprocess.preprocess` takes it with ``crop_from``. Pure TF ops."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from cnnbuilder.errors import DataError


def check_crop(crop_from, height, width) -> None:
    """DataError unless `crop_from` is None or an int >= H and W (both known)."""
    if crop_from is None:
        return
    whole = isinstance(crop_from, (int, np.integer)) and not isinstance(crop_from, bool)
    if height is None or width is None or not whole or crop_from < max(height, width):
        raise DataError(f"crop_from (resize the shorter side, then centre-crop) must be a "
                        f"whole number of pixels >= the model's height and width, which must "
                        f"be known; got crop_from={crop_from!r} for ({height}, {width}).")


def resize_and_centre_crop(x: tf.Tensor, height: int, width: int, shorter: int) -> tf.Tensor:
    """(N, h, w, C) resized so its shorter side is `shorter` (the longer one scaled alike,
    rounded down, as torchvision's Resize), then its centre (height, width), offsets
    rounded as torchvision's CenterCrop."""
    shape = tf.shape(x)
    h, w = shape[1], shape[2]
    short, long = tf.minimum(h, w), tf.maximum(h, w)
    long_size = tf.cast(tf.math.floordiv(shorter * long, short), tf.int32)
    new_h = tf.where(h <= w, shorter, long_size)
    new_w = tf.where(h <= w, long_size, shorter)
    shrinking = tf.logical_or(new_h < h, new_w < w)
    # Antialiased only when shrinking, as preprocess's own resize (ANTIALIAS_RULE).
    resized = tf.cond(shrinking,
                      lambda: tf.image.resize(x, (new_h, new_w), "bilinear", antialias=True),
                      lambda: tf.image.resize(x, (new_h, new_w), "bilinear", antialias=False))
    resized = tf.clip_by_value(resized, 0.0, 1.0)
    top = tf.cast(tf.round(tf.cast(new_h - height, tf.float32) / 2.0), tf.int32)
    left = tf.cast(tf.round(tf.cast(new_w - width, tf.float32) / 2.0), tf.int32)
    cropped = resized[:, top:top + height, left:left + width, :]
    return tf.ensure_shape(cropped, [x.shape[0], height, width, x.shape[3]])


__all__ = ["check_crop", "resize_and_centre_crop"]
