"""Where a run executes: the device strategy and the mixed-precision policy."""

from __future__ import annotations

import contextlib
import functools

import keras


def _gpus() -> list:
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


@functools.lru_cache(maxsize=1)
def strategy():
    """`MirroredStrategy` over all visible GPUs when there are several, else the default;
    one per process, so a model is built, compiled and trained under the same one."""
    import tensorflow as tf

    return tf.distribute.MirroredStrategy() if len(_gpus()) > 1 else tf.distribute.get_strategy()


def mixed_policy() -> str:
    """The mixed-precision policy of this machine's devices."""
    # float16 needs a GPU to pay off; bfloat16 is the mixed type CPUs support.
    return "mixed_float16" if _gpus() else "mixed_bfloat16"


@contextlib.contextmanager
def precision(mixed: bool):
    """Within the block, layers are built with the mixed policy when `mixed` is set; the
    float32 policy is restored afterwards, whatever happens."""
    if not mixed:
        yield
        return
    keras.mixed_precision.set_global_policy(mixed_policy())
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")
