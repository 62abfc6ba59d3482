"""Augmentations of model-input batches: random crop (CIFAR), flip, translate, RandAugment
and random erasing (`cnnbuilder.data.randaugment`), and the batch mixing of mixup and
CutMix (`cnnbuilder.data.mixing`).

Each takes a float32 batch (N, H, W, C) in [0, 1] at model-input size and a stateless
seed of shape (2,) (and its options as keywords), and returns a batch of the same shape;
the pipeline applies them before the normalization step of `preprocess`, so zero padding
is black. An augmentation is written as its name or as a one-key mapping of its options
(``{"mixup": {"alpha": 0.2, "classes": 10}}``: the mixing ones need the class count their
soft targets are one-hot over). Mixing comes last, after the per-image augmentations.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

from cnnbuilder.data.mixing import mix_batch
from cnnbuilder.data.randaugment import randaugment, random_erasing
from cnnbuilder.errors import DataError

__all__ = ["AUGMENTATIONS", "augment_batches", "augmentation_names", "batch_seeds", "epoch_seed"]


def _random_shift(images: tf.Tensor, pad: int, seed: tf.Tensor) -> tf.Tensor:
    """Zero-pad each image by `pad` pixels and crop back to size at a random offset.

    Each image of the batch gets its own offset, drawn statelessly from `seed`.
    """
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
    offsets = tf.random.stateless_uniform(
        [batch, 2], seed=seed, minval=0, maxval=2 * pad + 1, dtype=tf.int32
    )
    rows = offsets[:, :1] + tf.range(height)[tf.newaxis]
    cols = offsets[:, 1:] + tf.range(width)[tf.newaxis]
    shifted = tf.gather(padded, rows, axis=1, batch_dims=1)
    shifted = tf.gather(shifted, cols, axis=2, batch_dims=1)
    return tf.ensure_shape(shifted, images.shape)


def _augment_crop(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """CIFAR augmentation (He et al. 2016): zero-pad 4 pixels, random crop back to size."""
    return _random_shift(images, 4, seed)


def _augment_flip(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Random horizontal flip, independently per image."""
    return tf.image.stateless_random_flip_left_right(images, seed=seed)


def _augment_translate(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Random shifts of up to 2 pixels with zero fill (digits: no flips)."""
    return _random_shift(images, 2, seed)


# See the module docstring for the signature. Pixel counts are model-input pixels.
AUGMENTATIONS: dict[str, Callable[..., tf.Tensor]] = {
    "crop": _augment_crop,
    "flip": _augment_flip,
    "translate": _augment_translate,
    "randaugment": randaugment,
    "mixup": None,   # batch mixing: `mix_batch`, after the others
    "cutmix": None,
    "random_erasing": random_erasing,
}
MIXING = ("mixup", "cutmix")


def _entry(item) -> tuple[str, dict] | None:
    """(name, options) of an augmentation entry (a name or a one-key mapping)."""
    if isinstance(item, str):
        return item, {}
    if isinstance(item, dict) and len(item) == 1:
        (name, options), = item.items()
        if isinstance(name, str) and isinstance(options, (dict, type(None))):
            return name, dict(options or {})
    return None


def augmentation_names(augment) -> list:
    """Normalize `augment` (None, an entry or a list of entries: names, or one-key
    mappings of a name to its options) to a list of entries of known augmentations."""
    if augment is None:
        return []
    entries = [augment] if isinstance(augment, (str, dict)) else augment
    if not isinstance(entries, (list, tuple)) or any(_entry(e) is None for e in entries):
        raise DataError(
            f"augment must be None, a name or a list of names (or {{name: options}}) from "
            f"{', '.join(AUGMENTATIONS)}, got {augment!r}."
        )
    unknown = [_entry(e)[0] for e in entries if _entry(e)[0] not in AUGMENTATIONS]
    if unknown:
        raise DataError(
            f"Unknown augmentation {', '.join(map(repr, unknown))}; choose from "
            f"{', '.join(AUGMENTATIONS)}."
        )
    mixing = [_entry(e) for e in entries if _entry(e)[0] in MIXING]
    if any("classes" not in options for _, options in mixing):
        raise DataError("mixup and cutmix need the class count of their soft targets: "
                        "write {'mixup': {'alpha': 0.2, 'classes': 10}}.")
    return list(entries)


def epoch_seed(seed: int, epoch, stream: int) -> tf.Tensor:
    """The stateless seed (shape (2,)) of random `stream` (0: order, 1: augmentation) in
    epoch `epoch` of a run seeded with `seed`."""
    base = tf.stack([tf.constant(seed, tf.int64), tf.constant(stream, tf.int64)])
    return tf.random.experimental.stateless_fold_in(base, tf.cast(epoch, tf.int64))


def batch_seeds(seed: int, epoch=None) -> tf.data.Dataset:
    """The stateless seed of each batch, in order: in epoch `epoch` (a tensor) the b-th
    batch's is drawn from (seed, epoch, b) alone, so a resumed run replays it; with `epoch`
    None, from a seeded stream that changes every pass."""
    if epoch is None:
        return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    base = epoch_seed(seed, epoch, 1)
    return tf.data.Dataset.range(tf.int64.max).map(
        lambda index: tf.random.experimental.stateless_fold_in(base, index))


def augment_batches(batches: tf.data.Dataset, names: list[str], seed: int,
                    epoch=None) -> tf.data.Dataset:
    """Apply the named augmentations to each (images, labels) batch.

    Each batch gets its own stateless seed: in epoch `epoch` (a tensor) the b-th batch's
    is drawn from (seed, epoch, b) alone, so a resumed run replays it exactly; with
    `epoch` None, from a seeded stream that changes every pass.
    """
    seeds = batch_seeds(seed, epoch)
    entries = [_entry(e) for e in names]
    mixing = {n: o for n, o in entries if n in MIXING}

    def augment(batch, batch_seed):
        images, labels = batch
        # One seed per entry, in the order written (the mixing ones' included), so adding
        # an augmentation leaves the draws of those before it as they were.
        op_seeds = tf.random.experimental.stateless_split(batch_seed, num=len(entries))
        for index, (name, options) in enumerate(entries):
            if name not in MIXING:
                images = AUGMENTATIONS[name](images, op_seeds[index], **options)
        if mixing:
            classes = next(iter(mixing.values()))["classes"]
            images, labels = mix_batch(
                images, labels, op_seeds[[n for n, _ in entries].index(next(iter(mixing)))],
                classes=classes, mixup=mixing.get("mixup"), cutmix=mixing.get("cutmix"))
        return images, labels

    return tf.data.Dataset.zip(batches, seeds).map(
        augment, num_parallel_calls=tf.data.AUTOTUNE
    )
