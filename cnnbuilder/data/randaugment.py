"""RandAugment (Cubuk et al. 2020) and random erasing (Zhong et al. 2020) on model-input
batches, with TensorFlow's stateless random ops.

Both take a float32 batch (N, H, W, C) in [0, 1] and a stateless seed of shape (2,), as
the other augmentations of `cnnbuilder.data.augment`, so a batch's draws are a function
of (seed, epoch, position) and a resumed run replays them.

RandAugment follows timm's "increasing" variant (`rand-mM-nN-mstdS-inc1`, which the RSB
procedures use): N ops per image, each applied with probability p, drawn from the ops
below; an op's strength grows with the magnitude M out of 10, and M is perturbed per op by
Gaussian noise of std S. Departures from timm: no `equalize` (no cheap batched histogram
equalization in TensorFlow); geometric ops fill with black (timm: the dataset's mean
colour), as cnnbuilder's crops pad with black.
"""

from __future__ import annotations

import math

import tensorflow as tf

__all__ = ["RANDAUGMENT_OPS", "randaugment", "random_erasing"]

_SPLIT = tf.random.experimental.stateless_split


def _blend(degenerate, images, factor):
    """timm's ImageEnhance blend: `degenerate` + factor·(images - degenerate), clipped."""
    return tf.clip_by_value(degenerate + factor * (images - degenerate), 0.0, 1.0)


def _gray(images):
    """Luma (ITU-R 601) of an RGB batch, kept with its channel axis; a 1-channel batch as it is."""
    if images.shape[-1] != 3:
        return images
    return tf.reduce_sum(images * tf.constant([0.299, 0.587, 0.114]), axis=-1, keepdims=True)


def _enhance_factor(level, sign):
    """timm's `_enhance_increasing_level_to_arg`: 1 ± 0.9·level, level in [0, 1]."""
    return tf.clip_by_value(1.0 + sign * level * 0.9, 0.1, 1.9)


def _autocontrast(images, level, sign):
    """Each channel stretched to [0, 1] (PIL's autocontrast)."""
    low = tf.reduce_min(images, axis=[1, 2], keepdims=True)
    high = tf.reduce_max(images, axis=[1, 2], keepdims=True)
    scaled = (images - low) / tf.maximum(high - low, 1e-6)
    return tf.where(high > low, scaled, images)


def _invert(images, level, sign):
    """1 - x."""
    return 1.0 - images


def _posterize(images, level, sign):
    """Keep 4 - int(4·level) bits of 8 (timm's posterize_increasing)."""
    # timm's posterize_increasing: 4 - int(4·level) bits kept of 8.
    shift = tf.pow(2.0, 8.0 - (4.0 - tf.floor(level * 4.0)))
    return tf.floor(images * 255.0 / shift) * shift / 255.0


def _solarize(images, level, sign):
    """Invert the pixels above 1 - level (timm's solarize_increasing)."""
    threshold = 1.0 - level  # timm's solarize_increasing: 256 - 256·level
    return tf.where(images < threshold, images, 1.0 - images)


def _solarize_add(images, level, sign):
    """Add up to 110/255 to the pixels below 128/255."""
    added = tf.clip_by_value(images + level * 110.0 / 255.0, 0.0, 1.0)
    return tf.where(images < 128.0 / 255.0, added, images)


def _color(images, level, sign):
    """Saturation: blend with the grey image by 1 ± 0.9·level."""
    return _blend(_gray(images), images, _enhance_factor(level, sign))


def _contrast(images, level, sign):
    """Contrast: blend with the image's mean grey by 1 ± 0.9·level."""
    mean = tf.reduce_mean(_gray(images), axis=[1, 2, 3], keepdims=True)
    return _blend(mean, images, _enhance_factor(level, sign))


def _brightness(images, level, sign):
    """Brightness: blend with black by 1 ± 0.9·level."""
    return _blend(tf.zeros_like(images), images, _enhance_factor(level, sign))


def _sharpness(images, level, sign):
    """Sharpness: blend with PIL's SMOOTH-filtered image by 1 ± 0.9·level."""
    # PIL's SMOOTH kernel; the border keeps its pixels, as PIL's ImageEnhance.Sharpness.
    channels = images.shape[-1]
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
    smooth = tf.nn.depthwise_conv2d(images, kernel, [1, 1, 1, 1], "SAME")
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]
    inner = (rows > 0) & (rows < height - 1) & (cols > 0) & (cols < width - 1)
    smooth = tf.where(inner[None, :, :, None], smooth, images)
    return _blend(smooth, images, _enhance_factor(level, sign))


# Pixel ops: f(images, level (N,1,1,1) in [0, 1], sign (N,1,1,1) of ±1).
_PIXEL_OPS = {
    "autocontrast": _autocontrast, "invert": _invert, "posterize": _posterize,
    "solarize": _solarize, "solarize_add": _solarize_add, "color": _color,
    "contrast": _contrast, "brightness": _brightness, "sharpness": _sharpness,
}
# Geometric ops, applied together as one projective transform per image.
_GEOMETRIC_OPS = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
RANDAUGMENT_OPS = tuple(_PIXEL_OPS) + _GEOMETRIC_OPS


def _transforms(op, level, sign, height, width):
    """(N, 8) projective transforms (output pixel -> input pixel) of each image's op:
    rotate up to 30°, shear up to 0.3, translate up to 45 % of the side (timm's maxima),
    the identity for a pixel op."""
    level, sign = level[:, 0, 0, 0], sign[:, 0, 0, 0]
    first = len(_PIXEL_OPS)
    angle = sign * level * math.radians(30.0)
    cos, sin = tf.cos(angle), tf.sin(angle)
    cy, cx = (tf.cast(height, tf.float32) - 1) / 2, (tf.cast(width, tf.float32) - 1) / 2
    shear = sign * level * 0.3
    shift_x = sign * level * 0.45 * tf.cast(width, tf.float32)
    shift_y = sign * level * 0.45 * tf.cast(height, tf.float32)
    one, zero = tf.ones_like(level), tf.zeros_like(level)
    candidates = tf.stack([
        tf.stack([cos, -sin, cx - cx * cos + cy * sin, sin, cos, cy - cx * sin - cy * cos, zero, zero], 1),
        tf.stack([one, shear, zero, zero, one, zero, zero, zero], 1),
        tf.stack([one, zero, zero, shear, one, zero, zero, zero], 1),
        tf.stack([one, zero, shift_x, zero, one, zero, zero, zero], 1),
        tf.stack([one, zero, zero, zero, one, shift_y, zero, zero], 1),
    ], 0)  # (5, N, 8)
    identity = tf.stack([one, zero, zero, zero, one, zero, zero, zero], 1)
    index = op - first
    chosen = tf.gather(tf.transpose(candidates, [1, 0, 2]), tf.clip_by_value(index, 0, 4),
                       batch_dims=1)
    return tf.where((index >= 0)[:, None], chosen, identity)


def _one_layer(images, seed, magnitude, std, probability):
    """One RandAugment op per image (with `probability`), all drawn from `seed`.

    Each op runs on the images that drew it only (partitioned, then stitched back): an op
    touches about p/14 of the batch, so the layer costs little more than one pass."""
    count = tf.shape(images)[0]
    seeds = _SPLIT(seed, num=4)
    op = tf.random.stateless_uniform([count], seeds[0], 0, len(RANDAUGMENT_OPS), tf.int32)
    applied = tf.random.stateless_uniform([count], seeds[1]) < probability
    op = tf.where(applied, op, -1)  # -1: this image keeps the layer's input
    noise = tf.random.stateless_normal([count], seeds[2]) * std
    level = tf.clip_by_value((magnitude + noise) / 10.0, 0.0, 1.0)[:, None, None, None]
    sign = tf.where(tf.random.stateless_uniform([count], seeds[3]) < 0.5, -1.0, 1.0)[:, None, None, None]
    # Partition 0: untouched; 1..9: the pixel ops; 10: the geometric ones (one transform).
    pixel = len(_PIXEL_OPS)
    group = tf.where(op < 0, 0, tf.minimum(op, pixel) + 1)
    groups = pixel + 2
    parts = tf.dynamic_partition(images, group, groups)
    levels = tf.dynamic_partition(level, group, groups)
    signs = tf.dynamic_partition(sign, group, groups)
    indices = tf.dynamic_partition(tf.range(count), group, groups)
    done = [parts[0]]
    for index, function in enumerate(_PIXEL_OPS.values()):
        done.append(function(parts[index + 1], levels[index + 1], signs[index + 1]))
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    geometric = tf.dynamic_partition(op, group, groups)[-1]
    done.append(tf.raw_ops.ImageProjectiveTransformV3(
        images=parts[-1], transforms=_transforms(geometric, levels[-1], signs[-1], height, width),
        output_shape=tf.stack([height, width]), fill_value=0.0, interpolation="BILINEAR",
        fill_mode="CONSTANT"))
    return tf.ensure_shape(tf.dynamic_stitch(indices, done), images.shape)


def randaugment(images: tf.Tensor, seed: tf.Tensor, *, n: int = 2, m: float = 9,
                std: float = 0.0, p: float = 0.5) -> tf.Tensor:
    """RandAugment: `n` layers, each applying one op drawn uniformly per image with
    probability `p` at magnitude `m` (out of 10, perturbed by N(0, std) per op)."""
    for layer_seed in tf.unstack(_SPLIT(seed, num=n)):
        images = _one_layer(images, layer_seed, float(m), float(std), float(p))
    return images


def random_erasing(images: tf.Tensor, seed: tf.Tensor, *, p: float = 0.25,
                   max_area: float = 1 / 3) -> tf.Tensor:
    """Random erasing (Zhong et al. 2020; timm's `mode=pixel`): with probability `p` an
    image gets one box of 2 % to `max_area` of its area, aspect ratio 0.3 to 3.3
    (log-uniform), filled with uniform noise."""
    shape = tf.shape(images)
    count, height, width = shape[0], shape[1], shape[2]
    seeds = _SPLIT(seed, num=6)
    area = tf.cast(height * width, tf.float32) * tf.random.stateless_uniform([count], seeds[0], 0.02, max_area)
    ratio = tf.exp(tf.random.stateless_uniform([count], seeds[1], math.log(0.3), math.log(1 / 0.3)))
    box_h = tf.minimum(tf.cast(tf.round(tf.sqrt(area * ratio)), tf.int32), height)
    box_w = tf.minimum(tf.cast(tf.round(tf.sqrt(area / ratio)), tf.int32), width)
    top = tf.cast(tf.random.stateless_uniform([count], seeds[2]) * tf.cast(height - box_h + 1, tf.float32), tf.int32)
    left = tf.cast(tf.random.stateless_uniform([count], seeds[3]) * tf.cast(width - box_w + 1, tf.float32), tf.int32)
    erased = tf.random.stateless_uniform([count], seeds[4]) < p
    rows = tf.range(height)[None, :, None]
    cols = tf.range(width)[None, None, :]
    inside = ((rows >= top[:, None, None]) & (rows < (top + box_h)[:, None, None])
              & (cols >= left[:, None, None]) & (cols < (left + box_w)[:, None, None])
              & erased[:, None, None])
    noise = tf.random.stateless_uniform(shape, seeds[5])
    return tf.where(inside[..., None], noise, images)
