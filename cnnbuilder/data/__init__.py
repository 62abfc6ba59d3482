"""Datasets (digits, tfds, folders, arrays), the one preprocessing function and the tf.data
pipeline with augmentation.

- `load_dataset` (`datasets`): a spec becomes a `Dataset` of stored uint8 images.
- `preprocess` (`preprocess`): stored images become model input, the same everywhere.
- `make_pipeline` (`pipeline`): a split becomes shuffled, augmented batches.

Segmentation sets (``Dataset.task == "segmentation"``, masks as labels) come through the
same three: `segmentation` (folders with images/ and masks/, ``digits-seg``), `seg_masks`
(class lists, palettes, the mask reader), `tfds_seg`, `seg_arrays`, and `seg_pipeline`
(batches of images, masks and pixel weights; joint augmentation).
"""

from cnnbuilder.data.datasets import load_dataset
from cnnbuilder.data.pipeline import make_pipeline
from cnnbuilder.data.preprocess import preprocess, preprocess_from_config, preprocessing_config
from cnnbuilder.data.splits import Dataset, split_size

__all__ = [
    "Dataset",
    "load_dataset",
    "make_pipeline",
    "preprocess",
    "preprocess_from_config",
    "preprocessing_config",
    "split_size",
]
