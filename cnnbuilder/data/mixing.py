"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) of a training batch, with soft targets.

A mixing run's training batches carry soft targets: float32 (N, classes) rows that sum
to 1 (one-hot where a batch is not mixed), so every batch of the run has the same
structure. Validation and test batches keep their integer labels; the run's loss and
accuracy take both (`cnnbuilder.training.losses`).

As timm's `Mixup` (mode ``batch``): one λ ~ Beta(α, α) per batch, each image paired with
the batch read backwards; with both on, a batch uses CutMix with probability `switch`,
else mixup. CutMix's λ is corrected to the pasted box's true area after clipping.
Everything is drawn from the batch's stateless seed, so a resumed run replays it.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["mix_batch"]

_SPLIT = tf.random.experimental.stateless_split


def _beta(seed, alpha: float):
    """λ ~ Beta(alpha, alpha) from two stateless gamma draws."""
    seeds = _SPLIT(seed, num=2)
    first = tf.random.stateless_gamma([], seeds[0], alpha)
    second = tf.random.stateless_gamma([], seeds[1], alpha)
    return first / tf.maximum(first + second, 1e-12)


def _mixup(images, targets, lam):
    """lam·x + (1 - lam)·(x read backwards), and the same of the targets."""
    return (lam * images + (1.0 - lam) * tf.reverse(images, [0]),
            lam * targets + (1.0 - lam) * tf.reverse(targets, [0]))


def _cutmix(images, targets, lam, seed):
    """A box of area (1 - lam) of the backward batch pasted on each image (one box for the
    batch, as timm); the targets mixed by the box's area after clipping."""
    height, width = tf.shape(images)[1], tf.shape(images)[2]
    ratio = tf.sqrt(1.0 - lam)
    cut_h = tf.cast(tf.cast(height, tf.float32) * ratio, tf.int32)
    cut_w = tf.cast(tf.cast(width, tf.float32) * ratio, tf.int32)
    seeds = _SPLIT(seed, num=2)
    centre_y = tf.random.stateless_uniform([], seeds[0], 0, height, tf.int32)
    centre_x = tf.random.stateless_uniform([], seeds[1], 0, width, tf.int32)
    top, bottom = tf.maximum(centre_y - cut_h // 2, 0), tf.minimum(centre_y + cut_h // 2, height)
    left, right = tf.maximum(centre_x - cut_w // 2, 0), tf.minimum(centre_x + cut_w // 2, width)
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]
    box = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    mixed = tf.where(box[None, :, :, None], tf.reverse(images, [0]), images)
    area = tf.cast((bottom - top) * (right - left), tf.float32)
    kept = 1.0 - area / tf.cast(height * width, tf.float32)
    return mixed, kept * targets + (1.0 - kept) * tf.reverse(targets, [0])


def mix_batch(images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor, *, classes: int,
              mixup: dict | None = None, cutmix: dict | None = None):
    """(images, soft targets) of one batch: the integer `labels` one-hot over `classes`,
    then mixup (options {alpha}) or CutMix (options {alpha, switch}) as the batch draws."""
    targets = tf.one_hot(tf.cast(tf.reshape(labels, [-1]), tf.int32), classes, dtype=tf.float32)
    seeds = _SPLIT(seed, num=3)
    if mixup and cutmix:
        use_cutmix = tf.random.stateless_uniform([], seeds[0]) < float(cutmix.get("switch", 0.5))
        return tf.cond(
            use_cutmix,
            lambda: _cutmix(images, targets, _beta(seeds[1], float(cutmix["alpha"])), seeds[2]),
            lambda: _mixup(images, targets, _beta(seeds[1], float(mixup["alpha"]))))
    if cutmix:
        return _cutmix(images, targets, _beta(seeds[1], float(cutmix["alpha"])), seeds[2])
    return _mixup(images, targets, _beta(seeds[1], float(mixup["alpha"])))
