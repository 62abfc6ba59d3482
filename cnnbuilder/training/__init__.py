"""The training engine used by `train`, every tuning trial and fine-tuning alike.

`prepare` resolves a recipe (or Keras model), its data and training settings once
(`settings.RunSettings.resolve`) into a `Job`; `Job.build`, `Job.compile`, `Job.fit` and
`Job.evaluate` are the steps every caller takes; `train` adds the resumable run directory
(`cnnbuilder.runs`, `commit`, `run`); `multihost` joins the processes of a run over
several hosts.

The names below load on first use, so `cnnbuilder.training.multihost` (read by the
command line before it picks the Keras backend) imports no Keras.
"""

import importlib

_EXPORTS = {
    "Job": "engine", "TrainResult": "run", "Run": "run", "prepare": "engine", "train": "engine",
    "compile_model": "optimizers", "learning_rate_schedule": "optimizers",
    "make_optimizer": "optimizers",
    "RunSettings": "settings", "default_augment": "settings", "steps_per_epoch": "settings",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
