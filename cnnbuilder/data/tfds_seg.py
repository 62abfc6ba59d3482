"""TensorFlow Datasets segmentation sets (``tfds:NAME`` whose features hold a
``segmentation_mask``), streamed as (uint8 image, uint8 (H, W) mask) tf.data splits.

A tfds mask stores its classes in the set's own coding, so each supported set is listed in
`SEGMENTATION_SETS` with the value of its first class and its class names:

- ``oxford_iiit_pet`` (Parkhi et al. 2012): the trimaps' 1 (pet), 2 (background) and 3
  (border, "not classified") become labels 0, 1 and 2. Any other value (the real set has
  none; tfds' mock data has) becomes the void label 255, which the pipeline ignores.

Images and masks differ in size from example to example, so the model needs a fixed input
(H, W); `make_pipeline` resizes both (the masks with nearest neighbour). Missing
validation/test splits are fixed slices of the end of train, as for the classification
sets (`cnnbuilder.data.tfds`).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from cnnbuilder.data.splits import Dataset
from cnnbuilder.errors import DataError

__all__ = ["MASK_FEATURE", "SEGMENTATION_SETS", "VOID", "is_segmentation_set",
           "load_tfds_segmentation"]

MASK_FEATURE = "segmentation_mask"
VOID = 255
# set name -> (the stored value of label 0, class names in label order)
SEGMENTATION_SETS = {
    "oxford_iiit_pet": (1, ["pet", "background", "border"]),
}


def is_segmentation_set(info) -> bool:
    """Whether a tfds set's features hold a segmentation mask."""
    return MASK_FEATURE in info.features


def load_tfds_segmentation(builder, name: str, validation_split: float,
                           test_split: float) -> Dataset:
    """A prepared tfds segmentation set (module docstring) as streamed splits.

    Raises:
        DataError: a set whose mask coding is not known, or without an RGB/grey image.
    """
    from cnnbuilder.data.tfds import _tfds_split_plan, split_slices

    info = builder.info
    if info.name not in SEGMENTATION_SETS:
        raise DataError(
            f"tfds:{name} has a {MASK_FEATURE!r} feature, but cnnbuilder does not know how its "
            f"masks code their classes; the segmentation sets it reads are "
            f"{', '.join(SEGMENTATION_SETS)}. Export the set as a folder (images/, masks/, "
            "classes.txt) and use folder:PATH instead.")
    first, names = SEGMENTATION_SETS[info.name]
    image = info.features["image"] if "image" in info.features else None
    shape = tuple(getattr(image, "shape", ()))
    if len(shape) != 3 or getattr(image, "np_dtype", None) != np.uint8:
        raise DataError(f"tfds:{name} has no uint8 (H, W, C) 'image' feature beside its masks.")
    plan = _tfds_split_plan(info)
    splits = split_slices(info, plan, validation_split, test_split)
    count = len(names)

    def pair(example):
        """(image, uint8 label map) of one tfds example."""
        values = tf.cast(example[MASK_FEATURE][..., 0], tf.int32) - first
        labels = tf.where((values >= 0) & (values < count), values, VOID)
        return example["image"], tf.cast(labels, tf.uint8)

    made = {key: builder.as_dataset(split=split, shuffle_files=False).map(
        pair, num_parallel_calls=tf.data.AUTOTUNE) for key, split in splits.items()}
    return Dataset(name=f"tfds:{name}", class_names=list(names), image_shape=shape,
                   task="segmentation", ignore_label=VOID, **made)
