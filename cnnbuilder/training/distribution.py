"""Where a run executes: the devices it trains on and the mixed-precision policy.

On TensorFlow a run trains under `MirroredStrategy` over all visible GPUs of the host
(the default strategy with one). On JAX it trains under `keras.distribution.DataParallel`
over every device of every process (`training.multihost` joins the processes first):
the variables are replicated, each batch is split over the devices. Data parallelism needs
every device to get an equal share of a batch, so `data_shard` tells the input pipeline
which rows of each global batch this process feeds (`cnnbuilder.data.make_pipeline`).
"""

from __future__ import annotations

import contextlib
import functools

import keras

from cnnbuilder.errors import UsageError


def backend() -> str:
    """The Keras backend this process runs ("tensorflow", "jax", ...)."""
    return keras.backend.backend()


def _gpus() -> list:
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


class _NoStrategy:
    """The `strategy()` of the JAX backend: `keras.distribution` places the variables, so
    building and compiling need no scope of their own."""

    def scope(self):
        return contextlib.nullcontext()


def strategy():
    """The scope a model is built, compiled and trained in.

    TensorFlow: `MirroredStrategy` over all visible GPUs when there are several, else the
    default strategy (one per process). JAX: no scope; the `DataParallel` distribution over
    all devices of all processes is set globally here, when there is more than one device
    (again after `keras.backend.clear_session`, which forgets it: the tuner clears the
    session after every trial)."""
    if backend() == "jax":
        import jax

        if len(jax.devices()) > 1 and keras.distribution.distribution() is None:
            # Each process feeds its own rows of every batch (`data_shard`): Keras must not
            # shard the tf.data pipeline again.
            keras.distribution.set_distribution(
                keras.distribution.DataParallel(devices=jax.devices(), auto_shard_dataset=False))
        return _NoStrategy()
    return _tensorflow_strategy()


@functools.lru_cache(maxsize=1)
def _tensorflow_strategy():
    import tensorflow as tf

    return tf.distribute.MirroredStrategy() if len(_gpus()) > 1 else tf.distribute.get_strategy()


@contextlib.contextmanager
def local_only():
    """Within the block, new Keras variables live on this process alone (no distribution).

    For what process 0 does by itself in a multi-process run, such as saving a model:
    Keras' saving creates a throwaway optimizer, and a variable created under the
    distribution is a collective every process must join."""
    if backend() != "jax" or keras.distribution.distribution() is None:
        yield
        return
    current = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(current)


def device_count() -> int:
    """Devices one training step is split over (all processes together)."""
    if backend() == "jax":
        import jax

        return len(jax.devices())
    return max(1, strategy().num_replicas_in_sync)


def process_count() -> int:
    """Processes that train the run together (1 unless `multihost.initialize` joined them)."""
    if backend() == "jax":
        import jax

        return jax.process_count()
    return 1


def process_index() -> int:
    """This process's number in the run; process 0 alone writes the run directory."""
    if backend() == "jax":
        import jax

        return jax.process_index()
    return 0


def is_writer() -> bool:
    """Whether this process writes the run's files (process 0 of a multi-process run)."""
    return process_index() == 0


def data_shard() -> tuple[int, int, int] | None:
    """(this process's index, processes, devices per process) where a batch is split over
    several devices, else None: the pipeline then keeps, of every batch, the rows of this
    process's devices, an equal number per device (`cnnbuilder.data.make_pipeline`)."""
    if backend() != "jax":
        return None  # MirroredStrategy splits a batch itself and accepts unequal shares
    devices = device_count()
    if devices == 1:
        return None
    processes = process_count()
    return (process_index(), processes, devices // processes)


def check_batch_size(batch_size: int) -> None:
    """UsageError when the global batch cannot be split evenly over the devices."""
    devices = device_count() if backend() == "jax" else 1
    if batch_size % devices:
        raise UsageError(
            f"the batch size {batch_size} cannot be split evenly over the {devices} devices "
            f"of this run; pass a --batch-size that is a multiple of {devices}.")


def mixed_policy() -> str:
    """The mixed-precision policy of this machine's devices."""
    if backend() == "jax":
        # bfloat16 needs no loss scaling and is what XLA's GPU and CPU kernels favour.
        return "mixed_bfloat16"
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
