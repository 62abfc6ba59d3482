"""The training run's own data, as an export checks and calibrates with it.

An export of a run directory reloads the dataset its ``run.json`` names (``digits``,
``tfds:NAME``, ``folder:PATH``: `cnnbuilder.data.load_dataset` with its fixed splits)
and turns its images into model input with the run's preprocessing record, exactly as
the training pipeline did (`make_pipeline`, no augmentation). From it come:

- `check_batch`: test images on which an ONNX file must reproduce Keras;
- `calibration_sample`: a seeded sample of the training split that int8 quantization
  calibrates its activation ranges on;
- `accuracy`: the test-split accuracy of a model given as a batch function (Keras, a
  quantized LiteRT file...).
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

from cnnbuilder.errors import CnnBuilderError, ExportError

__all__ = ["CALIBRATION_SIZE", "CHECK_BATCH", "RunData"]

# Training images int8 quantization calibrates on (TFLite's guidance: ~100-500).
CALIBRATION_SIZE = 200
# Test images an ONNX file is compared with Keras on.
CHECK_BATCH = 32
_BATCH_SIZE = 64


class RunData:
    """The dataset of a run (loaded on first use) in the model's input form.

    Args:
        spec: what `load_dataset` takes, normally ``run.json``'s ``"dataset"``; or a
            loaded `cnnbuilder.data.Dataset`; None when the model has no run.
        preprocessing: the run's `preprocessing_config` record.
        data_dir: TensorFlow Datasets' data directory (``tfds:`` datasets).
        options: the other `load_dataset` arguments the run was trained with (run.json's
            ``"data_options"``: split fractions, ``skip_bad_images``), so the export is
            checked on the run's own test split.
    """

    def __init__(self, spec, preprocessing: dict, *, data_dir=None, options: dict | None = None):
        self.spec = spec
        self.preprocessing = preprocessing
        self.options = {k: v for k, v in (options or {}).items() if k != "data_dir"}
        self.data_dir = data_dir if data_dir is not None else (options or {}).get("data_dir")
        self._data = None

    @property
    def available(self) -> bool:
        """Whether there is a dataset to load (the model came with a run that names one)."""
        return self.spec is not None

    @property
    def name(self) -> str | None:
        """The dataset's name (None without one)."""
        if self.spec is None:
            return None
        return getattr(self.spec, "name", None) or str(self.spec)

    def dataset(self):
        """The loaded `Dataset`.

        Raises:
            ExportError: there is none, or it cannot be loaded.
        """
        if self._data is None:
            from cnnbuilder.data import Dataset, load_dataset

            if self.spec is None:
                raise ExportError("The model has no training run naming its dataset.")
            if isinstance(self.spec, Dataset):
                self._data = self.spec
            else:
                try:
                    self._data = load_dataset(self.spec, data_dir=self.data_dir, **self.options)
                except CnnBuilderError as error:
                    raise ExportError(
                        f"Cannot reload the run's dataset {self.spec!r} to check the export: "
                        f"{error}"
                    ) from None
        return self._data

    def batches(self, split: str) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(float32 model input, int labels) batches of `split`, unaugmented, in order."""
        from cnnbuilder.data import make_pipeline
        from cnnbuilder.data.preprocess import normalization_args

        data = self.dataset()
        examples = getattr(data, split)
        if examples is None:
            raise ExportError(f"The dataset {self.name} has no {split} split to check the export on.")
        pipeline = make_pipeline(examples, input_shape=self.preprocessing["input_shape"],
                                 batch_size=_BATCH_SIZE, training=False,
                                 crop_from=self.preprocessing.get("crop_from"),
                                 **normalization_args(self.preprocessing))
        for images, labels in pipeline:
            yield images.numpy(), labels.numpy()

    def check_batch(self, size: int = CHECK_BATCH) -> np.ndarray:
        """The first `size` test images as model input."""
        taken = []
        for images, _ in self.batches("test"):
            taken.append(images)
            if sum(len(t) for t in taken) >= size:
                break
        return np.concatenate(taken)[:size]

    def calibration_sample(self, size: int = CALIBRATION_SIZE, seed: int = 0) -> tuple[np.ndarray, dict]:
        """A seeded random sample of the training split as model input, and its record."""
        images = np.concatenate([batch for batch, _ in self.batches("train")])
        chosen = np.sort(np.random.default_rng(seed).permutation(len(images))[:size])
        record = {"dataset": self.name, "split": "train", "examples": int(len(chosen)),
                  "of": int(len(images)), "seed": seed, "augmented": False,
                  "selection": "numpy default_rng(seed).permutation(N)[:examples], sorted"}
        return images[chosen], record

    def accuracy(self, predict: Callable[[np.ndarray], np.ndarray]) -> tuple[float, int]:
        """(accuracy, examples) of `predict` (float batch -> (N, K) scores) on the test split."""
        correct = total = 0
        for images, labels in self.batches("test"):
            scores = np.asarray(predict(images))
            correct += int(np.sum(np.argmax(scores, axis=-1) == labels.reshape(-1)))
            total += len(labels)
        if total == 0:
            raise ExportError(f"The test split of {self.name} is empty; nothing to measure accuracy on.")
        return correct / total, total
