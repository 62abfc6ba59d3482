"""TensorBoard logs of a training run: ``DIR/logs/`` (``tensorboard --logdir DIR``).

`tensorboard_callbacks` gives `train` two callbacks:

- Keras' own `keras.callbacks.TensorBoard`: per-epoch ``epoch_loss`` and
  ``epoch_accuracy`` under ``logs/train`` and ``logs/validation``, ``epoch_learning_rate``
  (the optimizer's rate at the end of each epoch, what a schedule set it to) and the
  model graph. Scalars are written at the epoch index, and a resumed run starts `fit` at
  its ``initial_epoch``, so its new event file continues the curves where the last
  committed epoch left them.
- `InputImages`: a few images of the first training batch, augmented and normalized as
  the network sees them, under ``logs/train`` (TensorBoard's Images tab).

Both go after the epoch commit (`training.commit.EpochCommit`) in the callback list, so
the logs never hold an epoch the run does not have: a run killed between an epoch's
commit and its log resumes after that epoch, whose point is then missing from the curves
(one gap rather than two values at one step).
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from cnnbuilder.data import make_pipeline

__all__ = ["IMAGES_TAG", "InputImages", "tensorboard_callbacks"]

IMAGES_TAG = "input_images"
# How many images of the first training batch are shown.
_IMAGES_SHOWN = 8


class InputImages(keras.callbacks.Callback):
    """Writes a few model inputs of one training batch as a TensorBoard image summary.

    Args:
        log_dir: the run's ``logs/``; the summary goes to ``log_dir/train``.
        batch: float (N, H, W, C) images as the network receives them (any range: each
            image is rescaled to [0, 1] for display, since normalized inputs are not).
        step: the summary step (the epoch training starts at).
    """

    def __init__(self, log_dir, batch, *, step: int = 0):
        super().__init__()
        self.log_dir = Path(log_dir)
        self.batch = batch
        self.step = step

    def on_train_begin(self, logs=None):
        images = tf.convert_to_tensor(self.batch[:_IMAGES_SHOWN], tf.float32)
        low = tf.reduce_min(images, axis=[1, 2, 3], keepdims=True)
        high = tf.reduce_max(images, axis=[1, 2, 3], keepdims=True)
        shown = tf.math.divide_no_nan(images - low, high - low)
        if shown.shape[-1] not in (1, 3, 4):  # TensorBoard shows grey, RGB, RGBA
            shown = shown[..., :1]
        writer = tf.summary.create_file_writer(str(self.log_dir / "train"))
        with writer.as_default():
            tf.summary.image(IMAGES_TAG, shown, step=self.step, max_outputs=_IMAGES_SHOWN,
                             description="augmented training inputs, each rescaled to [0, 1]")
        writer.close()


def tensorboard_callbacks(log_dir, job, *, initial_epoch: int = 0) -> list:
    """Keras' TensorBoard callback and `InputImages` for `job`'s run, logging to `log_dir`.

    The images come from a pipeline built afresh with the job's settings: iterating the
    job's own training pipeline would move its shuffle and augmentation on by an epoch,
    so turning TensorBoard off or on would change what the model trains on.
    """
    settings = job.settings
    fresh = make_pipeline(job.data.train, training=True, augment=settings.pipeline_augment(),
                          input_shape=settings.input_shape,
                          batch_size=min(job.config.batch_size, _IMAGES_SHOWN),
                          seed=settings.seed, **settings.normalization_args())
    images = next(iter(fresh))[0]  # (images, labels) or, segmentation, (images, masks, weights)
    log_dir = Path(log_dir)
    return [
        keras.callbacks.TensorBoard(log_dir=str(log_dir), update_freq="epoch"),
        InputImages(log_dir, images.numpy(), step=initial_epoch),
    ]
