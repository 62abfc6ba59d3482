"""Datasets (digits, tfds, folders, arrays), the one preprocessing function and the tf.data
pipeline with augmentation."""

from cnnbuilder.data.datasets import Dataset, load_dataset, make_pipeline, split_size, to_model_input

__all__ = ["Dataset", "load_dataset", "make_pipeline", "split_size", "to_model_input"]
